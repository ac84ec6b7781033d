"""Label issues: the images most likely filed under the wrong class, worth relabelling first.

Confident learning (Northcutt et al., JAIR 2021, via cleanlab's
``cleanlab.filter.find_label_issues``) needs out-of-fold predicted probabilities: each
image's probabilities from a model that did not train on it. The cheap way to get them
for a train job (``label_check=true``): embed every train + val image once with a frozen
backbone (its last Linear replaced by the identity), then cross-validate a scikit-learn
LogisticRegression on those features (``cross_val_predict``, stratified k folds). An
image whose given label the out-of-fold model finds unlikely, while it is confident of
another, is an issue; issues are ranked by self-confidence (the probability of the given
label, lowest first). A tune job has better ones for free: its best config's k fold models
(tuning/cv.py), carried to the check as an ``OutOfFold``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from training.evaluate import predict_logits
from training.model import head_prefix

if TYPE_CHECKING:
    from training.shards import ShardImages

MAX_LISTED = 50  # label_issues.json lists at most this many (ranked)
SHOWN = 30  # the picture shows the first of them


@dataclass
class OutOfFold:
    """Out-of-fold probabilities made before the label check (a tune job's search: its
    best config's k fold models), or why a tune job has none (``missing``; the check then
    falls back to the linear head and says why). ``index``: the job's train + val image
    indices, ascending; ``probs``: (len(index), classes); ``source``: where they came from,
    as label_issues.json says it."""

    source: str
    index: np.ndarray | None = None
    probs: np.ndarray | None = None
    missing: str | None = None


def feature_extractor(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose last Linear (the head) is the identity: it returns the
    features the head would have seen."""
    model = copy.deepcopy(getattr(model, "module", model)).eval()
    name = head_prefix(model)[:-1]  # "classifier.1." -> "classifier.1"
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return model


def backbone_features(
    model: nn.Module,
    images: np.ndarray | ShardImages,
    batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """(N, D) float32 features of uint8 (N, 3, S, S) images under the frozen backbone."""
    return predict_logits(feature_extractor(model), images, batch_size, device)


def out_of_fold_probs(
    features: np.ndarray, labels: np.ndarray, k: int = 5, seed: int = 0
) -> np.ndarray:
    """Each image's class probabilities from a linear head (standardised features,
    LogisticRegression) trained on the other folds: stratified k-fold
    ``cross_val_predict``; k is lowered to the smallest class's count (at least 2)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    k = min(k, smallest)
    if k < 2:
        raise ValueError("label_check needs at least 2 train + val images of every class")
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=1.0))
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    probs: np.ndarray = cross_val_predict(head, features, labels, cv=folds, method="predict_proba")
    return probs


def find_issues(
    labels: np.ndarray,
    probs: np.ndarray,
    paths: list[str],
    classes: list[str],
    *,
    source: str,
    limit: int = MAX_LISTED,
) -> dict[str, Any]:
    """label_issues.json: cleanlab's confident-learning issues, ranked (lowest
    self-confidence first), each with its path, given label, likely label and the
    out-of-fold probabilities of both; ``source`` says where the probabilities came from."""
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    likely = probs.argmax(axis=1)
    issues = [
        {
            "rank": r + 1,
            "index": int(i),
            "path": paths[i],
            "given_label": classes[labels[i]],
            "likely_label": classes[likely[i]],
            "given_label_prob": float(probs[i, labels[i]]),
            "confidence": float(probs[i, likely[i]]),
        }
        for r, i in enumerate(ranked[:limit])
    ]
    return {
        "method": "confident learning (cleanlab.filter.find_label_issues, prune_by_noise_rate), "
        "ranked by self-confidence",
        "source": source,
        "images_checked": int(len(labels)),
        "issues_found": int(len(ranked)),
        "out_of_fold_accuracy": float((likely == labels).mean()) if len(labels) else None,
        "listed": len(issues),
        "issues": issues,
    }


def label_issues_png(
    report: dict[str, Any],
    images: np.ndarray | ShardImages,
    cols: int = 6,
    limit: int = SHOWN,
) -> bytes | None:
    """A grid of the top issues (``images`` indexed like the report's ``index``): given ->
    likely label and the out-of-fold confidence under each; None when there are none."""
    from training.plots import image_grid_png

    top = report["issues"][:limit]
    return image_grid_png(
        [images[i["index"]] for i in top],
        [
            f"#{i['rank']} {i['given_label']} -> {i['likely_label']}\n{i['confidence']:.2f}"
            for i in top
        ],
        "label issues: given -> likely label (out-of-fold confidence), relabel first",
        cols,
    )
