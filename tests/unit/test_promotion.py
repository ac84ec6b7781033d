"""Aliases and promotion (services/registry/promotion.py, POST /models/{name}/versions/{v}/promote)
on an embedded SQLite database: the gate's automatic production, manual mode, the override
of a rejected version (reason required, audited), 409 for a move to where it points, the
ModelPromoted event staged with every move, and the status page's alias tables."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.api import create_app
from services.config import Settings
from services.db import repo
from services.db.models import Event
from services.db.session import prepare_database, session_factory
from services.registry import promotion
from tests import factories

TOKEN = "w-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANA = {"Authorization": "Bearer ana-token"}  # a named writer (COLECIONADOR_API_WRITERS)
MODEL = "digits"


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(
        home=tmp_path / "home",
        database_url=SecretStr(f"sqlite:///{tmp_path / 'p.db'}"),
        api_token=SecretStr(TOKEN),
        api_writers=SecretStr("ana=ana-token, bob=bob-token"),
        publish_events=True,
        broker_url=SecretStr("amqp://guest:guest@127.0.0.1:1/"),  # never answers
    )
    prepare_database(s)
    return s


def add_version(settings: Settings, status: str, *, auto: bool = True) -> int:
    """A job and its version, committed as the job driver does (auto-promotion included)."""
    with session_factory(settings.db_url)() as s:
        job, mv = factories.add_version(s, MODEL, status)
        if status == "approved" and auto:
            promotion.auto_promote(s, settings, MODEL, mv.version, job.id)
        s.commit()
        return mv.version


def events(settings: Settings) -> list[Event]:
    with session_factory(settings.db_url)() as s:
        return list(s.query(Event).filter(Event.kind == "ModelPromoted").order_by(Event.created_at))


@pytest.fixture
def client(settings):
    return TestClient(create_app(settings))


def test_an_approved_version_becomes_production_and_a_rejected_one_does_not(settings):
    assert add_version(settings, "approved") == 1
    assert add_version(settings, "rejected") == 2
    with session_factory(settings.db_url)() as s:
        assert repo.version_for_alias(s, MODEL, "production") == 1
        (move,) = repo.alias_moves(s, MODEL)
        assert (move.from_version, move.to_version, move.moved_by) == (None, 1, "gate")
        assert move.overrode_gate is False and "job 1" in move.reason
    (ev,) = events(settings)
    assert ev.queue == settings.promotions_queue and ev.kind == "ModelPromoted" and ev.job_id == 1
    assert ev.body["alias"] == "production" and ev.body["version"] == 1
    assert ev.body["event_id"] == ev.id


def test_auto_promotion_never_moves_production_back_and_manual_mode_stops_it(settings):
    add_version(settings, "approved")
    add_version(settings, "approved")
    with session_factory(settings.db_url)() as s:
        assert promotion.auto_promote(s, settings, MODEL, 1, 1) is None  # older: no move
        s.commit()
        assert repo.version_for_alias(s, MODEL, "production") == 2
        repo.set_promotion_mode(s, MODEL, "manual")
    add_version(settings, "approved")
    with session_factory(settings.db_url)() as s:
        assert repo.version_for_alias(s, MODEL, "production") == 2
        assert [m.to_version for m in repo.alias_moves(s, MODEL)] == [2, 1]


def test_promote_route_moves_an_alias_records_and_stages_the_event(settings, client):
    add_version(settings, "approved")
    add_version(settings, "approved", auto=False)
    r = client.post(
        f"/models/{MODEL}/versions/2/promote",
        json={"alias": "staging", "reason": "try it"},
        headers=ANA,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["alias"], body["version"], body["from_version"], body["by"]) == (
        "staging",
        2,
        None,
        "ana",
    )
    again = client.post(
        f"/models/{MODEL}/versions/2/promote", json={"alias": "staging"}, headers=AUTH
    )
    assert again.status_code == 409 and "already points at version 2" in again.json()["detail"]
    r = client.post(f"/models/{MODEL}/versions/2/promote", json={}, headers=AUTH)
    assert r.status_code == 200 and r.json()["from_version"] == 1  # production: 1 -> 2
    aliases = client.get(f"/models/{MODEL}/aliases").json()
    assert aliases["promotion"] == "auto"
    assert {a["alias"]: a["version"] for a in aliases["aliases"]} == {
        "production": 2,
        "staging": 2,
    }
    assert [(m["alias"], m["to_version"]) for m in aliases["history"]] == [
        ("production", 2),
        ("staging", 2),
        ("production", 1),
    ]
    assert body["event_id"] in [e.id for e in events(settings)]
    assert len(events(settings)) == 3  # the gate's and the two moves: each with its event


def test_over_a_rejected_version_a_reason_is_required_and_the_override_is_audited(settings, client):
    add_version(settings, "approved")
    add_version(settings, "rejected")
    r = client.post(f"/models/{MODEL}/versions/2/promote", json={"reason": "  "}, headers=AUTH)
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "reason"] and "rejected" in err["msg"]
    with session_factory(settings.db_url)() as s:
        assert repo.version_for_alias(s, MODEL, "production") == 1  # nothing written
        assert len(repo.alias_moves(s, MODEL)) == 1
    r = client.post(
        f"/models/{MODEL}/versions/2/promote",
        json={"reason": "hotfix: v1 misreads 7s"},
        headers=ANA,
    )
    assert r.status_code == 200 and r.json()["overrode_gate"] is True
    with session_factory(settings.db_url)() as s:
        move = repo.alias_moves(s, MODEL)[0]
        assert (move.overrode_gate, move.moved_by, move.reason) == (
            True,
            "ana",
            "hotfix: v1 misreads 7s",
        )
        assert (move.from_version, move.to_version) == (1, 2)
    page = client.get("/").text
    assert '<table id="aliases">' in page and '<table id="alias-history">' in page
    assert "hotfix: v1 misreads 7s" in page and "overrode gate" in page


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/models/digits/versions/9/promote", {}, AUTH, 404),
        ("/models/nope/versions/1/promote", {}, AUTH, 404),
        ("/models/digits/versions/1/promote", {}, {}, 401),
        ("/models/digits/versions/1/promote", {}, {"Authorization": "Bearer bad"}, 403),
        ("/models/digits/versions/1/promote", {"alias": "Prod uction"}, AUTH, 422),
        ("/models/digits/versions/1/promote", {"colour": "red"}, AUTH, 422),
    ],
)
def test_promote_refusals(settings, client, path, body, headers, status):
    add_version(settings, "approved", auto=False)
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == status, r.text
    with session_factory(settings.db_url)() as s:
        assert repo.alias_moves(s, MODEL) == []


def test_manual_mode_through_the_api(settings, client):
    r = client.put(f"/models/{MODEL}/promotion", json={"mode": "manual"}, headers=AUTH)
    assert r.status_code == 200
    add_version(settings, "approved")
    aliases = client.get(f"/models/{MODEL}/aliases").json()
    assert aliases["promotion"] == "manual" and aliases["aliases"] == []
    assert client.get("/models/none/aliases").status_code == 404


def test_migration_0005_upgrades_downgrades_and_matches_the_models(tmp_path):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine, inspect

    from services.db.models import Base
    from services.db.session import alembic_config

    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg, engine = alembic_config(url), create_engine(url)
    tables = {"model_aliases", "alias_moves", "model_promotion"}
    try:
        command.upgrade(cfg, "head")
        assert tables <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
        command.downgrade(cfg, "0004")
        assert not tables & set(inspect(engine).get_table_names())
        command.upgrade(cfg, "head")
        assert tables <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_cli_promote_exits_2_without_a_reason_over_a_rejected_version(
    settings, monkeypatch, capsys
):
    from services.cli import main

    monkeypatch.setenv("COLECIONADOR_DATABASE_URL", settings.db_url)
    monkeypatch.setenv("COLECIONADOR_PUBLISH_EVENTS", "false")
    add_version(settings, "approved")
    add_version(settings, "rejected")
    with pytest.raises(SystemExit) as exit_:
        main(["promote", MODEL, "2"])
    assert exit_.value.code == 2 and "needs a reason" in capsys.readouterr().err
    assert main(["promote", MODEL, "2", "--reason", "urgent", "--by", "ana"]) == 0
    assert "digits production -> v2 (was v1) over the gate's rejection" in capsys.readouterr().out
    assert main(["promote", MODEL, "--mode", "manual"]) == 0
    with session_factory(settings.db_url)() as s:
        assert repo.version_for_alias(s, MODEL, "production") == 2
        assert repo.promotion_mode(s, MODEL) == "manual"


def test_who_moved_an_alias_is_the_tokens_identity_never_the_body(settings, client):
    add_version(settings, "approved", auto=False)
    r = client.post(f"/models/{MODEL}/versions/1/promote", json={"by": "gate"}, headers=ANA)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "by"]
    r = client.post(f"/models/{MODEL}/versions/1/promote", json={}, headers=AUTH)
    assert r.status_code == 200 and r.json()["by"] == "api"  # the unnamed api_token
    r = client.post(
        f"/models/{MODEL}/versions/1/promote",
        json={"alias": "staging"},
        headers={"Authorization": "Bearer bob-token"},
    )
    assert r.status_code == 200 and r.json()["by"] == "bob"
    bad = {"Authorization": "Bearer ana-token-x"}
    r = client.post(f"/models/{MODEL}/versions/1/promote", json={"alias": "x"}, headers=bad)
    assert r.status_code == 403


@pytest.mark.parametrize("writers", ["ana", "=tok", "gate=tok", "a b=tok"])
def test_a_bad_writer_entry_stops_the_settings(tmp_path, writers):
    with pytest.raises(ValueError, match="api_writers"):
        Settings(home=tmp_path, api_writers=writers)
