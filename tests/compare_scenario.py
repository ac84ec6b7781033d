"""Three recorded jobs to compare, written through the repository and the store as the
services write them (no training): A trained and approved, B tuned and rejected, C
failed at the data step."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from services.config import Settings
from services.db.session import prepare_database, session_factory
from services.store.artifacts import DATA_PROFILE_FILE, report_key, version_prefix
from services.store.storage import open_store
from tests import factories

MODEL = "cmp"
BASE = {"phase1_lr": 0.001, "batch_size": 32, "hflip": True, "seed": 0}
TEST_SPLIT = [
    {"path": f"{c}/{i}.png", "class": c, "sha1": f"{c}{i}" * 5} for c in "ab" for i in (1, 2)
]


def epochs(n: int, start_acc: float) -> list[dict[str, Any]]:
    return [
        {
            "epoch": i,
            "phase": 1 if i <= n // 2 else 2,
            "loss": 1.0 / i,
            "accuracy": start_acc + 0.05 * i,
            "val_loss": 1.2 / i,
            "val_accuracy": start_acc + 0.04 * i,
            "lr": 1e-3,
            "epoch_time_s": 1.5,
        }
        for i in range(1, n + 1)
    ]


def rule(metric: str, value: float, threshold: float, op: str = ">") -> dict[str, Any]:
    passed = value > threshold if op == ">" else value < threshold
    return {"metric": metric, "value": value, "threshold": threshold, "passed": passed, "op": op}


def per_class(figures: dict[str, tuple[float, float, float, int]]) -> dict[str, Any]:
    return {
        c: {"precision": p, "recall": r, "f1": f, "support": n}
        for c, (p, r, f, n) in figures.items()
    }


def trial(lr: float, rank: int, status: str, folds: list[float]) -> dict[str, Any]:
    mean = sum(folds) / len(folds)
    std = (sum((x - mean) ** 2 for x in folds) / len(folds)) ** 0.5
    last = {
        "epoch": 2,
        "val_loss": mean,
        "folds": [{"fold": i, "val_loss": x} for i, x in enumerate(folds)],
    }
    return dict(
        config={"phase1_lr": lr},
        status=status,
        stopped_at=2 if status == "completed" else 1,
        max_epochs=2,
        mean_val_loss=mean,
        std_val_loss=std,
        mean_val_accuracy=1 - mean / 2,
        std_val_accuracy=std / 2,
        rank=rank,
        epochs=[{"epoch": 1, "val_loss": mean + 0.1, "folds": []}, last],
    )


def _put(store: Any, key: str, doc: dict[str, Any]) -> None:
    store.put_bytes(key, json.dumps(doc).encode())


def build(settings: Settings) -> SimpleNamespace:
    """The three jobs in ``settings``' database and store; their ids as a, b, c."""
    prepare_database(settings)
    store = open_store(settings)
    with session_factory(settings.db_url)() as s:
        a = factories.add_finished_job(
            s,
            MODEL,
            "cmp-a",
            hyperparameters=BASE,
            epochs=epochs(4, 0.5),
            dataset_uri="/data/cmp",
            total_images=36,
            accuracy=0.95,
            training_time_s=12.5,
        )
        va = factories.add_version_of(
            s,
            a,
            "approved",
            {"accuracy": 0.95, "precision": 0.94, "recall": 0.93, "f1": 0.935, "roc_auc": 0.99},
            [
                rule("accuracy", 0.95, 0.9),
                rule("precision", 0.94, 0.88),
                rule("recall", 0.93, 0.88),
            ],
        )
        b = factories.add_finished_job(
            s,
            MODEL,
            "cmp-b",
            mode="tune",
            hyperparameters={**BASE, "phase1_lr": 0.01},
            epochs=epochs(3, 0.4),
            dataset_uri="/data/cmp",
            total_images=36,
            accuracy=0.85,
            training_time_s=30.0,
        )
        vb = factories.add_version_of(
            s,
            b,
            "rejected",
            {"accuracy": 0.85, "precision": 0.9, "recall": 0.8, "f1": 0.84, "roc_auc": 0.97},
            [
                rule("accuracy", 0.85, 0.9),
                rule("precision", 0.9, 0.88),
                rule("recall", 0.8, 0.88),
                rule("ece", 0.08, 0.1, "<"),
            ],
        )
        factories.add_tuning_run(
            s,
            b.id,
            [
                trial(0.01, 1, "completed", [0.3, 0.35, 0.4]),
                trial(0.001, 2, "completed", [0.5, 0.45, 0.55]),
                trial(0.1, 3, "stopped_early", [0.9, 1.1, 1.0]),
            ],
        )
        c = factories.add_finished_job(
            s,
            MODEL,
            "cmp-c",
            status="failed",
            hyperparameters={"phase1_lr": 0.001, "batch_size": 16, "hflip": True},
            dataset_uri="/data/other",
            error="data: no <images> under /data/other",
        )
        ids = SimpleNamespace(a=a.id, b=b.id, c=c.id, va=va.version, vb=vb.version)
    pa, pb = version_prefix(MODEL, ids.va), version_prefix(MODEL, ids.vb)
    _put(
        store,
        pa + "metrics.json",
        {
            "test": {
                "accuracy": 0.95,
                "per_class": per_class({"a": (0.9, 1.0, 0.947, 2), "b": (1.0, 0.9, 0.947, 2)}),
            },
            "calibration": {"ece_after": 0.03},
        },
    )
    _put(
        store,
        pb + "metrics.json",
        {
            "test": {
                "accuracy": 0.85,
                "per_class": per_class({"a": (0.8, 0.8, 0.8, 2), "d": (0.5, 1.0, 0.667, 1)}),
            },
            "calibration": {"ece_after": 0.08},
        },
    )
    profile = {"images": 36, "per_class": {"a": 18, "b": 18}, "test": TEST_SPLIT}
    _put(store, pa + DATA_PROFILE_FILE, profile)
    _put(store, pb + DATA_PROFILE_FILE, {**profile, "test": TEST_SPLIT[::-1]})
    _put(store, report_key(ids.c, "health.json"), {"images": 3, "per_class": {"a": 3}})
    return ids
