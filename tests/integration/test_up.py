"""`colecionador up` and `down` on the session's cluster (real Ray, Serve, PostgreSQL and
RabbitMQ): up on an empty cluster creates every thing, a model with production gets its
application, another up keeps them all (the same actor, the same replicas), a changed
option replaces its thing only, a changed setting or secret replaces what runs with it,
a removed alias removes its model's application, down removes everything but the
database, and up from the command line brings it all back."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import ray
from pydantic import SecretStr

from services import ingress
from services.db import repo
from services.db.models import ModelAlias
from services.db.session import session_factory
from services.deploy import things
from services.deploy.options import UpOptions
from services.deploy.serve_state import serve_state
from services.deploy.up import _do, down, up
from services.registry.apps import app_name
from services.replica_settings import ReplicaSettings
from tests.conftest import cli_env, give_node
from tests.factories import add_version
from tests.raycluster import free_port

pytestmark = pytest.mark.integration

WRITE = "w-" + uuid.uuid4().hex


def _actions(lines) -> dict[str, str]:
    return {line.thing: line.action for line in lines}


def _actor_id() -> str:
    return ingress.get_ingress()._actor_id.hex()


def _replicas() -> dict[str, tuple[str, ...]]:
    state = serve_state()
    return {} if state is None else {n: a.replica_ids for n, a in state.apps.items()}


def _production(settings, model: str) -> None:
    """Version 1 of ``model``, approved and production, its job ended (the ingress's
    reconciler must find nothing queued). No model.pt: the replica starts and says so."""
    with session_factory(settings.db_url)() as s:
        job, mv = add_version(s, model, "approved")
        repo.finish_job(s, job.id, "success", commit=False, accuracy=0.9)
        repo.move_alias(s, model, "production", mv.version, by="test", reason=None)
        s.commit()


def test_up_creates_keeps_replaces_and_down_removes(
    ray_cluster, own_database, settings_for, queues, tmp_path
):
    requests, events = queues
    model = f"upped-{uuid.uuid4().hex[:6]}"
    options = UpOptions(port=free_port(), reload_s=30, ingress_wait_s=30)
    settings = settings_for(
        own_database,
        requests_queue=requests,
        events_queue=events,
        ray_dashboard_url=ray_cluster.dashboard_url,
        ray_auth_token_path=ray_cluster.token_path,
        api_token=SecretStr(WRITE),
    )
    give_node(ray_cluster, settings)  # the operator's secrets, on every node
    said: list[str] = []

    def say(line) -> None:
        said.append(str(line))

    try:
        # an ingress whose node has another secret than `up`'s fails, saying which
        other = settings.model_copy(update={"api_token": SecretStr("w-not-on-the-node")})
        sent = ReplicaSettings.of(other)
        refused = _do("ingress", lambda: things.ingress_up(other, options, sent))
        assert (refused.action, refused.detail.split(": ")[0]) == ("failed", "SecretNotOnNode")
        assert "has another api_token than the deploying process: set " in refused.detail
        with pytest.raises(ValueError):
            ingress.get_ingress()  # dead, its name free for the up below

        # an empty database and cluster: the schema, then every thing is created
        first = up(settings, options, say=say)
        assert _actions(first) == {
            "database": "created",
            "ingress": "created",
            "serve": "created",
            "api": "created",
        }, said
        assert "consuming " + requests in said[1]
        health = httpx.get(f"http://127.0.0.1:{options.port}/healthz", timeout=10)
        assert health.status_code == 200
        _production(settings, model)

        # the model now has production: its application is created, the rest kept
        second = up(settings, options, say=say)
        assert _actions(second) == {
            "database": "kept",
            "ingress": "kept",
            "serve": "kept",
            "api": "kept",
            app_name(model): "created",
        }
        actor, replicas = _actor_id(), _replicas()
        assert set(replicas) == {"api", app_name(model)} and all(replicas.values())

        # nothing restarted by an up that changes nothing
        again = up(settings, options, say=say)
        assert set(_actions(again).values()) == {"kept"}
        assert (_actor_id(), _replicas()) == (actor, replicas)

        # an option of one thing replaces that thing only
        more = options.model_copy(update={"prefetch": 8})
        assert _actions(up(settings, more, say=say))["ingress"] == "replaced"
        assert _actor_id() != actor and _replicas() == replicas

        # a setting and a secret: what runs with them is replaced, and the lines name
        # what changed, never a value; the model's alias gone, its application goes
        with session_factory(settings.db_url)() as s:
            s.query(ModelAlias).filter(ModelAlias.model_name == model).delete()
            s.commit()
        rotated = "w-" + uuid.uuid4().hex
        changed = settings.model_copy(
            update={"reconcile_interval_s": 7.0, "api_token": SecretStr(rotated)}
        )
        give_node(ray_cluster, changed)  # rotated on every node first, then `up`
        lines = up(changed, more, say=say)
        assert _actions(lines) == {
            "database": "kept",
            "ingress": "replaced",
            "serve": "kept",
            "api": "replaced",
            app_name(model): "removed",
        }
        for line in (lines[1], lines[3]):
            assert "changed: COLECIONADOR_RECONCILE_INTERVAL_S, secrets;" in line.detail, line
        assert not any(rotated in text or WRITE in text for text in said)
        after = _replicas()
        assert set(after) == {"api"} and not set(after["api"]) & set(replicas["api"])

        # down: the ingress stopped cleanly, the applications and Serve gone
        gone = down(say=say)
        assert _actions(gone) == {"ingress": "removed", "api": "removed", "serve": "removed"}
        assert "stopped cleanly" in gone[0].detail
        with pytest.raises(ValueError):
            ingress.get_ingress()
        assert serve_state() is None
        assert _actions(down(say=say)) == {"ingress": "absent", "serve": "absent"}
        # ...and the database as it was
        with session_factory(settings.db_url)() as s:
            assert [v.version for v in repo.versions(s, model)] == [1]

        # `colecionador up` again, from the command line: every thing back, exit 0
        env = cli_env(changed, ray_cluster, rotated, "r-" + uuid.uuid4().hex)
        give_node(ray_cluster, **env)
        cli = Path(sys.executable).with_name("colecionador")
        argv = [str(cli), "up", "--port", str(options.port), "--prefetch", "8"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        printed = done.stdout.splitlines()
        assert [p.split(":")[0] for p in printed] == ["database", "ingress", "serve", "api"]
        assert printed[0].startswith("database: kept"), printed
        assert all(": created (" in p for p in printed[1:]), printed
        assert rotated not in done.stdout + done.stderr
        assert ray.get(ingress.get_ingress().status.remote())["running"]
        assert httpx.get(f"http://127.0.0.1:{options.port}/healthz", timeout=10).status_code == 200
    finally:
        down(say=say)
