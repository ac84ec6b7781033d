"""The stratified, seeded train / val / test split, k folds, and the checks a decoded data
set passes before it is split (unreadable images, images per class)."""

from __future__ import annotations

import numpy as np

from training.dataset_types import DataError, Split


def check_bad(bad: list[tuple[str, str]], on_bad_image: str) -> None:
    """``fail``: unreadable images are an error naming them; ``skip``: they are left out."""
    if bad and on_bad_image == "fail":
        first = ", ".join(b[0] for b in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DataError(
            f"{len(bad)} unreadable image(s): {first}{more} "
            "(set on_bad_image=skip to train without them)"
        )


def check_min_per_class(labels: np.ndarray, classes: list[str], min_per_class: int) -> None:
    counts = np.bincount(labels, minlength=len(classes))
    short = [f"{classes[i]} ({n})" for i, n in enumerate(counts) if n < min_per_class]
    if short:
        raise DataError(f"classes with fewer than {min_per_class} images: {', '.join(short)}")


def _holdout_size(n: int, frac: float, cap: int | None, n_classes: int) -> int:
    size = int(round(n * frac))
    if cap is not None:
        size = min(size, cap)
    return max(size, n_classes)  # stratification needs one per class at least


def split(
    labels: np.ndarray,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    val_max: int | None = None,
    test_max: int | None = None,
    seed: int = 0,
) -> Split:
    """Stratified, seeded split of indices into train / val / test.

    Sizes are ``round(n * frac)``, capped by ``*_max``; every class appears in every part in
    proportion to its size, and the same seed gives the same split.
    """
    from sklearn.model_selection import train_test_split  # here: Ray Data's decode and
    # read workers import this module, and scikit-learn (scipy.stats) costs them ~1.5 s

    labels = np.asarray(labels)
    n = len(labels)
    k = len(np.unique(labels))
    idx = np.arange(n)
    n_test = _holdout_size(n, test_frac, test_max, k)
    rest, test = train_test_split(idx, test_size=n_test, stratify=labels, random_state=seed)
    n_val = _holdout_size(n, val_frac, val_max, k)
    train, val = train_test_split(
        rest, test_size=n_val, stratify=labels[rest], random_state=seed + 1
    )
    return Split(np.sort(train), np.sort(val), np.sort(test))


def kfold(
    labels: np.ndarray, indices: np.ndarray, k: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k folds over ``indices`` (positions into ``labels``): (train, val) pairs."""
    from sklearn.model_selection import StratifiedKFold

    indices = np.asarray(indices)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [
        (np.sort(indices[a]), np.sort(indices[b]))
        for a, b in skf.split(indices, np.asarray(labels)[indices])
    ]
