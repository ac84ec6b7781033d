"""Counters and histograms that live in one process: each model's Serve replicas (predict
calls, images, latency) and the ingress actor (reconciler passes and what they did).

They are recorded with Ray's metrics API (``ray.util.metrics``), the way Ray Serve
records its own: each Ray worker reports to its node's metrics agent, which exports
them on the node's metrics port (``ray start --metrics-export-port``) as ``ray_<name>``
(counters with ``_total``, histograms with ``_bucket`` / ``_sum`` / ``_count``), with
Ray's labels (``WorkerId``, ``NodeAddress``, ``SessionName``, ``Version``: Ray's) beside
ours, hence ``model_version`` for the model's. Ray re-records a histogram's observations
at their buckets' midpoints, so ``_sum`` is approximate; the buckets are exact. Prometheus
scrapes every node (Ray writes the targets to ``/tmp/ray/prom_metrics_service_discovery.json``
on the head); ``sum by (model)`` over them adds the replicas up. Outside a Ray worker
(a unit test, ``colecionador ingress`` in a plain process) the calls record nothing.

Recording never raises: a metric is not worth a failed predict or a skipped pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger("colecionador.metrics")

RAY_PREFIX = "ray_"  # Ray's metrics agent names every application metric ray_<name>
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RECONCILER_ACTIONS = ("submitted", "resubmitted", "failed", "over_limit")


@dataclass(frozen=True)
class Instrument:
    name: str
    kind: Literal["counter", "histogram"]
    doc: str
    tags: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()

    def exported(self) -> tuple[str, ...]:
        """The sample names Ray's metrics agent exports this instrument under."""
        base = RAY_PREFIX + self.name
        if self.kind == "counter":
            return (base + "_total",)
        return (base + "_bucket", base + "_sum", base + "_count")


PASSES = Instrument("colecionador_reconciler_passes", "counter", "Reconciler passes that ended.")
ACTIONS = Instrument(
    "colecionador_reconciler_actions",
    "counter",
    "Jobs a reconciler pass acted on: submitted, resubmitted, failed, over_limit.",
    ("action",),
)
PASS_SECONDS = Instrument(
    "colecionador_reconciler_pass_seconds",
    "histogram",
    "How long a reconciler pass took.",
    (),
    PASS_BUCKETS,
)
PREDICT_REQUESTS = Instrument(
    "colecionador_predict_requests",
    "counter",
    "Predict calls a model's replica answered, by model, model_version and HTTP code.",
    ("model", "model_version", "code"),
)
PREDICTIONS = Instrument(
    "colecionador_predictions",
    "counter",
    "Images a model's replica predicted, by model and model_version.",
    ("model", "model_version"),
)
PREDICT_SECONDS = Instrument(
    "colecionador_predict_latency_seconds",
    "histogram",
    "A predict call in the model's replica, batching wait included, by model and model_version.",
    ("model", "model_version"),
    LATENCY_BUCKETS,
)
HARD_CASES = Instrument(
    "colecionador_hard_cases",
    "counter",
    "Answered images a model's replica kept as hard cases (outcome kept: reason "
    "low_confidence or sampled), dropped (queue_full, store, too_large) or pruned.",
    ("model", "outcome", "reason"),
)
INSTRUMENTS = (
    PASSES,
    ACTIONS,
    PASS_SECONDS,
    PREDICT_REQUESTS,
    PREDICTIONS,
    PREDICT_SECONDS,
    HARD_CASES,
)

_made: dict[str, Any] = {}


def _metric(inst: Instrument) -> Any:
    """The process's Ray metric for ``inst``, made on first use."""
    if inst.name not in _made:
        from ray.util import metrics

        if inst.kind == "counter":
            _made[inst.name] = metrics.Counter(inst.name, inst.doc, tag_keys=inst.tags)
        else:
            _made[inst.name] = metrics.Histogram(
                inst.name, inst.doc, boundaries=list(inst.boundaries), tag_keys=inst.tags
            )
    return _made[inst.name]


def _record(inst: Instrument, value: float, **tags: str) -> None:
    try:
        m = _metric(inst)
        if inst.kind == "counter":
            if value > 0:
                m.inc(value, tags=tags or None)
        else:
            m.observe(value, tags=tags or None)
    except Exception as e:  # noqa: BLE001 - never fail the caller for a metric
        log.debug("metric %s not recorded: %s", inst.name, e)


def reconciler_pass(before: dict[str, int], after: dict[str, int], seconds: float) -> None:
    """One pass ended: its duration and what it did (the stats' growth since ``before``)."""
    _record(PASSES, 1)
    _record(PASS_SECONDS, seconds)
    for action in RECONCILER_ACTIONS:
        _record(ACTIONS, after.get(action, 0) - before.get(action, 0), action=action)


def predict_answered(
    model: str, version: int | None, code: int, images: int, seconds: float
) -> None:
    """A predict call answered ``code`` by ``version`` after ``seconds``; ``images``
    were predicted when it succeeded."""
    v = "none" if version is None else str(version)
    _record(PREDICT_REQUESTS, 1, model=model, model_version=v, code=str(code))
    _record(PREDICT_SECONDS, seconds, model=model, model_version=v)
    if code == 200:
        _record(PREDICTIONS, images, model=model, model_version=v)


def hard_cases(model: str, outcome: str, reason: str, n: int = 1) -> None:
    """``n`` hard cases of ``model`` kept, dropped or pruned, and why
    (services/registry/hard_cases.py)."""
    _record(HARD_CASES, n, model=model, outcome=outcome, reason=reason)
