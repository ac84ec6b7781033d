"""Production's hard cases: which answered images are kept (the threshold, the sample),
the pool's bounds and retention (services/registry/hard_case_rules.py), and the keeper
that writes them off the request path (services/registry/hard_cases.py): bounded, never
blocking, a store that is away losing the sample, counted, never the answer."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from services.config import Settings
from services.deploy.options import UpOptions
from services.registry.hard_case_rules import (
    HardCases,
    Sample,
    keep_reason,
    sample_name,
    sample_time,
    samples_of,
    to_prune,
)
from services.registry.hard_cases import HardCaseKeeper, image_file
from services.registry.serving import PredictArgs
from services.store.storage import LocalStore, StoreError

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def png(size: int = 4) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def test_off_unless_a_threshold_or_a_share_is_set():
    assert not HardCases().enabled and HardCases(below=0.5).enabled
    assert HardCases(sample=0.01).enabled
    for bad in ({"below": 0}, {"below": 1.5}, {"sample": -0.1}, {"max_count": 0}, {"x": 1}):
        with pytest.raises(ValidationError):
            HardCases(**bad)


def test_under_the_threshold_is_kept_else_the_sample_decides():
    rules = HardCases(below=0.6, sample=0.1)
    assert keep_reason(0.59, rules, draw=0.99) == "low_confidence"
    assert keep_reason(0.6, rules, draw=0.99) is None  # not under: at
    assert keep_reason(0.95, rules, draw=0.05) == "sampled"
    assert keep_reason(0.95, rules, draw=0.1) is None
    assert keep_reason(0.01, HardCases(sample=0.5), draw=0.7) is None  # no threshold set


@given(st.floats(0, 1), st.floats(0, 0.999999))
def test_the_sampled_share_is_the_draws_below_it(share, draw):
    rules = HardCases(sample=share)
    assert (keep_reason(0.99, rules, draw) == "sampled") == (draw < share)


def test_a_sample_folder_names_its_time_and_others_are_not_the_pools():
    name = sample_name(NOW, "abcd1234")
    assert name == "20261202T060000000000Z-abcd1234" and sample_time(name) == NOW
    objects = [
        (f"{name}/image.png", 100),
        (f"{name}/prediction.json", 20),
        ("20261201T000000000000Z-ffff0000/image.jpg", 7),
        ("notes.txt", 5),  # beside the samples: never pruned
        ("other/image.png", 5),
    ]
    samples = samples_of(objects)
    assert [(s.name[:8], s.size) for s in samples] == [("20261201", 7), ("20261202", 120)]


def samples(n: int, size: int = 10, start: datetime = NOW) -> list[Sample]:
    return [
        Sample(
            sample_name(start - timedelta(hours=n - i), f"{i:08x}"),
            start - timedelta(hours=n - i),
            size,
        )
        for i in range(n)
    ]


def test_retention_first_then_the_oldest_down_to_the_low_water_mark():
    pool = samples(20)  # one an hour, the oldest 20 h ago
    rules = HardCases(below=0.5, retention_days=0.5, max_count=100)
    gone = to_prune(pool, rules, NOW, fill=1.0)
    assert gone == pool[:8]  # older than 12 h
    rules = HardCases(below=0.5, max_count=10)
    gone = to_prune(pool, rules, NOW)  # to 9 (0.9 of 10), the oldest first
    assert gone == pool[:11]
    assert to_prune(pool[:9], rules, NOW) == []
    # room for one more: 10 of 10 leave 9
    assert to_prune(pool[:10], HardCases(below=0.5, max_count=10), NOW, 1.0, 5) == pool[:1]


def test_the_size_bound_counts_the_bytes_and_the_incoming_sample():
    pool = samples(10, size=2**20)  # 10 MB
    rules = HardCases(below=0.5, max_mb=8)
    gone = to_prune(pool, rules, NOW, fill=1.0)
    assert gone == pool[:2]
    gone = to_prune(pool, rules, NOW, fill=1.0, incoming=3 * 2**20)
    assert gone == pool[:5]  # 5 MB left, 3 MB coming: 8


@given(st.integers(0, 40), st.integers(1, 30), st.integers(1, 400), st.floats(0.5, 1.0))
def test_a_prune_always_leaves_the_pool_within_its_bounds(n, max_count, max_kb, fill):
    pool = samples(n, size=1000)
    rules = HardCases(below=0.5, max_count=max_count, max_mb=max_kb / 1024)
    gone = to_prune(pool, rules, NOW, fill)
    left = [s for s in pool if s not in gone]
    assert len(left) <= max_count and sum(s.size for s in left) <= rules.max_bytes
    assert gone == pool[: len(gone)]  # the oldest go, in order


def test_an_image_keeps_its_bytes_or_becomes_a_png():
    raw = png()
    assert image_file(raw) == ("image.png", raw)
    ppm = io.BytesIO()
    Image.new("RGB", (3, 3)).save(ppm, format="PPM")
    name, data = image_file(ppm.getvalue())
    assert name == "image.png" and data[:4] == b"\x89PNG"


def answer(k: int = 2) -> list[dict]:
    return [{"label": "a", "probability": 0.4}, {"label": "b", "probability": 0.35}][:k]


def keeper(tmp_path, rules: HardCases, store=None, draws=None) -> HardCaseKeeper:
    settings = Settings(store=str(tmp_path / "store"))
    pool = store if store is not None else LocalStore(tmp_path / "store")
    it = iter(draws or [])
    return HardCaseKeeper(
        settings, "digits", rules, open_pool=lambda: pool, draw=lambda: next(it, 0.99)
    )


def test_the_keeper_writes_the_image_and_its_prediction_and_keeps_the_bound(tmp_path):
    k = keeper(tmp_path, HardCases(below=0.5, max_count=3))
    raw = png()
    for _ in range(5):
        k.consider([raw, raw], [0.4, 0.9], [answer(), answer()], 3, "production")
    assert k.flush(30)
    store = LocalStore(tmp_path / "store")
    keys = store.list("hard_cases/digits")
    images = [key for key in keys if key.endswith("image.png")]
    assert len(images) <= 3 and len(keys) == 2 * len(images)
    assert k.counts["kept"] == 5 and k.counts["pruned:bounds"] >= 2
    record = json.loads(store.get_bytes(images[-1].replace("image.png", "prediction.json")))
    assert record["confidence"] == 0.4 and record["reason"] == "low_confidence"
    assert (record["model_name"], record["version"], record["alias"]) == ("digits", 3, "production")
    assert record["predictions"] == answer() and record["image_bytes"] == len(raw)
    assert datetime.fromisoformat(record["time"]).tzinfo is not None
    assert store.get_bytes(images[-1]) == raw
    k.close()


class AwayStore(LocalStore):
    def put_bytes(self, key: str, data: bytes) -> str:
        raise StoreError("upload failed: the store is away")


def test_a_store_that_is_away_loses_the_samples_counted(tmp_path):
    k = keeper(tmp_path, HardCases(sample=1.0), store=AwayStore(tmp_path / "s"), draws=[0.0] * 3)
    k.consider([png()] * 3, [0.99] * 3, [answer()] * 3, 1, None)
    assert k.flush(30)
    assert k.counts == {"dropped:store": 3}
    assert k.status()["pending"] == 0
    k.close()


class SlowStore(LocalStore):
    def __init__(self, root):
        super().__init__(root)
        self.gate = threading.Event()

    def put_bytes(self, key: str, data: bytes) -> str:
        self.gate.wait(30)
        return super().put_bytes(key, data)


def test_a_full_queue_drops_without_waiting(tmp_path):
    slow = SlowStore(tmp_path / "s")
    k = keeper(tmp_path, HardCases(below=1.0, queue=2), store=slow)
    k.consider([png()] * 10, [0.5] * 10, [answer()] * 10, 1, None)  # returns at once
    assert 7 <= k.counts["dropped:queue_full"] <= 8  # 2 queued, one maybe taken
    slow.gate.set()
    assert k.flush(30) and k.counts["kept"] + k.counts["dropped:queue_full"] == 10
    k.close()


def test_the_options_carry_the_rules_to_the_app_and_its_recipe():
    up = UpOptions(hard_cases_below=0.6, hard_cases_max=50)
    rules = up.hard_cases()
    assert rules == HardCases(below=0.6, max_count=50)
    assert up.predict("digits")["hard_cases"] == rules.model_dump()
    assert UpOptions().hard_cases() is None and UpOptions().predict("d")["hard_cases"] is None
    args = PredictArgs.model_validate({"model_name": "d", "hard_cases": {"sample": 0.01}})
    assert args.hard_cases == HardCases(sample=0.01)
    with pytest.raises(ValidationError, match="below"):
        PredictArgs.model_validate({"model_name": "d", "hard_cases": {"below": 2}})


def test_serve_takes_the_flags_and_a_bad_one_exits_2_naming_it(capsys):
    from services.cli import build_parser
    from services.cli.serve_args import hard_cases_of

    parser = build_parser()
    args = parser.parse_args(["serve", "--hard-cases-below", "0.5", "--hard-cases-days", "7"])
    assert hard_cases_of(args, parser) == HardCases(below=0.5, retention_days=7)
    assert hard_cases_of(parser.parse_args(["serve"]), parser) is None
    with pytest.raises(SystemExit) as exit_:
        hard_cases_of(parser.parse_args(["serve", "--hard-cases-sample", "2"]), parser)
    assert exit_.value.code == 2 and "--hard-cases-sample" in capsys.readouterr().err
