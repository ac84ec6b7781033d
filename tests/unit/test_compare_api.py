"""Compare runs over HTTP and on the command line, on an embedded SQLite database and a
local store (tests/compare_scenario.py: recorded jobs, no training): ``GET /compare``, its
404 and 422s and the read-token rule, the page and its pictures, a store that cannot be
read, and ``colecionador compare`` (exit 2 on bad input)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api import create_app
from services.cli import main
from services.config import Settings
from tests import compare_scenario

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
READ = "r-token"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        home=tmp_path / "home", database_url=SecretStr(f"sqlite:///{tmp_path / 'c.db'}")
    )


@pytest.fixture
def jobs(settings):
    return compare_scenario.build(settings)


@pytest.fixture
def client(settings, jobs):
    return TestClient(create_app(settings))


def test_compare_three_jobs(client, jobs):
    got = client.get(f"/compare?jobs={jobs.b},{jobs.a},{jobs.c}")
    assert got.status_code == 200, got.text
    c = got.json()
    assert c["jobs"] == [jobs.b, jobs.a, jobs.c]  # the order asked for
    assert [r["status"] for r in c["runs"]] == ["success", "success", "failed"]
    params = {p["name"]: p for p in c["hyperparameters"]}
    assert sorted(params) == ["batch_size", "phase1_lr", "seed"] and c["same_hyperparameters"] == 1
    assert params["phase1_lr"]["values"] == [0.01, 0.001, 0.001]
    assert params["seed"]["absent"] == [jobs.c]
    metrics = {m["name"]: m for m in c["metrics"]}
    assert metrics["accuracy"]["values"] == [0.85, 0.95, None]
    assert metrics["accuracy"]["best"] == [jobs.a]
    assert metrics["ece"]["values"] == [0.08, 0.03, None] and metrics["ece"]["best"] == [jobs.a]
    per_class = {x["name"]: x for x in c["per_class"]}
    assert list(per_class) == ["a", "d", "b"]  # b's classes first: its column comes first
    assert per_class["a"]["precision"] == [0.8, 0.9, None]
    assert per_class["d"]["support"] == [1, None, None]
    gate = {g["metric"]: g for g in c["gate"]}
    assert gate["recall"]["passed"] == [False, True, None]
    assert gate["ece"]["op"] == "<" and gate["ece"]["thresholds"] == [0.1, None, None]
    data = c["data"]
    assert [s["images"] for s in data["sets"]] == [36, 36, 3]
    assert data["sets"][2]["per_class"] == {"a": 3}  # the failed job's health report
    assert data["sets"][0]["test_split_digest"] == data["sets"][1]["test_split_digest"]
    assert data["same_test_split"] is None and data["same_uri"] is False  # c has no split
    assert [len(x) for x in c["curves"]] == [3, 4, 0]
    (t,) = c["tuning"]
    assert t["job_id"] == jobs.b and [x["rank"] for x in t["trials"]] == [1, 2, 3]
    assert t["trials"][0]["folds"] == pytest.approx([0.3, 0.35, 0.4])
    assert t["trials"][0]["mean"] == pytest.approx(0.35) and t["best_index"] == 0
    assert c["missing"] == []
    two = client.get(f"/compare?jobs={jobs.a}&jobs={jobs.b}").json()  # a form's checkboxes
    assert two["jobs"] == [jobs.a, jobs.b] and two["data"]["same_test_split"] is True


@pytest.mark.parametrize(
    "query, says",
    [
        ("jobs=1", "at least 2"),
        ("jobs=1,2,3,4,5,6,7,8,9", "at most 8"),
        ("jobs=1,x", "valid integer"),
        ("jobs=1,1", "named twice"),
        ("jobs=1,-3", "greater than or equal to 1"),
        ("", "Field required"),
    ],
)
def test_bad_job_lists_are_422_naming_jobs(settings, query, says):
    got = TestClient(create_app(settings)).get(f"/compare?{query}")
    assert got.status_code == 422, got.text
    (err,) = got.json()["detail"]
    assert err["loc"][:2] == ["query", "jobs"] and says in err["msg"], err


def test_an_unknown_job_is_404_naming_it(client, jobs):
    got = client.get(f"/compare?jobs={jobs.a},9999,9998")
    assert got.status_code == 404 and got.json()["detail"] == "no job 9999, 9998"
    page = client.get(f"/ui/compare?jobs={jobs.a},9999")
    assert page.status_code == 404 and "no job 9999" in page.text
    assert client.get(f"/ui/compare/curves.png?jobs={jobs.a},9999").status_code == 404


def test_reads_follow_the_read_token_rule(settings, jobs):
    guarded = TestClient(
        create_app(settings.model_copy(update={"api_read_token": SecretStr(READ)}))
    )
    url = f"/compare?jobs={jobs.a},{jobs.b}"
    assert guarded.get(url).status_code == 401
    assert guarded.get(url, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert guarded.get(url, headers={"Authorization": f"Bearer {READ}"}).status_code == 200
    page = f"/ui/compare?jobs={jobs.a},{jobs.b}"
    assert guarded.get(page).status_code == 401
    assert guarded.get(page, auth=("anyone", READ)).status_code == 200
    assert guarded.get(f"/ui/jobs/{jobs.b}/tuning.png").status_code == 401


def test_the_page_and_its_pictures(client, jobs):
    page = client.get(f"/ui/compare?jobs={jobs.a},{jobs.b},{jobs.c}")
    assert page.status_code == 200
    html = page.text
    for part in ('id="runs"', 'id="params"', 'id="metrics"', 'id="per-class"', 'id="gate"'):
        assert part in html
    assert '<tr data-param="phase1_lr">' in html and 'data-param="hflip"' not in html
    assert "&lt;images&gt;" in html and "<images>" not in html  # the error, escaped
    assert f'src="/ui/compare/curves.png?jobs={jobs.a},{jobs.b},{jobs.c}"' in html
    assert f'src="/ui/jobs/{jobs.b}/tuning.png"' in html
    assert "<td class=num><b>0.9500</b></td>" in html  # a's accuracy, the best
    curves = client.get(f"/ui/compare/curves.png?jobs={jobs.a},{jobs.b}")
    assert curves.status_code == 200 and curves.content.startswith(PNG_MAGIC)
    strip = client.get(f"/ui/jobs/{jobs.b}/tuning.png")
    assert strip.status_code == 200 and strip.content.startswith(PNG_MAGIC)
    assert client.get(f"/ui/jobs/{jobs.a}/tuning.png").status_code == 404  # not a tune job
    picker = client.get("/ui/compare")
    assert picker.status_code == 200 and f'name="jobs" value="{jobs.c}"' in picker.text


def test_a_store_that_cannot_be_read_leaves_the_database_figures(settings, jobs, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    away = settings.model_copy(update={"store_url": f"file://{blocker}/store"})
    got = TestClient(create_app(away)).get(f"/compare?jobs={jobs.a},{jobs.b}")
    assert got.status_code == 200, got.text
    c = got.json()
    assert c["missing"] == [
        f"job {jobs.a}: metrics.json",
        f"job {jobs.a}: data_profile.json",
        f"job {jobs.b}: metrics.json",
        f"job {jobs.b}: data_profile.json",
    ]
    assert c["metrics"][0]["values"] == [0.95, 0.85] and c["per_class"] == []
    assert c["data"]["same_test_split"] is None


def test_the_command(settings, jobs, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("COLECIONADOR_DATABASE_URL", settings.db_url)
    monkeypatch.setenv("COLECIONADOR_HOME", str(settings.home))
    assert main(["compare", str(jobs.a), str(jobs.b), str(jobs.c)]) == 0
    out = capsys.readouterr().out
    assert "phase1_lr" in out and "hflip" not in out and "1 the same" in out
    assert "accuracy" in out and "0.9500*" in out  # the best marked
    assert "tuning: job" in out and "phase1_lr=0.01" in out
    assert (
        main(["compare", str(jobs.a), str(jobs.b), "--json", "--plots", str(tmp_path / "p")]) == 0
    )
    printed = capsys.readouterr()
    doc = json.loads(printed.out)  # the JSON alone: what was written goes to stderr
    assert "curves.png" in printed.err
    assert doc["jobs"] == [jobs.a, jobs.b]
    assert (tmp_path / "p" / "curves.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "p" / f"tuning-job-{jobs.b}.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["1"], "at least 2"),
        (["1", "1"], "named twice"),
        (["1", "x"], "invalid int value"),
        (["1", "9999"], "no job"),
        ([str(i) for i in range(1, 10)], "at most 8"),
    ],
)
def test_the_command_exits_2_on_bad_input(settings, monkeypatch, capsys, argv, says):
    monkeypatch.setenv("COLECIONADOR_DATABASE_URL", settings.db_url)
    with pytest.raises(SystemExit) as exit:
        main(["compare", *argv])
    assert exit.value.code == 2 and says in capsys.readouterr().err


def test_a_database_that_is_away_is_503(tmp_path):
    away = Settings(
        home=tmp_path / "home",
        database_url=SecretStr("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere"),
    )
    got = TestClient(create_app(away)).get("/compare?jobs=1,2")
    assert got.status_code == 503 and got.headers["retry-after"] == "5", got.text
