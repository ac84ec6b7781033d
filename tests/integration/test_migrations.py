"""Migrations on a real database: several processes migrating one PostgreSQL database at
once all end at head (the advisory lock serialises them: the API's replicas, the ingress
and every job driver migrate on start), 0006 gives every model versioned before
aliases existed its ``production``, 0007 adds a version's data set fingerprint, 0008
the MLflow outbox and 0009 the epochs' throughput."""

from __future__ import annotations

import multiprocessing
import uuid
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import inspect, text

from services.db import repo
from services.db.session import alembic_config, get_engine, session_factory, upgrade
from tests.conftest import fresh_database
from tests.factories import add_version

pytestmark = pytest.mark.integration


def _migrate(url: str, barrier, errors) -> None:
    try:
        barrier.wait(30)  # all at once
        upgrade(url)
    except Exception as e:  # noqa: BLE001 - reported to the test
        errors.put(f"{type(e).__name__}: {e}")


def test_processes_migrating_at_once_all_reach_head():
    ctx = multiprocessing.get_context("spawn")
    with fresh_database(f"colecionador_migrate_{uuid.uuid4().hex[:8]}") as url:
        barrier, errors = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_migrate, args=(url, barrier, errors)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        found = []
        while not errors.empty():
            found.append(errors.get())
        assert not found, found
        assert [p.exitcode for p in procs] == [0] * 4
        with get_engine(url).connect() as c:
            assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0009"


def _version(s, model: str, n: int, status: str) -> None:
    add_version(s, model, status, n)
    s.commit()


def _old_version(s, model: str, n: int, status: str) -> None:
    """A job and its version written as a release before the newest migrations did (plain
    SQL: the ORM's rows have every column of head)."""
    s.execute(
        text(
            "INSERT INTO training_jobs (batch_id, status, mode, model_name, dataset_uri, "
            "attempts, created_at) VALUES (:b, 'success', 'train', :m, 'x', 0, :t)"
        ),
        {"b": f"{model}-{n}", "m": model, "t": datetime(2026, 12, 1, tzinfo=UTC)},
    )
    s.execute(
        text(
            "INSERT INTO model_versions (model_name, version, job_id, accuracy, precision, "
            "recall, f1, status, gate, model_path, trained_at) SELECT :m, :n, id, 0.9, 0.9, 0.9, "
            "0.9, :s, '{}', :p, created_at FROM training_jobs WHERE batch_id = :b"
        ),
        {
            "m": model,
            "n": n,
            "s": status,
            "p": f"/store/models/{model}/v{n}/model.pt",
            "b": f"{model}-{n}",
        },
    )
    s.commit()


@pytest.fixture(params=["sqlite", "postgres"])
def unmigrated_url(request, tmp_path):
    """A database no migration has touched yet (the session's PostgreSQL one is at head)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'unmigrated.db'}"
        return
    with fresh_database(f"colecionador_0005_{uuid.uuid4().hex[:8]}") as url:
        yield url


def test_0006_sets_production_to_the_latest_approved_version(unmigrated_url):
    db_url = unmigrated_url
    upgrade(db_url, "0005")
    with session_factory(db_url)() as s:
        for n, status in enumerate(["approved", "approved", "rejected"], 1):
            _old_version(s, "old", n, status)  # production: v2 (v3 was rejected)
        _old_version(s, "refused", 1, "rejected")  # nothing approved: no production
        _old_version(s, "manual", 1, "approved")
        repo.set_promotion_mode(s, "manual", "manual")  # manual: left to a person
        _old_version(s, "moved", 1, "approved")
        _old_version(s, "moved", 2, "approved")
        repo.move_alias(s, "moved", "production", 1, by="ana", reason=None)
        s.commit()
    upgrade(db_url)
    with session_factory(db_url)() as s:
        assert repo.version_for_alias(s, "old", "production") == 2
        assert repo.version_for_alias(s, "refused", "production") is None
        assert repo.version_for_alias(s, "manual", "production") is None
        assert repo.version_for_alias(s, "moved", "production") == 1  # a person's choice
        (move,) = repo.alias_moves(s, "old")
        assert (move.from_version, move.to_version, move.moved_by) == (None, 2, "migration")


def _columns(url: str) -> set[str]:
    engine = get_engine(url)
    engine.dispose()  # SQLite: the table was recreated, read its columns afresh
    return {c["name"] for c in inspect(engine).get_columns("model_versions")}


def test_0007_adds_the_dataset_fingerprint_and_takes_it_away(unmigrated_url):
    """Versions from before it keep NULL (their listing was not recorded); a new one
    records it; downgrading to 0006 removes the column and keeps the rows."""
    db_url = unmigrated_url
    upgrade(db_url, "0006")
    assert "dataset_fingerprint" not in _columns(db_url)
    with session_factory(db_url)() as s:
        _old_version(s, "m", 1, "approved")
    upgrade(db_url)
    assert "dataset_fingerprint" in _columns(db_url)
    with session_factory(db_url)() as s:
        assert repo.get_version(s, "m", 1).dataset_fingerprint is None
        job, mv = add_version(s, "m", "approved")
        mv.dataset_fingerprint = "a" * 40
        s.commit()
        assert repo.get_version(s, "m", 2).dataset_fingerprint == "a" * 40
    command.downgrade(alembic_config(db_url), "0006")
    assert "dataset_fingerprint" not in _columns(db_url)
    with get_engine(db_url).connect() as c:
        assert c.execute(text("SELECT count(*) FROM model_versions")).scalar() == 2


def test_a_driver_whose_migration_fails_fails_its_job(tmp_path, settings_for):
    from services.intake.records import create_job
    from services.intake.request import TrainingRequest
    from services.jobs.driver import run_job

    settings = settings_for(f"sqlite:///{tmp_path / 'newer.db'}")
    job, _ = create_job(settings, TrainingRequest(batch_id="b", dataset_uri=str(tmp_path)))
    with get_engine(settings.db_url).begin() as c:  # a database a newer release migrated
        c.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    from services.db import session

    session._migrated.discard(settings.db_url)  # a fresh driver process
    outcome = run_job(job.id, settings, say=lambda _m: None)
    assert outcome.status == "failed" and outcome.error.startswith("database: the schema")
    assert "0099" in outcome.error
    with session_factory(settings.db_url)() as s:
        row = repo.get_job(s, job.id)
        assert (row.status, row.error) == ("failed", outcome.error)


def test_two_first_moves_of_an_alias_are_serialised(pg_url):
    """A's first move of ``staging`` is not committed yet when B moves it too: B waits for
    A's lock (awaited in pg_locks, no sleep), then records the move from A's version."""
    import threading

    from tests.conftest import wait_until

    upgrade(pg_url)
    model = f"race-{uuid.uuid4().hex[:6]}"
    sf = session_factory(pg_url)
    with sf() as s:
        _version(s, model, 1, "approved")
        _version(s, model, 2, "approved")
    a = sf()
    assert repo.move_alias(a, model, "staging", 1, by="ana", reason=None) is not None
    moved: list = []

    def b() -> None:
        with sf() as s:
            moved.append(repo.move_alias(s, model, "staging", 2, by="bob", reason=None))
            s.commit()

    thread = threading.Thread(target=b)
    thread.start()
    with sf() as s:
        wait_until(
            lambda: s.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar(),
            30,
            "B waiting for A's lock",
        )
    a.commit()
    a.close()
    thread.join(30)
    with sf() as s:
        moves = [(m.from_version, m.to_version) for m in reversed(repo.alias_moves(s, model))]
    assert moves == [(None, 1), (1, 2)]
