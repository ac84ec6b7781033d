"""The overhead benchmark's figure: the median of per-pair ratios, not a ratio of medians."""

from benchmarks.train_overhead import combine


def run(img_s: float, wall_s: float) -> dict[str, float]:
    return {"epochs": 4, "img_s": img_s, "epoch_s": 1437 / img_s, "wall_s": wall_s}


def test_combine_takes_the_median_of_pair_ratios():
    # host drift: the second pair ran on a slow minute for both loops
    pairs = [
        {"bare": run(100, 80), "ray": run(110, 100)},
        {"bare": run(50, 160), "ray": run(45, 200)},
        {"bare": run(90, 90), "ray": run(90, 90)},
    ]
    row = combine(2, pairs)
    assert row["ratios"] == [1.1, 0.9, 1.0]
    assert row["throughput_ratio"] == 1.0
    assert row["bare"]["img_s"] == 90 and row["ray"]["img_s"] == 90
    assert row["wall_ratio"] == 0.8  # median of 0.8, 0.8, 1.0
    assert row["workers"] == 2
