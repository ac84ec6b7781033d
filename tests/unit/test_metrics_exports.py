"""What /metrics's neighbours promise: every metric the Grafana dashboard queries is
exported (by the API's collector or, named by Ray's rule, by Ray's metrics agent); the
process-level recorders never raise outside Ray; the requests queue's depth from a real
RabbitMQ; migration 0009 matches the models."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.db.stats import Histogram, RunningJob, Snapshot
from services.events import broker
from services.metrics import process
from services.metrics.collector import QueueReading, render
from services.metrics.queue import QueueProbe
from tests.amqp import delete_queues
from tests.conftest import AMQP_URL, SESSION

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "colecionador.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels, ranges)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        if e[m.end() :].lstrip().startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def full_snapshot() -> Snapshot:
    """A snapshot in which every family has samples."""
    h = Histogram(((1.0, 1), (10.0, 2)), 2, 5.5)
    now = datetime.now(UTC)
    return Snapshot(
        taken_at=now,
        jobs_by_status={"queued": 1, "training": 1},
        outbox_backlog=1,
        outbox_oldest=now - timedelta(seconds=3),
        resubmissions=1,
        gate_outcomes={("m", "approved"): 1},
        running=[RunningJob(1, "m", 2, 100.0, 0.1)],
        job_seconds={"success": h},
        queue_seconds=h,
        training_seconds=h,
        epoch_seconds={1: h},
    )


def exported() -> set[str]:
    text = render(full_snapshot(), QueueReading("training.requests", 0, 0.0), 0.01).decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return names | {n for inst in process.INSTRUMENTS for n in inst.exported()}


def test_the_promql_reader_finds_metrics_not_functions_or_labels():
    expr = (
        'histogram_quantile(0.9, sum by (le, model) (rate(x_bucket{code!="200"}[5m]))) * 60'
        " + max(increase(y_total[1h])) / on (job) z"
    )
    assert metric_names(expr) == {"x_bucket", "y_total", "z"}


def test_every_dashboard_query_names_an_exported_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        t["expr"]
        for p in dashboard["panels"]
        if p["type"] != "row"
        for t in p["targets"]
        if "expr" in t
    ]
    assert len(exprs) >= 15
    have = exported()
    for expr in exprs:
        names = metric_names(expr)
        assert names and names <= have, (expr, names - have)
    used = set().union(*(metric_names(e) for e in exprs))
    # every instrument of a Serve replica or the ingress has a panel
    assert {inst.exported()[0] for inst in process.INSTRUMENTS} <= used
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if p["type"] != "row"} == {
        "${DS_PROMETHEUS}"
    }


def test_ray_names_follow_the_agents_rule():
    assert process.PASSES.exported() == ("ray_colecionador_reconciler_passes_total",)
    assert process.PREDICT_SECONDS.exported() == (
        "ray_colecionador_predict_latency_seconds_bucket",
        "ray_colecionador_predict_latency_seconds_sum",
        "ray_colecionador_predict_latency_seconds_count",
    )


def test_the_recorders_never_raise_outside_ray():
    before = {"passes": 0, "submitted": 1, "resubmitted": 0, "failed": 2, "over_limit": 0}
    after = {**before, "submitted": 3, "passes": 1}
    process.reconciler_pass(before, after, 0.2)
    process.predict_answered("m", 3, 200, 4, 0.01)
    process.predict_answered("m", None, 503, 4, 0.01)
    process.hard_cases("m", "dropped", "store")
    assert set(process._made) == {inst.name for inst in process.INSTRUMENTS}


@pytest.fixture
def queue():
    name = f"training.requests.metrics-{SESSION}-{uuid.uuid4().hex[:6]}"
    yield name
    delete_queues(name, name + broker.DLQ_SUFFIX)


def test_the_probe_reads_the_queues_depth_and_keeps_it_for_its_ttl(queue):
    for n in range(3):
        broker.publish_json_sync(AMQP_URL, queue, {"n": n}, declare="requests")

    async def main() -> None:
        kept = QueueProbe(AMQP_URL, queue, ttl_s=60)
        first = await kept.read()
        assert (first.queue, first.ready) == (queue, 3)
        await broker.publish_json(AMQP_URL, queue, {"n": 3}, declare="requests")
        assert await kept.read() is first  # within its ttl: not asked again
        fresh = QueueProbe(AMQP_URL, queue, ttl_s=0)
        assert (await fresh.read()).ready == 4
        never = await QueueProbe(AMQP_URL, queue + ".never-declared").read()
        assert never.ready == 0

    asyncio.run(main())


def test_a_broker_that_is_away_reads_as_none_within_the_timeout():
    async def main() -> QueueReading:
        return await QueueProbe("amqp://guest:guest@127.0.0.1:1/", "q", timeout=1.0).read()

    t0 = time.perf_counter()
    reading = asyncio.run(main())
    assert reading.ready is None and time.perf_counter() - t0 < 3


def test_migration_0009_upgrades_downgrades_and_matches_the_models(tmp_path):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine, inspect

    from services.db.models import Base
    from services.db.session import alembic_config

    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg, engine = alembic_config(url), create_engine(url)

    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("training_metrics")}

    try:
        command.upgrade(cfg, "head")
        assert {"images_per_s", "data_wait"} <= columns()
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
        command.downgrade(cfg, "0008")
        assert not {"images_per_s", "data_wait"} & columns()
        command.upgrade(cfg, "head")
        assert {"images_per_s", "data_wait"} <= columns()
    finally:
        engine.dispose()


def test_a_replicas_predict_calls_are_counted_by_version_and_code(tmp_path, monkeypatch):
    """ModelServer.predict outside Serve, each call answered by its real batch handler
    (``answer``; @serve.batch itself needs a replica): every call reaches the recorder
    with the version that answered, the code and the images; a call that raises, as 500."""
    from benchmarks.predict_latency import MODEL, make_model
    from services.registry import serving
    from services.replica_settings import ReplicaSettings

    settings, _package, png = make_model(tmp_path, "mobilenet_v3_small", 32)
    seen: list[tuple] = []
    monkeypatch.setattr(process, "predict_answered", lambda *a: seen.append(a))
    server = serving.ModelServer(ReplicaSettings.of(settings), MODEL, reload_s=3600)

    async def one_call_batches(call: tuple) -> dict:
        return (await asyncio.to_thread(server.answer, [call]))[0]

    monkeypatch.setattr(server, "_batched", one_call_batches)

    async def main() -> None:
        assert (await server.predict([png, png], 1))["version"] == 1
        assert (await server.predict([b"junk"], 1))["status"] == 422
        monkeypatch.setattr(server, "_batched", None)  # not callable: the call raises
        with pytest.raises(TypeError):
            await server.predict([png], 1)

    asyncio.run(main())
    assert [a[:4] for a in seen] == [
        (MODEL, 1, 200, 2),
        (MODEL, None, 422, 1),
        (MODEL, None, 500, 0),
    ]
    assert all(0 <= a[4] < 60 for a in seen)
