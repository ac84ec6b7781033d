"""The database's figures as Prometheus metric families, computed at scrape time.

``DatabaseCollector`` turns one ``services.db.stats.Snapshot`` (and, when known, the
requests queue's depth) into gauges, counters and histograms; ``render`` writes them in
the text exposition format. Nothing is kept between scrapes, so every API replica, asked
at the same moment, answers the same numbers: the database's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from services.db.stats import Histogram, Snapshot, snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class QueueReading:
    """The broker's answer for the requests queue: ``ready`` messages (None: the broker
    could not be asked) and how long asking took."""

    queue: str
    ready: int | None
    seconds: float


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add(family: HistogramMetricFamily, values: list[str], h: Histogram) -> None:
    buckets = [(repr(float(b)), float(n)) for b, n in h.buckets]
    family.add_metric(values, [*buckets, ("+Inf", float(h.count))], h.total)


class DatabaseCollector(Collector):
    """One scrape's metric families, from a snapshot taken for it."""

    def __init__(self, snap: Snapshot, queue: QueueReading | None = None, took_s: float = 0.0):
        self.snap, self.queue, self.took_s = snap, queue, took_s

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from self._outbox()
        yield from self._running()
        yield from self._durations()
        yield from self._queue()
        took = GaugeMetricFamily(
            "colecionador_metrics_database_seconds",
            "How long this scrape's database queries took.",
        )
        took.add_metric([], self.took_s)
        yield took

    def _jobs(self) -> Iterator[Metric]:
        snap = self.snap
        jobs = GaugeMetricFamily("colecionador_jobs", "Jobs in each status.", labels=["status"])
        for status, n in snap.jobs_by_status.items():
            jobs.add_metric([status], n)
        yield jobs
        resub = CounterMetricFamily(
            "colecionador_job_resubmissions",
            "Attempts after a job's first: Ray jobs the reconciler resubmitted after a "
            "driver died (job_attempts rows).",
        )
        resub.add_metric([], snap.resubmissions)
        yield resub
        gate = CounterMetricFamily(
            "colecionador_gate_outcomes",
            "Versions the quality gate judged, by model and outcome (approved | rejected).",
            labels=["model", "outcome"],
        )
        for (model, outcome), n in sorted(snap.gate_outcomes.items()):
            gate.add_metric([model, outcome], n)
        yield gate

    def _outbox(self) -> Iterator[Metric]:
        snap = self.snap
        backlog = GaugeMetricFamily(
            "colecionador_outbox_backlog", "Events in the outbox not yet published."
        )
        backlog.add_metric([], snap.outbox_backlog)
        yield backlog
        age = GaugeMetricFamily(
            "colecionador_outbox_oldest_age_seconds",
            "Age of the oldest unpublished event (0 when none is waiting).",
        )
        oldest = snap.outbox_oldest
        age.add_metric([], 0.0 if oldest is None else (snap.taken_at - oldest).total_seconds())
        yield age

    def _running(self) -> Iterator[Metric]:
        labels = ["job_id", "model"]
        epoch = GaugeMetricFamily(
            "colecionador_running_job_epoch",
            "The latest epoch a running job recorded (0: none yet).",
            labels=labels,
        )
        rate = GaugeMetricFamily(
            "colecionador_running_job_images_per_second",
            "Training images per second in a running job's latest epoch (all workers).",
            labels=labels,
        )
        wait = GaugeMetricFamily(
            "colecionador_running_job_data_wait_ratio",
            "Share of a running job's latest epoch spent waiting for the next batch.",
            labels=labels,
        )
        for r in self.snap.running:
            values = [str(r.job_id), r.model_name]
            epoch.add_metric(values, r.epoch or 0)
            if r.images_per_s is not None and math.isfinite(r.images_per_s):
                rate.add_metric(values, r.images_per_s)
            if r.data_wait is not None and math.isfinite(r.data_wait):
                wait.add_metric(values, r.data_wait)
        yield from (epoch, rate, wait)

    def _durations(self) -> Iterator[Metric]:
        snap = self.snap
        job = _histogram(
            "colecionador_job_duration_seconds",
            "Ended jobs, from their start to their end, by final status.",
            ["status"],
        )
        for status, h in sorted(snap.job_seconds.items()):
            _add(job, [status], h)
        yield job
        steps = _histogram(
            "colecionador_job_step_duration_seconds",
            "Time in a step of a job: queued (recorded to started), training (the train "
            "step, all phases).",
            ["step"],
        )
        _add(steps, ["queued"], snap.queue_seconds)
        _add(steps, ["training"], snap.training_seconds)
        yield steps
        epochs = _histogram(
            "colecionador_epoch_duration_seconds",
            "Recorded epochs (train and validation), by phase.",
            ["phase"],
        )
        for phase, h in sorted(snap.epoch_seconds.items()):
            _add(epochs, [str(phase)], h)
        yield epochs

    def _queue(self) -> Iterator[Metric]:
        if self.queue is None:
            return
        up = GaugeMetricFamily(
            "colecionador_broker_up", "1 if the broker answered this scrape, else 0."
        )
        up.add_metric([], 0 if self.queue.ready is None else 1)
        yield up
        ready = GaugeMetricFamily(
            "colecionador_requests_queue_ready",
            "Messages ready in the requests queue: requests no ingress has taken yet.",
            labels=["queue"],
        )
        if self.queue.ready is not None:
            ready.add_metric([self.queue.queue], self.queue.ready)
        yield ready


def render(snap: Snapshot, queue: QueueReading | None = None, took_s: float = 0.0) -> bytes:
    """The exposition text of one scrape (a registry of its own: nothing kept)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(snap, queue, took_s))
    return generate_latest(registry)


def timed_snapshot(s: Session) -> tuple[Snapshot, float]:
    """``stats.snapshot(s)`` and how long it took."""
    t0 = time.perf_counter()
    snap = snapshot(s)
    return snap, time.perf_counter() - t0
