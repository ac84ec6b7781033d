"""services/jobs/label_next_step.py and the job page's section: the driver keeps only the
2N most uncertain rows whatever order the batches come in, to_label.csv's columns and
order, the contact sheet, what the CLI prints; the page escapes what the CSV holds."""

from __future__ import annotations

import csv
import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from services.api.label_next_page import to_label_section
from services.jobs.label_next_step import Candidates, ToLabel, pick, write_csv, write_to_label
from training.bulk_predict import EMBED_FIELDS, SCHEMA, ImageSource

OUT = pa.schema([*SCHEMA, *EMBED_FIELDS])


def _rows(n: int, seed: int = 0) -> list[dict]:
    """n predicted rows (margins spread, embeddings in 4 clusters) and one unreadable."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        p1 = float(rng.uniform(0.5, 1.0))
        center = np.eye(4)[i % 4] * 10
        rows.append(
            {
                "path": f"img/{i:03d}.png",
                "label": "a",
                "probability": p1,
                "labels": ["a", "b"],
                "probabilities": [p1, 1 - p1],
                "error": None,
                "margin": 2 * p1 - 1,
                "embedding": (center + rng.normal(size=4)).tolist(),
            }
        )
    rows.append({"path": "bad.png", "labels": [], "probabilities": [], "error": "unreadable"})
    return rows


def _batches(rows: list[dict], size: int) -> list[pa.Table]:
    return [pa.Table.from_pylist(rows[i : i + size], schema=OUT) for i in range(0, len(rows), size)]


def test_the_driver_holds_at_most_4n_rows_and_the_picks_ignore_batch_order():
    rows = _rows(200)
    first = Candidates(10)
    for b in _batches(rows, 16):
        first.add(b)
        assert first.held <= 4 * 10 + 16
    again = Candidates(10)
    for b in _batches(list(reversed(rows)), 7):
        again.add(b)
    table = first.table()
    assert table is not None and table.num_rows == 20
    by_margin = sorted((r for r in rows if r["error"] is None), key=lambda r: r["margin"])
    assert set(table.column("path").to_pylist()) == {r["path"] for r in by_margin[:20]}
    assert [r["path"] for r in pick(first)] == [r["path"] for r in pick(again)]
    assert [r["rank"] for r in pick(first)] == list(range(1, 11))


def test_no_readable_row_is_no_pick_and_a_csv_with_its_header(tmp_path):
    empty = Candidates(5)
    empty.add(_batches(_rows(0), 4)[0])
    said: list[str] = []
    made = write_to_label(tmp_path, empty, 2, (ImageSource(root=str(tmp_path)), []), said.append)
    assert made.rows == [] and made.files == ["to_label.csv"]
    assert (tmp_path / "to_label.csv").read_text().splitlines() == [
        "rank,path,margin,label_1,probability_1,label_2,probability_2"
    ]
    assert made.lines() == ["what to label next: no readable image to rank"]


def test_to_label_csv_and_png_list_the_picks_in_rank_order(tmp_path):
    images = tmp_path / "pool"
    (images / "img").mkdir(parents=True)
    rows = _rows(40)
    for r in rows[:-1]:
        Image.new("RGB", (8, 8), (40, 80, 120)).save(images / r["path"])
    cands = Candidates(12)
    for b in _batches(rows, 9):
        cands.add(b)
    said: list[str] = []
    made = write_to_label(
        tmp_path,
        cands,
        3,
        (ImageSource(root=str(images)), [(r["path"], -1, "") for r in rows]),
        said.append,
    )
    assert made.files == ["to_label.csv", "to_label.png"]
    table = list(csv.DictReader(io.StringIO((tmp_path / "to_label.csv").read_text())))
    assert [int(t["rank"]) for t in table] == list(range(1, 13))
    assert list(table[0]) == [
        "rank", "path", "margin", "label_1", "probability_1", "label_2", "probability_2",
        "label_3", "probability_3",
    ]  # fmt: skip
    margin = {r["path"]: r["margin"] for r in rows[:-1]}
    assert float(table[0]["margin"]) == pytest.approx(
        min(margin.values()), abs=1e-6
    )  # rank 1: the least sure
    assert all(float(t["margin"]) <= sorted(margin.values())[23] + 1e-9 for t in table)
    assert table[0]["label_3"] == "" and table[0]["label_2"] == "b"
    with Image.open(tmp_path / "to_label.png") as sheet:
        assert sheet.format == "PNG" and sheet.width > 500
    lines = made.lines("s3://x/to_label.csv")
    assert lines[0] == "what to label next: 12 images (rank, margin, predicted label)"
    assert len(lines) == 12 and lines[-1] == "  ... all 12 in s3://x/to_label.csv"
    assert said and said[-1].startswith("label next: 12 images picked")


def test_the_job_pages_section_escapes_the_csv_and_links_the_sheet():
    rows = [{"rank": "1", "path": "<script>x</script>.png", "label_1": "a&b", "margin": "0.01"}]
    html = to_label_section(rows, 7, "/root")
    assert "<script>x" not in html and "&lt;script&gt;" in html and "a&amp;b" in html
    assert 'src="/root/ui/jobs/7/to_label.png"' in html and "0.010" in html
    assert to_label_section(None, 7, "") == ""
    assert "no readable image to rank" in to_label_section([], 7, "")
    assert "to_label.png" not in to_label_section([], 7, "")


def test_the_cli_lines_show_the_first_ten():
    rows = [
        {"rank": i, "path": f"p{i}", "margin": 0.1, "labels": ["a"], "probabilities": [0.5]}
        for i in range(1, 4)
    ]
    assert ToLabel(rows).lines()[1] == "     1  0.100  a (0.50)                 p1"


def test_a_predict_jobs_page_shows_what_to_label_next_and_serves_the_sheet(tmp_path):
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from services.api import create_app
    from services.config import Settings
    from services.db import repo
    from services.db.session import prepare_database, session_factory
    from services.store.storage import open_store

    settings = Settings(
        home=tmp_path / "home",
        database_url=SecretStr(f"sqlite:///{tmp_path / 'p.db'}"),
        publish_events=False,
    )
    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        jobs = [
            repo.create_job(
                s, batch_id=b, dataset_uri="s3://d/p/", model_name="m", mode=m, hyperparameters={}
            )[0]
            for b, m in (("p-1", "predict"), ("p-2", "predict"), ("t-1", "train"))
        ]
        s.commit()
        ranked, bare, trained = (j.id for j in jobs)
    store = open_store(settings)
    folder = tmp_path / "made"
    folder.mkdir()
    rows = [{"rank": 1, "path": "x/7.png", "margin": 0.02, "labels": ["7"], "probabilities": [0.5]}]
    write_csv(folder / "to_label.csv", rows, 1)
    store.put_file(f"predictions/job-{ranked}/to_label.csv", folder / "to_label.csv")
    store.put_bytes(f"predictions/job-{ranked}/to_label.png", b"\x89PNG fake")
    client = TestClient(create_app(settings))
    page = client.get(f"/ui/jobs/{ranked}").text
    assert 'id="label-next"' in page and "<td>x/7.png</td><td>7</td>" in page
    assert f"/ui/jobs/{ranked}/to_label.png" in page
    sheet = client.get(f"/ui/jobs/{ranked}/to_label.png")
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/png"
    assert 'id="label-next"' not in client.get(f"/ui/jobs/{bare}").text  # no label_next
    assert 'id="label-next"' not in client.get(f"/ui/jobs/{trained}").text
    assert client.get(f"/ui/jobs/{bare}/to_label.png").status_code == 404
