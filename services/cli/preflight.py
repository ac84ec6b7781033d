"""``colecionador preflight``: every finding of the data health report, which of them would
fail a job with these settings, then overfit one batch and the LR range test; exits 1 only
when a job would fail (or the recipe cannot learn one batch), 2 on bad arguments."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.cli.args import hyperparameters
from services.config import Settings
from services.store.artifacts import LR_RANGE_PNG, PREFLIGHT_FILE
from training.hyperparams import Hyperparameters

if TYPE_CHECKING:
    import torch

    from training.data import DecodedDataset, Split


@dataclass(frozen=True)
class _Inspected:
    """What the checks run on: the settings, the data decoded and split, the weights."""

    hp: Hyperparameters
    settings: Settings
    decoded: DecodedDataset
    split: Split | None
    report: dict[str, Any]
    state: dict[str, torch.Tensor] | None


def _preflight_folder(settings: Settings) -> Path:
    """Where a preflight writes its report and pictures: a new folder under the home."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = settings.resolved_home / "reports" / f"preflight-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = folder.with_name(f"preflight-{stamp}-{n}")
    return folder


def _inspect(args: argparse.Namespace, parser: argparse.ArgumentParser) -> _Inspected:
    """The hyperparameters, plugins, data and weights, each checked; exit 2 naming the bad
    one before anything is written."""
    from services.errors import StepFailed, one_line
    from services.intake.trust import check_plugins
    from services.jobs.steps import inspect_dataset, load_weights
    from services.store.fetch import fetch_dataset

    hp = hyperparameters(args, parser)
    settings = Settings()
    try:
        check_plugins(hp, settings)
    except ValueError as e:
        parser.error(str(e))
    try:
        folder = fetch_dataset(args.dataset, settings)
        decoded, split, report = inspect_dataset(folder, hp)
    except (FileNotFoundError, ValueError) as e:
        parser.error(one_line(e))
    try:
        state = load_weights(hp, len(decoded.classes), settings)
    except StepFailed as e:
        parser.error(str(e))
    return _Inspected(hp, settings, decoded, split, report, state)


def _print_health(got: _Inspected) -> list[str]:
    """The report's figures and findings; returns what would fail a job."""
    from training.health import would_fail

    report, hp = got.report, got.hp
    sizes = got.split.sizes() if got.split is not None else "impossible (a class is too small)"
    print(
        f"{report['images']} images, {report['classes']} classes, imbalance "
        f"{report['imbalance_ratio']:.1f}, split {sizes}"
    )
    for f in report["findings"] or [{"message": "no findings"}]:
        print(f"health: {f['message']}")
    for c in report["label_conflicts"]:
        print(f"label conflict: {c['a']} ({c['a_class']}) ~ {c['b']} ({c['b_class']}), {c['how']}")
    blockers = [b.reason for b in would_fail(got.decoded, report, hp)]
    for m in blockers:
        print(f"would fail a job: {m}")
    return blockers


def _learns(got: _Inspected, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Overfit one batch and the LR range test (its curve written), or nothing without a
    train split."""
    from training.loop import TrainData
    from training.preflight import preflight

    if got.split is None:
        print(
            "preflight: overfit one batch and the LR range test skipped: no train split "
            f"while a class has fewer than min_per_class ({got.hp.min_per_class}) images"
        )
        return {}
    d, split = got.decoded, got.split
    result: dict[str, Any] = preflight(
        got.hp, TrainData(d.images, d.labels, split.train, split.val, d.classes), got.state
    )
    png = Path(args.out) if args.out else out_dir / LR_RANGE_PNG
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(result.pop("png"))
    print(f"preflight: {result['overfit']['message']}")
    print(
        f"LR range test: suggested phase1_lr {result['lr_range']['suggested_lr']:.2g} "
        f"(curve: {png})"
    )
    return result


def cmd_preflight(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    got = _inspect(args, parser)
    blockers = _print_health(got)
    out_dir = _preflight_folder(got.settings)
    out_dir.mkdir(parents=True)
    result = _learns(got, args, out_dir)
    whole = {"health": got.report, "would_fail": blockers, **result}
    (out_dir / PREFLIGHT_FILE).write_text(json.dumps(whole, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(whole, indent=2))
    learns = not result or result["overfit"]["passed"]
    verdict = (
        "a job with these settings would fail"
        if blockers
        else "a job with these settings would start"
        if learns
        else "the recipe cannot fit one batch"
    )
    print(f"{verdict} (report: {out_dir})")
    return 0 if not blockers and learns else 1


def add_parsers(sub: Any) -> None:
    pre = sub.add_parser("preflight", help="data health, overfit one batch, LR range test")
    pre.add_argument("--dataset", required=True, help="folder, file:// or s3:// URI")
    pre.add_argument("--config")
    pre.add_argument("--set", action="append", metavar="KEY=VALUE")
    pre.add_argument(
        "--out",
        help="where to write the LR curve (default: the report's "
        "folder, <home>/reports/preflight-<time>/lr_range.png)",
    )
    pre.add_argument("--json", help="also write the whole report here")
    pre.set_defaults(func=cmd_preflight)
