"""The ingress actor is sent what a Serve replica is (services/replica_settings.py): its
settings without their secrets and a fingerprint of each; on a node without one of them,
or with another one, its start fails and ``up`` / ``colecionador ingress`` say what to
set. ``up`` computes the fingerprints once for every thing it starts."""

from __future__ import annotations

import pickle
import traceback
from types import SimpleNamespace
from typing import Any

import pytest
import ray
from ray.exceptions import RayActorError

from services import replica_settings
from services.cli import main
from services.config import Settings
from services.deploy import apps, things
from services.deploy import up as up_module
from services.deploy.options import UpOptions
from services.deploy.things import Line
from services.ingress import actor
from services.replica_settings import ReplicaSettings, SecretNotOnNode, refusal
from tests.unit.test_replica_settings import SECRETS


class FakeActorClass:
    """What ``ray.remote(Ingress)`` would be, without Ray: it keeps what the actor is
    sent and, when told to, starts it here as Ray would on its node, a failed start
    coming back as Ray hands it back (the traceback's text in a RayActorError)."""

    def __init__(self, start: bool = False) -> None:
        self.args: tuple[Any, ...] = ()
        self.start = start

    def options(self, **_kw: Any) -> FakeActorClass:
        return self

    def remote(self, *args: Any) -> FakeActorClass:
        self.args = args
        return self

    @property
    def wait_ready(self) -> SimpleNamespace:
        return SimpleNamespace(remote=self._wait_ready)

    def _wait_ready(self, _timeout: float) -> dict[str, Any]:
        if self.start:
            try:
                actor.Ingress(*self.args)
            except SecretNotOnNode as e:
                text = (
                    "The actor died because of an error raised in its creation task, "
                    "ray::colecionador-ingress:Ingress.__init__() (pid=1, ip=10.0.0.1)\n"
                    '  File "services/ingress/actor.py", line 30, in __init__\n'
                    + "".join(traceback.format_exception_only(e))
                )
                raise RayActorError(None, text, actor_init_failed=True) from None
        return {"running": True}


@pytest.fixture
def fake_ray(monkeypatch) -> FakeActorClass:
    fake = FakeActorClass()
    monkeypatch.setattr(actor, "_make_actor_class", lambda: fake)
    monkeypatch.setattr(actor, "refuse_embedded", lambda *_a: None)
    monkeypatch.setattr(ray, "get", lambda value, **_kw: value)
    return fake


