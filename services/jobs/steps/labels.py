"""check_labels: the label check (cleanlab) over out-of-fold or cross-validated predictions."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from services.errors import one_line
from services.intake.spec import JobSpec
from services.jobs.steps.context import StepContext
from services.jobs.steps.data import PreparedData
from services.jobs.steps.report import put_report
from services.jobs.steps.train import TrainedModel
from services.store.artifacts import (
    LABEL_ISSUES_FILE,
    LABEL_ISSUES_PNG,
)
from training.hyperparams import Hyperparameters
from training.label_issues import OutOfFold
from training.model import (
    build_model,
    load_backbone_weights,
)


# ----------------------------------------------------------------- label issues
@dataclass(frozen=True)
class LabelCheck:
    report: dict[str, Any]  # label_issues.json
    png: bytes | None  # the top issues as a grid (None: no issues, or the check failed)


def check_labels(
    spec: JobSpec,
    ctx: StepContext,
    trained: TrainedModel,
    data: PreparedData,
    backbone_state: dict[str, torch.Tensor] | None,
    oof: OutOfFold | None = None,
) -> LabelCheck | None:
    """With ``label_check``: cleanlab's label issues among the train + val images, from
    out-of-fold probabilities (training/label_issues.py). A tune job hands in ``oof``, its
    best config's k fold models' (services/jobs/tune_step.py): each image scored by the fold
    model that never trained on it, at no extra cost. Otherwise (a train job, or a tune job
    without them: resumed after its search, the winner stopped early, their images not
    this job's train + val; the report's ``source`` says why) a linear head is
    cross-validated on frozen-backbone features: the backbone the job started from when
    it named weights (it never saw these labels), else the trained model's. Written to
    reports/job-<id>/ at once; a check that cannot run says why in its report and never
    fails the job (the model is judged by its own gate)."""
    hp, say = spec.hyperparameters, ctx.say
    if not hp.label_check:
        return None
    from training.label_issues import find_issues, label_issues_png

    d = data.decoded
    pool = np.union1d(data.split.train, data.split.val)
    given, why_not = given_out_of_fold(oof, pool, len(d.classes))
    t0 = time.perf_counter()
    try:
        images = data.images_of(pool)  # a lazy view over the shards when streamed
        if given is not None:
            assert given.probs is not None  # given_out_of_fold checked it
            probs, source = given.probs, given.source
        else:
            probs, source = _linear_head_probs(trained, data, hp, backbone_state, images, pool)
            if why_not:
                source += f" (not the search's fold models: {why_not})"
        report = find_issues(
            d.labels[pool], probs, [d.paths[i] for i in pool], d.classes, source=source
        )
        report["seconds"] = round(time.perf_counter() - t0, 2)
        png = label_issues_png(report, images)
    except Exception as e:  # noqa: BLE001 - a diagnostic: said, never fatal
        report, png = {"error": one_line(e), "issues": []}, None
        say(f"label check failed: {one_line(e)}")
    else:
        by = "the search's fold models" if given is not None else "a linear head"
        say(
            f"label check: {report['issues_found']} likely label issue(s) among "
            f"{report['images_checked']} train + val images ({by}, {report['seconds']} s)"
        )
    put_report(ctx.store, ctx.job_id, LABEL_ISSUES_FILE, report)
    if png is not None:
        put_report(ctx.store, ctx.job_id, LABEL_ISSUES_PNG, png)
    return LabelCheck(report, png)


def _linear_head_probs(
    trained: TrainedModel,
    data: PreparedData,
    hp: Hyperparameters,
    backbone_state: dict[str, torch.Tensor] | None,
    images: Any,
    pool: np.ndarray,
) -> tuple[np.ndarray, str]:
    """Out-of-fold probabilities of a linear head cross-validated on frozen-backbone
    features (the starting weights when named: they never saw these labels), and what
    they are, for the report's ``source``."""
    from training.label_issues import backbone_features, out_of_fold_probs

    if backbone_state is not None:
        model = build_model(hp.backbone, len(data.decoded.classes), hp.dropout)
        load_backbone_weights(model, backbone_state)
        of = f"the starting weights ({hp.weights})"
    else:
        model = trained.module()
        of = "the trained model (no starting weights named)"
    features = backbone_features(model, images)
    probs = out_of_fold_probs(features, data.decoded.labels[pool], seed=hp.seed)
    source = (
        "out-of-fold probabilities of a LogisticRegression cross-validated on "
        f"frozen-backbone features of {of}"
    )
    return probs, source


def given_out_of_fold(
    oof: OutOfFold | None, pool: np.ndarray, n_classes: int
) -> tuple[OutOfFold | None, str | None]:
    """``oof`` when it scores exactly the job's train + val images (``pool``), else None
    and why not (None: no ``oof`` was handed in, a train job)."""
    if oof is None:
        return None, None
    if oof.missing or oof.index is None or oof.probs is None:
        return None, oof.missing or "none were made"
    if not np.array_equal(np.asarray(oof.index), pool):
        return None, (
            f"they score {len(oof.index)} images, not this job's {len(pool)} train + val images"
        )
    if np.shape(oof.probs) != (len(pool), n_classes):
        return None, f"their shape {np.shape(oof.probs)} is not ({len(pool)}, {n_classes})"
    return oof, None
