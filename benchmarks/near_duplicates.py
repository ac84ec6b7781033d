"""Near duplicates: false positives on data without any, recall on planted copies.

- Negatives: scikit-learn's 1,797 digits written as PNGs (services.demo.write_digits, as
  the demo does) and decoded at 32 px: they hold no duplicates, so every confirmed pair is
  a false positive.
- Positives: 100 textured crops of scikit-learn's two sample photos, each with planted
  copies (resized to 70 %, brightened 10 %, JPEG quality 70, cropped 3 % (1.5 % a side),
  cropped 3 % off the top-left, mirrored) and one copy with all of them at once; recall is
  the share of (original, copy) pairs found.

- Search: the hash pairs within the jobs' radius, banded (training.hash_index) against
  all pairs, on N = 10k, 30k, 100k random hashes with a third planted as near copies: the
  same pairs, and the seconds of each as N grows (all pairs grows with N², banded about
  with N).

``python -m benchmarks.near_duplicates [--size 32] [--search 10000,30000,100000]`` prints
the tables (a minute or two, most of it the all-pairs reference at 100k).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from training import data as datasets
from training.hash_index import all_pairs, choose_bands, hash_pairs
from training.hyperparams import Hyperparameters
from training.near_duplicates import THRESHOLD, candidates, near_duplicates

RADIUS = Hyperparameters().near_duplicate_distance  # the jobs' default


def _jpeg(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=70)
    buf.seek(0)
    return Image.open(buf).copy()


def _crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(w * left), round(h * top), w - round(w * right), h - round(h * bottom)))


def _resize(img: Image.Image) -> Image.Image:
    return img.resize((int(img.width * 0.7), int(img.height * 0.7)), Image.Resampling.BILINEAR)


def _brighten(img: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(1.1)


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resized": _resize,
    "brightened": _brighten,
    "jpeg70": _jpeg,
    "cropped": lambda im: _crop(im, 0.015, 0.015, 0.015, 0.015),
    "cropped_corner": lambda im: _crop(im, 0.03, 0.03, 0, 0),
    "mirrored": ImageOps.mirror,
    "all": lambda im: ImageOps.mirror(
        _jpeg(_crop(_brighten(_resize(im)), 0.015, 0.015, 0.015, 0.015))
    ),
}


def write_digits(root: Path) -> Path:
    """All ten classes of digits, as the demo writes them."""
    from services.demo import write_digits as write

    return write(root, range(10))


def write_planted(root: Path, originals: int = 100, seed: int = 0) -> Path:
    """``originals`` textured photo crops under ``original/``, each copy under its
    transform's folder with the original's file stem."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [np.asarray(x) for x in load_sample_images().images]
    made = 0
    while made < originals:
        photo = photos[made % len(photos)]
        side = int(rng.integers(96, 260))
        y = int(rng.integers(0, photo.shape[0] - side))
        x = int(rng.integers(0, photo.shape[1] - side))
        img = Image.fromarray(photo[y : y + side, x : x + side])
        if np.asarray(img.convert("L")).std() < 20:  # a patch of sky is no picture
            continue
        img = img.resize((160, 160), Image.Resampling.BILINEAR)
        for folder, im in [("original", img)] + [(n, t(img)) for n, t in TRANSFORMS.items()]:
            (root / folder).mkdir(parents=True, exist_ok=True)
            im.convert("RGB").save(root / folder / f"{made:03d}.png")
        made += 1
    return root


def false_positives(root: Path, size: int) -> dict[str, float]:
    d = datasets.decode(datasets.discover(write_digits(root)), size)
    t0 = time.perf_counter()
    pairs = near_duplicates(d.images, RADIUS)
    return {
        "images": len(d),
        "candidates": len(candidates(d.images, RADIUS, True)[0]),
        "confirmed": len(pairs),
        "seconds": time.perf_counter() - t0,
    }


def recall(root: Path, size: int) -> dict[str, float]:
    """Share of (original, copy) pairs confirmed, per transform."""
    d = datasets.decode(datasets.discover(write_planted(root)), size)
    found = {(d.paths[p.i], d.paths[p.j]) for p in near_duplicates(d.images, RADIUS)}
    found |= {(b, a) for a, b in found}
    out: dict[str, float] = {}
    for name in TRANSFORMS:
        copies = [p for p in d.paths if p.startswith(f"{name}/")]
        hits = sum((f"original/{p.split('/')[1]}", p) in found for p in copies)
        out[name] = hits / len(copies)
    return out


def planted_hashes(n: int, seed: int = 0) -> np.ndarray:
    """n random 64-bit hashes, a third of them copies of others with up to RADIUS + 2
    bits flipped."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    src = rng.integers(0, n, n // 3)
    for t, s in enumerate(src):
        bits = rng.choice(64, rng.integers(RADIUS + 3), replace=False)
        h[t] = h[s] ^ np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64), initial=0)
    return h


def search_scaling(sizes: list[int]) -> list[dict[str, float]]:
    rows = []
    for n in sizes:
        h = planted_hashes(n)
        t0 = time.perf_counter()
        banded = hash_pairs(h, None, RADIUS)
        t1 = time.perf_counter()
        reference = all_pairs(h, None, RADIUS)
        t2 = time.perf_counter()
        assert banded == reference, f"banded search differs from all pairs at N={n}"
        rows.append(
            {"n": n, "bands": choose_bands(n, RADIUS), "pairs": len(banded),
             "banded_s": t1 - t0, "all_pairs_s": t2 - t1}
        )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32, help="decoded side (the demo's is 32)")
    ap.add_argument("--search", default="10000,30000,100000", help="hash counts, comma-separated")
    args = ap.parse_args(argv)
    search = search_scaling([int(n) for n in args.search.split(",") if n])
    print(f"\n== hash pairs within {RADIUS} bits: banded (multi-index) vs all pairs, same pairs")
    print(f"{'hashes':>8}{'bands':>6}{'pairs':>8}{'banded s':>10}{'all pairs s':>12}{'ratio':>7}")
    for r in search:
        ratio = r["all_pairs_s"] / r["banded_s"]
        print(
            f"{r['n']:>8}{r['bands']:>6}{r['pairs']:>8}{r['banded_s']:>10.2f}"
            f"{r['all_pairs_s']:>12.2f}{ratio:>6.1f}x"
        )
    with tempfile.TemporaryDirectory() as tmp:
        fp = false_positives(Path(tmp) / "digits", args.size)
        rec = recall(Path(tmp) / "planted", args.size)
    print(
        f"\n== near duplicates: hash candidates (<= {RADIUS} bits, mirror too) confirmed by "
        f"correlation >= {THRESHOLD} of 16x16 thumbnails, images at {args.size} px"
    )
    print(
        f"digits (no duplicates): {fp['images']} images, {fp['candidates']} candidate "
        f"pairs, {fp['confirmed']} confirmed (false positives), {fp['seconds']:.1f} s"
    )
    print(f"{'planted copy':<16}{'recall':>8}")
    for name, r in rec.items():
        print(f"{name:<16}{r:>8.2f}")
    single = [r for n, r in rec.items() if n != "all"]
    print(f"{'single (mean)':<16}{np.mean(single):>8.3f}")
    return {"false_positives": fp, "recall": rec, "search": search}


if __name__ == "__main__":
    main()
