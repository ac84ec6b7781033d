"""Model quality figures on real data (issue #17): calibration and label issues on digits.

scikit-learn's 1,797 digits at 32 px, split 70 / 15 / 15 (stratified, seeded). A ResNet18
is trained from scratch (Adam 1e-3, ``--epochs``) with plain PyTorch on the training part.

- Calibration: ECE (15 bins) and NLL on the test part before and after temperature scaling
  fitted on the validation part (training/calibration.py, what every job does).
- Label issues: 5 % of the train + val labels flipped at random; cleanlab's confident
  learning on out-of-fold probabilities of a LogisticRegression cross-validated on
  (a) the raw 64 pixels, (b) frozen features of the clean model (the job's path with
  starting weights that never saw these labels), (c) frozen features of a model trained on
  the noisy labels (the job's path without starting weights). Precision and recall of the
  issues found against the planted flips, and the share of planted ones among the top half.

``python -m benchmarks.model_quality [--epochs 12]`` prints both tables (a few minutes on
2 cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from training.augment import eval_transform
from training.calibration import FitSplit, calibration_report
from training.evaluate import predict_logits
from training.label_issues import backbone_features, find_issues, out_of_fold_probs
from training.model import build_model


def digits(size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (N, 3, size, size) images, labels, and the raw 64 pixels."""
    x, y = load_digits(return_X_y=True)
    img = (x.reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8)
    img = np.kron(img, np.ones((size // 8, size // 8), np.uint8))
    return np.repeat(img[:, None], 3, axis=1), y, x.astype(np.float32)


def train(images: np.ndarray, labels: np.ndarray, epochs: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("resnet18", 10, 0.0)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    tf = eval_transform()
    x = tf(torch.from_numpy(images))
    y = torch.from_numpy(labels).long()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        model.train()
        for b in np.array_split(rng.permutation(len(y)), max(1, len(y) // 32)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    return model.eval()


def flip(labels: np.ndarray, frac: float, seed: int = 0) -> tuple[np.ndarray, set[int]]:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(labels), int(frac * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[idx] = (labels[idx] + rng.integers(1, 10, len(idx))) % 10
    return noisy, set(idx.tolist())


def scores(noisy: np.ndarray, probs: np.ndarray, flipped: set[int]) -> tuple[float, ...]:
    r = find_issues(
        noisy,
        probs,
        [str(i) for i in range(len(noisy))],
        list("0123456789"),
        source="benchmark",
        limit=len(noisy),
    )
    found = {i["index"] for i in r["issues"]}
    top = [i["index"] for i in r["issues"][: len(flipped) // 2]]
    hit = len(found & flipped)
    return (
        len(found),
        hit / max(1, len(found)),
        hit / len(flipped),
        sum(i in flipped for i in top) / max(1, len(top)),
        r["out_of_fold_accuracy"],
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=12)
    args = ap.parse_args(argv)
    images, y, pixels = digits()
    idx = np.arange(len(y))
    pool, test = train_test_split(idx, test_size=0.15, stratify=y, random_state=0)
    tr, val = train_test_split(pool, test_size=0.15 / 0.85, stratify=y[pool], random_state=0)

    t0 = time.perf_counter()
    clean = train(images[tr], y[tr], args.epochs)
    trained_s = time.perf_counter() - t0
    cal = calibration_report(
        FitSplit.validation(predict_logits(clean, images[val]), y[val]),
        predict_logits(clean, images[test]),
        y[test],
    )
    acc = float((predict_logits(clean, images[test]).argmax(1) == y[test]).mean())
    print(
        f"\nCalibration: ResNet18 from scratch on digits 32 px, {args.epochs} epochs "
        f"({trained_s:.0f} s), test accuracy {acc:.4f}, {len(test)} test / {len(val)} val"
    )
    print(f"{'':<22}{'ECE (15 bins)':>14}{'NLL':>10}")
    print(f"{'before (T = 1)':<22}{cal['ece_before']:>14.4f}{cal['nll_before']:>10.4f}")
    after = f"after (T = {cal['temperature']:.3g})"
    print(f"{after:<22}{cal['ece_after']:>14.4f}{cal['nll_after']:>10.4f}")

    noisy_pool, flipped_local = flip(y[pool], 0.05)
    noisy = y.copy()
    noisy[pool] = noisy_pool
    t0 = time.perf_counter()
    dirty = train(images[tr], noisy[tr], args.epochs)
    rows = [
        ("raw 64 pixels", pixels[pool]),
        ("frozen, clean model", backbone_features(clean, images[pool])),
        ("frozen, noisy model", backbone_features(dirty, images[pool])),
    ]
    print(
        f"\nLabel issues: {len(flipped_local)} of {len(pool)} train + val labels flipped "
        "(5 %); cleanlab on out-of-fold LogisticRegression probabilities"
    )
    print(
        f"{'features':<22}{'found':>7}{'precision':>11}{'recall':>8}{'top half':>10}"
        f"{'OOF acc':>9}{'s':>6}"
    )
    for name, feats in rows:
        t0 = time.perf_counter()
        probs = out_of_fold_probs(feats, noisy_pool)
        n, p, r, top, oof = scores(noisy_pool, probs, flipped_local)
        print(
            f"{name:<22}{n:>7}{p:>11.3f}{r:>8.3f}{top:>10.3f}{oof:>9.3f}"
            f"{time.perf_counter() - t0:>6.1f}"
        )


if __name__ == "__main__":
    main()