def sender(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", store_url="s3://b/store", workers=3, **SECRETS)


def node_env(monkeypatch, **secrets: str) -> None:
    """The node's environment: these secrets as COLECIONADOR_* variables."""
    for name, value in secrets.items():
        monkeypatch.setenv(f"COLECIONADOR_{name.upper()}", value)


def test_no_secret_travels_in_what_the_ingress_actor_is_sent(tmp_path, fake_ray):
    actor.start_ingress(sender(tmp_path), prefetch=8, deployed_as={"kind": "ingress"})
    sent, prefetch, deployed_as = fake_ray.args
    blob = pickle.dumps(fake_ray.args)
    for value in SECRETS.values():
        for part in (value, value.split("@")[0].rsplit(":", 1)[-1]):  # whole, password
            assert part.encode() not in blob, part
    assert isinstance(sent, ReplicaSettings) and set(sent.fingerprints) == set(SECRETS)
    assert sent.values["workers"] == 3 and (prefetch, deployed_as) == (8, {"kind": "ingress"})


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_an_ingress_on_a_node_without_a_secret_or_with_another_fails_naming_it(
    tmp_path, fake_ray, monkeypatch, name
):
    fake_ray.start = True
    others = {k: v for k, v in SECRETS.items() if k != name}
    node_env(monkeypatch, **others)
    state = "another" if name == "broker_url" else "no"  # the node's default broker: another
    with pytest.raises(SecretNotOnNode, match=f"^node .* has {state} {name}.*: set ") as missing:
        actor.start_ingress(sender(tmp_path))
    assert f"COLECIONADOR_{name.upper()} in its environment" in str(missing.value)
    assert "\n" not in str(missing.value)  # the one line, not Ray's traceback
    other = "ana=x" if name == "api_writers" else "amqp://u:other@h/" if "url" in name else "x"
    node_env(monkeypatch, **{name: other})
    with pytest.raises(SecretNotOnNode, match=f"has another {name} than the deploying"):
        actor.start_ingress(sender(tmp_path))


def test_up_and_the_ingress_command_say_the_refusal_in_one_line(
    tmp_path, fake_ray, monkeypatch, capsys
):
    fake_ray.start = True
    node_env(monkeypatch, **{k: v for k, v in SECRETS.items() if k != "api_token"})
    settings = sender(tmp_path)
    monkeypatch.setattr(things, "_find_ingress", lambda: None)
    line = up_module._do(
        "ingress", lambda: things.ingress_up(settings, UpOptions(), ReplicaSettings.of(settings))
    )
    assert (line.thing, line.action) == ("ingress", "failed")
    assert line.detail.startswith("SecretNotOnNode: node ") and "has no api_token: " in line.detail
    assert "set COLECIONADOR_API_TOKEN in its environment" in line.detail

    import services.jobs.ray_jobs

    def refused(*_a: Any, **_kw: Any) -> None:
        raise SecretNotOnNode("node h has no api_token: set COLECIONADOR_API_TOKEN ...")

    monkeypatch.setattr(services.jobs.ray_jobs, "connect_ray", lambda _s: False)
    monkeypatch.setattr("services.ingress.start_ingress", refused)
    assert main(["ingress"]) == 2
    err = capsys.readouterr().err
    assert err == "colecionador ingress: node h has no api_token: set COLECIONADOR_API_TOKEN ...\n"


def test_a_refusal_is_read_from_rays_error_only_when_the_start_failed_so():
    refused = SecretNotOnNode("node h has no s3_secret_key: set COLECIONADOR_S3_SECRET_KEY")
    text = "creation task, ray::x\n" + "".join(traceback.format_exception_only(refused))
    assert refusal(RayActorError(None, text, actor_init_failed=True)) == str(refused)
    assert refusal(refused) == str(refused)
    assert refusal(RayActorError(None, text, actor_init_failed=False)) is None  # died later
    assert refusal(RayActorError(None, "creation task, ValueError: x", True)) is None


def test_up_fingerprints_the_secrets_once_for_every_thing_it_starts(tmp_path, monkeypatch):
    calls: list[str] = []
    real = replica_settings.fingerprint

    def counted(secret: str, salt: bytes | None = None) -> str:
        calls.append(secret)
        return real(secret, salt)

    monkeypatch.setattr(replica_settings, "fingerprint", counted)
    given: list[ReplicaSettings] = []
    planned: list[Any] = []
    monkeypatch.setattr(things, "database", lambda _s: Line("database", "kept"))
    monkeypatch.setattr(
        things, "ingress_up", lambda _s, _o, sent: given.append(sent) or Line("ingress", "kept")
    )
    monkeypatch.setattr(things, "serve_up", lambda _o, _st: Line("serve", "kept"))
    monkeypatch.setattr(up_module, "serve_state", lambda: None)
    monkeypatch.setattr(apps, "served_models", lambda _s, _a: ["m1", "m2", "m3"])
    monkeypatch.setattr(apps, "deploy", lambda p: planned.extend(p) or [x.line for x in p])
    monkeypatch.setattr(apps, "remove", lambda _names: [])
    monkeypatch.setattr("services.jobs.ray_jobs.alive_nodes", lambda: 1)

    lines = up_module.up(sender(tmp_path), UpOptions(), say=lambda _line: None)
    assert [line.action for line in lines] == ["kept", "kept", "kept"] + ["created"] * 4
    assert len(planned) == 4  # the API and three predict applications
    (sent,) = given
    assert len(calls) == len(sent.fingerprints) == len(SECRETS)  # once, not once a thing
    for p in planned:  # each application's replicas are sent that same one
        assert p.target.target._bound_deployment.init_args[0] is sent
