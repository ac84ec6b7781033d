"""GET /metrics: the Prometheus exposition of what the database and the broker say
(services/metrics/collector.py), behind the read-token rule of every other read
(``Authorization: Bearer <read or write token>`` when ``api_read_token`` is set).

Computed at scrape time and kept nowhere, so any replica answers the same; the database
queries run on the API's database pool, the broker is asked at most every few seconds
(services/metrics/queue.py). A database that does not answer is a 503, which Prometheus
records as ``up == 0``. Process-level metrics (predict latency, reconciler passes) are
not here: Ray's metrics agent exports them (services/metrics/process.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from services.api.deps import READ, DbDep, SettingsDep
from services.metrics.collector import CONTENT_TYPE, render, timed_snapshot
from services.metrics.queue import QueueProbe

router = APIRouter(tags=["metrics"])


def _probe(request: Request, url: str, queue: str) -> QueueProbe:
    """The app's probe of the requests queue (made on the first scrape)."""
    probe = getattr(request.app.state, "queue_probe", None)
    if probe is None or (probe.url, probe.queue) != (url, queue):
        probe = request.app.state.queue_probe = QueueProbe(url, queue)
    return probe


@router.get(
    "/metrics",
    dependencies=[READ],
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format 0.0.4"},
        401: {"description": "a read token is needed"},
        503: {"description": "the database is unavailable"},
    },
)
async def metrics(request: Request, db: DbDep, settings: SettingsDep) -> Response:
    """Jobs by status, the outbox, resubmissions, gate outcomes, running jobs' throughput,
    job / step / epoch duration histograms and the requests queue's depth."""
    snap, took_s = await db(timed_snapshot)
    queue = await _probe(request, settings.amqp_url, settings.requests_queue).read()
    headers = {"Cache-Control": "no-store"}
    return Response(render(snap, queue, took_s), media_type=CONTENT_TYPE, headers=headers)
