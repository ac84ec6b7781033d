"""The API's load-side pieces without Ray: conditional GETs (caching.py) on a small app,
the deployment's backpressure options, and `colecionador serve`'s scale-out flags."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from fastapi.testclient import TestClient

from services.api.caching import ConditionalGetMiddleware, etag_of, matches
from services.cli import build_parser


def test_if_none_match_compares_weakly_in_a_list_and_takes_a_star():
    tag = etag_of(b"body")
    assert tag.startswith(b'"') and tag.endswith(b'"') and tag != etag_of(b"other")
    assert matches(tag, tag) and matches(b"W/" + tag, tag) and matches(b"*", tag)
    assert matches(b'"a", ' + tag + b', "b"', tag) and not matches(b'"a", "b"', tag)


@pytest.fixture
def client():
    app = FastAPI()
    app.add_middleware(ConditionalGetMiddleware)
    state = {"n": 1}

    @app.get("/n")
    async def n() -> dict:
        return {"n": state["n"]}

    @app.get("/fixed")
    async def fixed() -> Response:
        return Response(b"png", media_type="image/png", headers={"Cache-Control": "max-age=60"})

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404, "no")

    @app.post("/n")
    async def bump() -> dict:
        state["n"] += 1
        return state

    return TestClient(app)


def test_a_read_answers_304_until_it_changes(client):
    first = client.get("/n")
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = client.get("/n", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    assert "content-type" not in again.headers
    posted = client.post("/n", headers={"If-None-Match": "*"})
    assert posted.status_code == 200 and "etag" not in posted.headers
    changed = client.get("/n", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.json() == {"n": 2}
    assert changed.headers["etag"] != tag


def test_a_route_keeps_its_cache_control_and_errors_pass_through(client):
    assert client.get("/fixed").headers["cache-control"] == "max-age=60"
    missing = client.get("/missing", headers={"If-None-Match": "*"})
    assert missing.status_code == 404 and "etag" not in missing.headers


def test_serve_flags_choose_replicas_autoscaling_limits_and_proxies():
    args = build_parser().parse_args(["serve"])
    assert (args.replicas, args.max_replicas, args.proxy_location) == (1, None, "EveryNode")
    assert args.max_ongoing_requests is args.max_queued_requests is args.retry_after is None
    args = build_parser().parse_args(
        [
            "serve",
            "--min-replicas",
            "0",
            "--max-replicas",
            "6",
            "--target-ongoing-requests",
            "3",
            "--max-ongoing-requests",
            "12",
            "--max-queued-requests",
            "-1",
            "--retry-after",
            "2",
            "--proxy-location",
            "HeadOnly",
        ]
    )
    assert (args.min_replicas, args.max_replicas, args.target_ongoing_requests) == (0, 6, 3.0)
    assert (args.max_ongoing_requests, args.max_queued_requests, args.retry_after) == (12, -1, 2)
    assert args.proxy_location == "HeadOnly"
    for bad in (
        ["--replicas", "0"],
        ["--max-ongoing-requests", "0"],
        ["--proxy-location", "Somewhere"],
    ):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", *bad])


def test_the_deployment_sheds_with_503_and_retry_after():
    from services.api.deployment import api_deployment, autoscaling
    from services.config import Settings

    d = api_deployment(
        Settings(database_url="sqlite://"),
        max_ongoing_requests=3,
        max_queued_requests=5,
        retry_after_s=2,
    )
    cfg = d._deployment_config
    assert (cfg.max_ongoing_requests, cfg.max_queued_requests) == (3, 5)
    assert (cfg.backpressure_config.status_code, cfg.backpressure_config.retry_after_s) == (503, 2)
    auto = api_deployment(
        Settings(database_url="sqlite://"), autoscaling_config=autoscaling(1, 4)
    )._deployment_config
    assert auto.autoscaling_config.max_replicas == 4
    assert auto.autoscaling_config.target_ongoing_requests == 4


def test_the_haproxy_ingress_gets_files_and_ports_of_its_own(tmp_path):
    from services.api import haproxy

    short = Path(tempfile.mkdtemp(prefix="h-", dir="/tmp"))
    try:
        env = haproxy.node_env(short / "hap", stats_port=18404, metrics_port=19101)
        assert env[haproxy.ENABLE] == "1" and (short / "hap").is_dir()
    finally:
        shutil.rmtree(short)
    for key in ("CONFIG_FILE_LOC", "SOCKET_PATH", "SERVER_STATE_FILE", "METRICS_SOCKET_PATH"):
        assert env[f"RAY_SERVE_HAPROXY_{key}"].startswith(str(short / "hap")), key
    assert (env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]) == (
        "18404",
        "19101",
    )
    free = haproxy.node_env()  # two Rays on one host never share a folder or a port
    try:
        assert free["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"].startswith("/tmp/hap-")
        ports = {free["RAY_SERVE_HAPROXY_STATS_PORT"], free["RAY_SERVE_HAPROXY_METRICS_PORT"]}
        assert ports & {"8404", "9101"} == set()
    finally:
        haproxy.discard(free)
    assert not Path(free["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]).exists()
    haproxy.discard({})  # not an ingress environment: nothing to remove
    # Ray adds a 56-character node id under the folder; HAProxy's socket paths stop at 97
    with pytest.raises(ValueError, match="too long"):
        haproxy.node_env(tmp_path / ("x" * 40))


def test_serve_picks_haproxy_when_installed_and_says_when_it_cannot(monkeypatch):
    from services.api import haproxy

    assert build_parser().parse_args(["serve"]).ingress == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--ingress", "nginx"])
    monkeypatch.setattr(haproxy, "installed", lambda: True)
    assert haproxy.choose("auto") == haproxy.choose("haproxy") == "haproxy"
    assert haproxy.choose("proxy") == "proxy"
    monkeypatch.setattr(haproxy, "installed", lambda: False)
    assert haproxy.choose("auto") == "proxy"
    with pytest.raises(ValueError, match="pip install 'colecionador\\[haproxy\\]'"):
        haproxy.choose("haproxy")


def test_serve_asked_for_haproxy_without_it_exits_2_before_touching_ray(monkeypatch, capsys):
    import ray

    from services.api import haproxy
    from services.cli import main

    monkeypatch.setattr(haproxy, "installed", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was contacted"))
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--ingress", "haproxy"])
    assert exit_.value.code == 2
    assert "pip install 'colecionador[haproxy]'" in capsys.readouterr().err


def test_a_local_ray_gets_the_ingress_environment_and_a_cluster_never_asks_for_it(
    monkeypatch,
):
    import os

    import ray

    from services.config import Settings
    from services.jobs.ray_jobs import connect_ray

    calls: list[tuple[str, str | None]] = []

    def init(address=None, **_kw):  # no cluster answers "auto"; a local start succeeds
        calls.append((str(address), os.environ.get("X_INGRESS")))
        if address == "auto":
            raise ConnectionError("no cluster")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.delenv("X_INGRESS", raising=False)
    asked: list[int] = []

    def env() -> dict[str, str]:
        asked.append(1)
        return {"X_INGRESS": "1"}

    settings = Settings(database_url="sqlite://", ray_address=None)
    assert connect_ray(settings, start_local=True, local_env=env) is True
    assert calls == [("auto", None), ("None", "1")]  # set before the local Ray starts
    monkeypatch.delenv("X_INGRESS")
    monkeypatch.setattr(ray, "init", lambda **kw: None)  # a cluster answers
    asked.clear()
    assert connect_ray(settings, start_local=True, local_env=env) is False
    assert asked == [] and "X_INGRESS" not in os.environ
