"""Compare runs: what differs between two to eight jobs, side by side.

``compare(runs)`` is pure: it takes each job's facts as typed ``Run`` objects (read from
the database and the store by services/registry/compare_inputs.py) and returns a
``Comparison``: the hyperparameters that differ (and only those), the test metrics with the
best marked, the per-class figures, the gate's rules, the data sets (same test split?),
every job's epoch curves and, for a tune job, every config's fold means. The HTTP route
(``GET /compare``), the page (``/ui/compare``) and ``colecionador compare`` all use it.

A figure a job does not have (a failed job has no version, an older one no per-class
figures, the store could not be read) is ``None`` in its column, never a guess; what
could not be read is listed in ``missing``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from services.intake.request import MAX_INT
from services.statuses import GateStatus

MIN_JOBS, MAX_JOBS = 2, 8
MAX_JOB_ID = MAX_INT  # PostgreSQL integer columns


def _finite(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


Num = Annotated[float | None, AfterValidator(_finite)]


def _distinct(ids: list[int]) -> list[int]:
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(f"job {', '.join(map(str, twice))} named twice")
    return ids


JobIds = Annotated[
    list[Annotated[int, Field(ge=1, le=MAX_JOB_ID)]],
    Field(min_length=MIN_JOBS, max_length=MAX_JOBS),
    AfterValidator(_distinct),
]
"""The jobs to compare: 2 to 8 distinct ids, in the order given (columns follow it)."""


# ------------------------------------------------------------------------ inputs
class Epoch(BaseModel):
    epoch: int
    phase: int
    loss: Num = None
    accuracy: Num = None
    val_loss: Num = None
    val_accuracy: Num = None
    lr: Num = None


class GateRule(BaseModel):
    metric: str
    threshold: float
    value: Num = None
    passed: bool
    op: Literal[">", "<"] = ">"


class ClassFigures(BaseModel):
    precision: Num = None
    recall: Num = None
    f1: Num = None
    support: int | None = None


class Version(BaseModel):
    """The model version a job made: its row's metrics, the gate, and (from the store's
    metrics.json) the per-class figures and the calibrated ECE."""

    model_name: str
    version: int
    status: GateStatus
    metrics: dict[str, Num]
    per_class: dict[str, ClassFigures] | None = None
    gate: list[GateRule] = []


class DataSet(BaseModel):
    """What a job trained on: the URI, the images per class and its test split's
    digest (``test_split_digest``: same digest, same held-out images and labels)."""

    uri: str
    images: int | None = None
    per_class: dict[str, int] | None = None
    test_images: int | None = None
    test_split_digest: str | None = None
    fingerprint: str | None = None  # the data set version's key, where a version records it


class Trial(BaseModel):
    """One config of a search: the run's metric at its last reported epoch, as mean and
    std over folds, and each fold's own figure there."""

    index: int
    rank: int | None = None
    status: str
    config: dict[str, Any]
    stopped_at: int
    mean: Num = None
    std: Num = None
    folds: list[Num] = []


class Tuning(BaseModel):
    run_id: int
    status: str
    metric: str
    mode: Literal["min", "max"]
    k_folds: int
    best_index: int | None = None
    trials: list[Trial]


class Run(BaseModel):
    """Everything compared about one job."""

    job_id: int
    batch_id: str
    model_name: str
    mode: str
    status: str
    error: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    training_time_s: Num = None
    accuracy: Num = None  # the job's own (a job without a version still has it)
    hyperparameters: dict[str, Any]
    epochs: list[Epoch] = []
    version: Version | None = None
    data: DataSet
    tuning: Tuning | None = None
    missing: list[str] = []  # what could not be read for it, e.g. "metrics.json"


# ------------------------------------------------------------------------ outputs
class RunHead(BaseModel):
    job_id: int
    batch_id: str
    model_name: str
    mode: str
    status: str
    error: str | None = None
    version: int | None = None
    verdict: GateStatus | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    training_time_s: Num = None
    epochs: int


class Differing(BaseModel):
    name: str
    values: list[Any] = Field(description="one per job; null where absent")
    absent: list[int] = Field(description="the jobs that have no value for it")


class MetricLine(BaseModel):
    name: str
    values: list[Num]
    higher_is_better: bool
    best: list[int] = Field(description="the jobs with the best value (two or more known)")


class ClassLine(BaseModel):
    name: str
    support: list[int | None]
    precision: list[Num]
    recall: list[Num]
    f1: list[Num]


class GateLine(BaseModel):
    metric: str
    op: Literal[">", "<"]
    thresholds: list[float | None]
    values: list[Num]
    passed: list[bool | None]


class DataComparison(BaseModel):
    sets: list[DataSet]
    same_uri: bool
    same_classes: bool | None = Field(description="null: a job's classes are not known")
    same_test_split: bool | None = Field(description="null: a job's test split is not known")


class TuningOut(Tuning):
    job_id: int


class Comparison(BaseModel):
    jobs: list[int]
    runs: list[RunHead]
    hyperparameters: list[Differing] = Field(description="only the ones that differ")
    same_hyperparameters: int = Field(description="how many are the same in every job")
    metrics: list[MetricLine]
    per_class: list[ClassLine]
    gate: list[GateLine]
    data: DataComparison
    curves: list[list[Epoch]] = Field(description="each job's epochs, in the jobs' order")
    tuning: list[TuningOut]
    missing: list[str]


# ------------------------------------------------------------------------ compare
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "ece")
LOWER_IS_BETTER = frozenset({"ece"})


