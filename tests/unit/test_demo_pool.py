"""The demo's data: the loop's pool never reaches training, and the round's report reads
the predict job's files against the answer key (services/demo.py)."""

from __future__ import annotations

import csv
from pathlib import Path

from services import demo


def test_the_pool_is_held_out_of_training_and_a_stale_file_is_removed(tmp_path: Path) -> None:
    (tmp_path / "digits-5-9" / "5").mkdir(parents=True)
    (tmp_path / "digits-5-9" / "5" / "0000.png").write_bytes(b"")  # an earlier layout's
    target = demo.write_digits(tmp_path, range(5, 10), pool=range(5, 10))
    pool, answers = demo.write_pool(tmp_path, range(5, 10))
    trained = {p.name for p in target.rglob("*.png")}
    pooled = {p.name for p in pool.glob("*.png")}
    assert pooled == set(answers) and not trained & pooled
    assert len(trained) + len(pooled) == 896 and len(pooled) == 231  # all of 5-9, once
    assert set(answers.values()) == {"5", "6", "7", "8", "9"}
    assert not (target / "5" / "0000.png").exists()  # digit 0 of load_digits is a 0


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_the_round_report_names_every_pick_and_the_wrong_ones(tmp_path: Path) -> None:
    answers = {"a.png": "5", "b.png": "9", "c.png": "7"}
    _write(
        tmp_path / "predictions.csv",
        ["path", "label_1", "probability_1"],
        [["a.png", "5", 0.99], ["b.png", "5", 0.6], ["c.png", "7", 0.9]],
    )
    _write(
        tmp_path / "to_label.csv",
        ["rank", "path", "margin", "label_1", "probability_1"],
        [[1, "b.png", 0.2, "5", 0.6], [2, "c.png", 0.8, "7", 0.9]],
    )
    lines = demo.loop_report(tmp_path, answers)
    assert lines[0].startswith("the pool: 2 of 3 predicted right (0.667)")
    assert lines[2].endswith("b.png   <- wrong") and "true 9" in lines[2]
    assert lines[3].endswith("c.png") and "1 of the 2 picks" in lines[4]
    assert str(tmp_path / "to_label.png") in "\n".join(lines)
