"""What to label next (issue #27): a simulated labelling loop on digits, the ranking
(training/acquisition.py: margin, then greedy k-center over the 2N most uncertain)
against random picking and against margin alone.

scikit-learn's 1,797 digits (the raw 64 pixels / 16), split into a pool of 1,297 and a
test set of 500 (stratified, seeded). Each seed starts from ``--start`` labelled images
drawn at random from the pool; each round a small MLP (64 -> 64 -> 10, ReLU, Adam,
full batch, ``STEPS`` steps, weight decay) is trained from scratch on the labelled ones,
scored on the test set, and ``--batch`` more pool images are labelled: the ones the
ranking picks (its embeddings: the hidden layer, what the head sees) or ``--batch`` at
random. The curves are the mean test accuracy over ``--seeds`` seeds against the labels
used; the table says how many labels each needs to reach each target (its first round
whose mean accuracy reaches it; ``-`` when none of the rounds does).

``python -m benchmarks.label_next [--seeds 5] [--rounds 22] [--png PATH]`` prints the
curves and the table and writes the PNG (build/bench/label_next.png by default; about a
minute on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from training.acquisition import rank

STEPS = 300  # full-batch Adam steps per round (enough to fit <= 500 images)
TARGETS = (0.93, 0.95, 0.96)
Pick = Callable[[np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]


def train(x: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Sequential:
    """A small MLP fitted from scratch on the labelled images (deterministic per seed)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(STEPS):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def probs_and_embeddings(model: torch.nn.Sequential, x: np.ndarray) -> tuple[np.ndarray, ...]:
    hidden = model[1](model[0](torch.from_numpy(x)))
    return torch.softmax(model[2](hidden), dim=1).numpy(), hidden.numpy()


def ranked(pool_factor: int) -> Pick:
    def pick(probs: np.ndarray, emb: np.ndarray, n: int, _rng: np.random.Generator) -> np.ndarray:
        from training.acquisition import margins

        return rank(margins(probs), emb, n, pool_factor=pool_factor).index

    return pick


def at_random(probs: np.ndarray, _emb: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(len(probs), size=min(n, len(probs)), replace=False)


def loop(
    data: tuple[np.ndarray, ...], pick: Pick, seed: int, start: int, batch: int, rounds: int
) -> list[float]:
    """Test accuracy after each round (rounds + 1 of them: start, start + batch, ...)."""
    x_pool, y_pool, x_test, y_test = data
    rng = np.random.default_rng(seed)
    labelled = rng.choice(len(y_pool), size=start, replace=False)
    curve = []
    for r in range(rounds + 1):
        model = train(x_pool[labelled], y_pool[labelled], seed * 1000 + r)
        probs, _ = probs_and_embeddings(model, x_test)
        curve.append(float((probs.argmax(1) == y_test).mean()))
        if r == rounds:
            break
        rest = np.setdiff1d(np.arange(len(y_pool)), labelled)
        probs, emb = probs_and_embeddings(model, x_pool[rest])
        labelled = np.concatenate([labelled, rest[pick(probs, emb, batch, rng)]])
    return curve


def labels_to_reach(labels: list[int], curve: np.ndarray, target: float) -> str:
    hit = np.flatnonzero(curve >= target)
    return str(labels[hit[0]]) if len(hit) else "-"


def plot(labels: list[int], curves: dict[str, np.ndarray], path: Path) -> None:
    from training.plots import plt, png_bytes

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in curves.items():
        ax.plot(labels, c.mean(0), marker="o", markersize=3, label=name)
        ax.fill_between(labels, c.min(0), c.max(0), alpha=0.15)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy (mean; band: min-max over seeds)")
    ax.set_title("digits: what to label next vs random")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--start", type=int, default=20)
    ap.add_argument("--batch", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=22)
    ap.add_argument("--png", type=Path, default=Path("build/bench/label_next.png"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    pool, test = train_test_split(np.arange(len(y)), test_size=500, stratify=y, random_state=0)
    data = (x[pool], y[pool], x[test], y[test])
    strategies = {"ranked (margin + k-center)": ranked(2), "margin only": ranked(1)}
    strategies["random"] = at_random
    t0 = time.perf_counter()
    curves = {
        name: np.array(
            [loop(data, p, s, args.start, args.batch, args.rounds) for s in range(args.seeds)]
        )
        for name, p in strategies.items()
    }
    labels = [args.start + args.batch * r for r in range(args.rounds + 1)]
    print(
        f"\nWhat to label next: digits, pool {len(pool)}, test {len(test)}, start {args.start}, "
        f"+{args.batch} a round, MLP 64-64-10, {args.seeds} seeds "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    print(f"{'labels':>7}" + "".join(f"{n:>28}" for n in curves))
    for i, n in enumerate(labels):
        print(f"{n:>7}" + "".join(f"{c[:, i].mean():>28.4f}" for c in curves.values()))
    print(f"\n{'labels to reach':<28}" + "".join(f"{t:>8.2f}" for t in TARGETS))
    for name, c in curves.items():
        mean = c.mean(0)
        print(f"{name:<28}" + "".join(f"{labels_to_reach(labels, mean, t):>8}" for t in TARGETS))
    plot(labels, curves, args.png)
    print(f"curves: {args.png.resolve()}")


if __name__ == "__main__":
    main()