def _norm(v: Any) -> Any:
    """A value as compared: an integral float equals its int (1.0 and 1), a bool does
    not (true and 1 differ), containers element by element."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_norm(x) for x in v]
    return v


def _key(v: Any) -> str:
    return json.dumps(_norm(v), sort_keys=True, default=str)


def differing(runs: Sequence[Run]) -> tuple[list[Differing], int]:
    """The hyperparameters whose value is not the same in every job (absent counts as a
    value of its own), by name; and how many are the same everywhere."""
    names = sorted({k for r in runs for k in r.hyperparameters})
    out = []
    for name in names:
        have = [name in r.hyperparameters for r in runs]
        values = [r.hyperparameters.get(name) for r in runs]
        if all(have) and len({_key(v) for v in values}) == 1:
            continue
        absent = [r.job_id for r, h in zip(runs, have) if not h]
        out.append(Differing(name=name, values=values, absent=absent))
    return out, len(names) - len(out)


def _best(ids: Sequence[int], values: Sequence[float | None], higher: bool) -> list[int]:
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return []
    top = max(known) if higher else min(known)
    return [i for i, v in zip(ids, values) if v is not None and math.isclose(v, top)]


def metric_lines(runs: Sequence[Run]) -> list[MetricLine]:
    """The test metrics of each job's version (a job without one: its accuracy only), in
    METRICS order, then any other its version has; a metric no job has is left out."""
    ids = [r.job_id for r in runs]

    def value(r: Run, name: str) -> float | None:
        if r.version is not None:
            return r.version.metrics.get(name)
        return r.accuracy if name == "accuracy" else None

    extra = sorted({k for r in runs if r.version for k in r.version.metrics} - set(METRICS))
    lines = []
    for name in (*METRICS, *extra):
        values = [value(r, name) for r in runs]
        if all(v is None for v in values):
            continue
        higher = name not in LOWER_IS_BETTER
        lines.append(
            MetricLine(
                name=name, values=values, higher_is_better=higher, best=_best(ids, values, higher)
            )
        )
    return lines


def class_lines(runs: Sequence[Run]) -> list[ClassLine]:
    """Per-class test figures, a line per class (every class of any job, in the order
    first seen), a column per job; None where a job has no such class or no figures."""
    names = list(
        dict.fromkeys(
            c for r in runs if r.version and r.version.per_class for c in r.version.per_class
        )
    )

    def fig(r: Run, c: str) -> ClassFigures:
        per = (r.version.per_class if r.version else None) or {}
        return per.get(c) or ClassFigures()

    return [
        ClassLine(
            name=c,
            support=[fig(r, c).support for r in runs],
            precision=[fig(r, c).precision for r in runs],
            recall=[fig(r, c).recall for r in runs],
            f1=[fig(r, c).f1 for r in runs],
        )
        for c in names
    ]


def gate_lines(runs: Sequence[Run]) -> list[GateLine]:
    """Each gate rule (by metric, in the order first seen): every job's threshold,
    value and outcome; None where a job was not judged by it."""
    rules = [{g.metric: g for g in (r.version.gate if r.version else [])} for r in runs]
    metrics = list(dict.fromkeys(m for by in rules for m in by))
    lines = []
    for m in metrics:
        got = [by.get(m) for by in rules]
        op = next(g.op for g in got if g is not None)
        lines.append(
            GateLine(
                metric=m,
                op=op,
                thresholds=[g.threshold if g else None for g in got],
                values=[g.value if g else None for g in got],
                passed=[g.passed if g else None for g in got],
            )
        )
    return lines


def _same(values: Iterable[Any]) -> bool | None:
    values = list(values)
    if any(v is None for v in values):
        return None
    return len({_key(v) for v in values}) == 1


def data_comparison(runs: Sequence[Run]) -> DataComparison:
    sets = [r.data for r in runs]
    return DataComparison(
        sets=sets,
        same_uri=len({d.uri for d in sets}) == 1,
        same_classes=_same(sorted(d.per_class) if d.per_class else None for d in sets),
        same_test_split=_same(d.test_split_digest for d in sets),
    )


def _head(r: Run) -> RunHead:
    return RunHead(
        **r.model_dump(
            include={"job_id", "batch_id", "model_name", "mode", "status", "error"}
            | {"created_at", "finished_at", "training_time_s"}
        ),
        version=r.version.version if r.version else None,
        verdict=r.version.status if r.version else None,
        epochs=len(r.epochs),
    )


def compare(runs: Sequence[Run]) -> Comparison:
    """The comparison of ``runs`` (2 to 8, in column order)."""
    if not MIN_JOBS <= len(runs) <= MAX_JOBS:
        raise ValueError(f"compare takes {MIN_JOBS} to {MAX_JOBS} runs, not {len(runs)}")
    params, same = differing(runs)
    return Comparison(
        jobs=[r.job_id for r in runs],
        runs=[_head(r) for r in runs],
        hyperparameters=params,
        same_hyperparameters=same,
        metrics=metric_lines(runs),
        per_class=class_lines(runs),
        gate=gate_lines(runs),
        data=data_comparison(runs),
        curves=[r.epochs for r in runs],
        tuning=[TuningOut(job_id=r.job_id, **r.tuning.model_dump()) for r in runs if r.tuning],
        missing=[f"job {r.job_id}: {m}" for r in runs for m in r.missing],
    )


def split_digest(test: Iterable[dict[str, Any]]) -> str | None:
    """A digest of a test split as data_profile.json lists it (each image's SHA-1 and
    class), whatever the order: the same images with the same labels, the same digest.
    None for a split that lists no image."""
    rows = sorted(f"{t.get('sha1')}|{t.get('class')}" for t in test)
    if not rows:
        return None
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]
