"""The demo: real data that ships with scikit-learn, through the whole pipeline.

No pretrained weights can be downloaded here, so the demo makes its own, and says so: a
short from-scratch training of the backbone on digits 0-4 (versioned as model
``digits-backbone``), then the real two-phase job fine-tunes those weights on digits 5-9
and goes through evaluate -> gate -> version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from services.config import Settings
from services.intake.records import create_job
from services.intake.request import TrainingRequest
from services.jobs.driver import run_job
from services.jobs.outcome import JobOutcome
from training.hyperparams import Hyperparameters

# Chosen by measurement on 2 cores (docs/guide/demo.md): ResNet18 learns 8x8 digits
# scaled to 32 px well from scratch; MobileNetV2 at 32 px does not with this augmentation.
COMMON = {
    "backbone": "resnet18",
    "image_size": 32,
    "batch_size": 32,
    "hflip": False,
    # centred 8x8 digits: the default ±20 % shift and zoom cut strokes off at 32 px
    "rotation": 10,
    "shift": 0.1,
    "zoom": 0.1,
}
BACKBONE_RECIPE = {
    **COMMON,
    "phase1_epochs": 0,
    "phase2_epochs": 7,
    "phase2_lr": 1e-3,
    "unfreeze_last": 1000,
}
TRANSFER_RECIPE = {
    **COMMON,
    "phase1_epochs": 5,
    "phase1_lr": 1e-3,
    "phase2_epochs": 10,
    "phase2_lr": 1e-4,
    "unfreeze_last": 20,
}


def write_digits(root: Path, classes: range) -> Path:
    """scikit-learn's 1,797 scanned digits (8x8, 17 grey levels) as an ImageFolder of PNGs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = root / f"digits-{classes.start}-{classes.stop - 1}"
    for c in classes:
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        if label in classes:
            path = folder / str(label) / f"{i:04d}.png"
            if not path.exists():
                Image.fromarray((img * (255 / 16)).astype(np.uint8)).save(path)
    return folder


def run_demo(
    settings: Settings,
    workers: int | None = None,
    say: Callable[[str], None] = lambda m: print(m, flush=True),
) -> tuple[JobOutcome, JobOutcome]:
    t0 = time.perf_counter()
    root = settings.resolved_home / "demo"
    source, target = write_digits(root, range(0, 5)), write_digits(root, range(5, 10))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    say(f"digits from scikit-learn written to {root}")

    say(
        "\n== 1/2: no pretrained weights can be downloaded here, so the demo makes its own:"
        "\n   a from-scratch ResNet18 on digits 0-4 (model 'digits-backbone')"
    )
    first, _ = create_job(
        settings,
        TrainingRequest(
            batch_id=f"demo-backbone-{stamp}",
            dataset_uri=str(source),
            model_name="digits-backbone",
            hyperparameters=Hyperparameters(**BACKBONE_RECIPE),
        ),
        num_workers=workers,
    )
    backbone = run_job(first.id, settings, say)
    _report(backbone, say)
    if backbone.status != "success":
        return backbone, backbone

    say("\n== 2/2: the two-phase job: those weights fine-tuned on digits 5-9 (model 'digits')")
    second, _ = create_job(
        settings,
        TrainingRequest(
            batch_id=f"demo-digits-{stamp}",
            dataset_uri=str(target),
            model_name="digits",
            hyperparameters=Hyperparameters(
                **TRANSFER_RECIPE, weights=backbone.artifacts["model.pt"]
            ),
        ),
        num_workers=workers,
    )
    outcome = run_job(second.id, settings, say)
    _report(outcome, say)
    say(
        f"\ndemo finished in {time.perf_counter() - t0:.0f} s; database {settings.db_url}, "
        f"store {settings.store}"
    )
    return backbone, outcome


def _report(o: JobOutcome, say: Callable[[str], None]) -> None:
    for line in o.lines():
        say(line)
