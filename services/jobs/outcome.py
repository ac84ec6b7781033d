"""A job's outcome: what a run of the driver decided (or found already decided), and how a
person reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.statuses import JobStatus
from services.store.artifacts import (
    MODEL_FILE,
)


@dataclass
class JobOutcome:
    job_id: int
    status: str  # success | failed | cancelled
    verdict: str | None = None  # approved | rejected
    version: int | None = None
    error: str | None = None
    metrics: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    event: dict[str, Any] | None = None
    training_time_s: float | None = None
    summary: str | None = None  # a predict job's one line (rows, model, version)
    notes: list[str] = field(default_factory=list)  # ... and what to label next

    def lines(self) -> list[str]:
        """What a person reads: the verdict rule by rule, the metrics, the artifacts."""
        if self.status != JobStatus.SUCCESS:
            return [f"job {self.job_id} {self.status.upper()}: {self.error}"]
        if self.summary is not None:
            artifacts = (f"  {n:<21} {u}" for n, u in self.artifacts.items())
            return [self.summary, *self.notes, *artifacts]
        m = self.metrics or {}
        out = [f"job {self.job_id}: gate {(self.verdict or '').upper()} -> version {self.version}"]
        for rule in (self.gate or {}).get("rules", []):
            mark = "pass" if rule["passed"] else "FAIL"
            out.append(
                f"  {rule['metric']:<9} {rule['value']:.4f} {rule.get('op', '>')} "
                f"{rule['threshold']:.2f}  {mark}"
            )
        out.append(
            f"  f1 {m.get('f1', 0):.4f}  roc_auc {m.get('roc_auc') or float('nan'):.4f}"
            f"  test images {m.get('n')}  training {self.training_time_s or 0:.0f} s"
        )
        if m.get("temperature") is not None:
            out.append(
                f"  ECE {m['ece_uncalibrated']:.4f} -> {m['ece']:.4f} after temperature "
                f"scaling (T = {m['temperature']:.3g}, in model.pt)"
            )
        out += [f"  {name:<21} {uri}" for name, uri in self.artifacts.items()]
        return out


def outcome_from_db(settings: Settings, job_id: int) -> JobOutcome:
    """The outcome a finished (or cancelled) job already has."""
    with session_factory(settings.db_url)() as s:
        job = repo.get_job(s, job_id)
        assert job is not None  # a job that has an outcome has its row
        mv = next(iter(repo.job_versions(s, job_id)), None)
    if mv is None:
        return JobOutcome(job.id, job.status, error=job.error)
    return JobOutcome(
        job.id,
        job.status,
        mv.status,
        mv.version,
        job.error,
        {"accuracy": mv.accuracy, "precision": mv.precision, "recall": mv.recall, "f1": mv.f1},
        mv.gate,
        {MODEL_FILE: mv.model_path},
        training_time_s=job.training_time_s,
    )
