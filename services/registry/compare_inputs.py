"""The facts services/registry/compare.py compares, read for each job.

``read_runs(s, ids)`` reads the database only: the job, its effective hyperparameters, its
epochs, the (latest) model version it made with the gate's rules, and its latest tuning
run with every trial. ``with_store(runs, read_json)`` then adds what only the store holds:
the version's per-class figures and calibrated ECE (metrics.json), its data profile
(data_profile.json: images per class, the test split's digest), or, for a job without a
version, its health report's class counts. The two are apart so the API runs each on its
own pool (database calls on the Database's, store reads on threads). A store that cannot
be read leaves those figures ``None`` and names the file in the run's ``missing``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from services.db import repo
from services.db.models import TuningRun
from services.registry.compare import (
    ClassFigures,
    DataSet,
    Epoch,
    GateRule,
    Run,
    Trial,
    Tuning,
    Version,
    split_digest,
)
from services.store.artifacts import (
    DATA_PROFILE_FILE,
    HEALTH_FILE,
    METRICS_FILE,
    report_key,
    version_prefix,
)

ReadJson = Callable[[str], dict[str, Any] | None]
ROW_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


class UnknownJobs(LookupError):
    """Some of the jobs asked for do not exist; ``ids`` names them."""

    def __init__(self, ids: list[int]):
        self.ids = ids
        super().__init__(f"no job {', '.join(map(str, ids))}")


def _version(s: Session, job_id: int) -> Version | None:
    made = list(repo.job_versions(s, job_id))
    if not made:
        return None
    mv = max(made, key=lambda v: v.version)
    return Version.model_validate(
        {
            "model_name": mv.model_name,
            "version": mv.version,
            "status": mv.status,  # approved | rejected, checked here
            "metrics": {k: getattr(mv, k) for k in ROW_METRICS},
            "gate": [GateRule(**r) for r in (mv.gate or {}).get("rules", [])],
        }
    )


def _trial(t: Any, metric: str) -> Trial:
    """A tuning_trials row as a Trial: the run's metric at the last reported epoch."""
    last = (t.epochs or [{}])[-1] or {}
    return Trial(
        index=t.trial_index,
        rank=t.rank,
        status=t.status,
        config=t.config or {},
        stopped_at=t.stopped_at,
        mean=getattr(t, f"mean_{metric}", None),
        std=getattr(t, f"std_{metric}", None),
        folds=[f.get(metric) for f in last.get("folds") or []],
    )


def _tuning(s: Session, run: TuningRun | None) -> Tuning | None:
    if run is None:
        return None
    return Tuning(
        run_id=run.id,
        status=run.status,
        metric=run.metric,
        mode="max" if run.mode == "max" else "min",
        k_folds=run.k_folds,
        best_index=run.best_trial_index,
        trials=[_trial(t, run.metric) for t in repo.tuning_trials(s, run.id)],
    )


def job_tuning(s: Session, job_id: int) -> Tuning | None:
    """The job's latest tuning run with every trial, or None (not a tune job)."""
    return _tuning(s, repo.latest_tuning_run(s, job_id))


def read_runs(s: Session, job_ids: Sequence[int]) -> list[Run]:
    """The database's facts of each job, in the order given; UnknownJobs names every id
    that is not a job."""
    jobs = {i: repo.get_job(s, i) for i in job_ids}
    unknown = [i for i, j in jobs.items() if j is None]
    if unknown:
        raise UnknownJobs(unknown)
    runs = []
    for i in job_ids:
        job = jobs[i]
        assert job is not None
        runs.append(
            Run(
                job_id=job.id,
                batch_id=job.batch_id,
                model_name=job.model_name,
                mode=job.mode,
                status=job.status,
                error=job.error,
                created_at=job.created_at,
                finished_at=job.finished_at,
                training_time_s=job.training_time_s,
                accuracy=job.accuracy,
                hyperparameters=repo.hyperparameters(s, job.id),
                epochs=[Epoch(**r) for r in repo.epoch_rows(s, job.id)],
                version=_version(s, job.id),
                data=DataSet(uri=job.dataset_uri, images=job.total_images),
                tuning=job_tuning(s, job.id),
            )
        )
    return runs


def _class_figures(test: dict[str, Any]) -> dict[str, ClassFigures] | None:
    per = test.get("per_class")
    if not isinstance(per, dict):
        return None
    return {c: ClassFigures(**f) for c, f in per.items() if isinstance(f, dict)}


def _with_evaluation(run: Run, read_json: ReadJson) -> Run:
    """metrics.json of the run's version: per-class figures and the calibrated ECE."""
    v = run.version
    if v is None:
        return run
    metrics = read_json(version_prefix(v.model_name, v.version) + METRICS_FILE)
    if metrics is None:
        return run.model_copy(update={"missing": [*run.missing, METRICS_FILE]})
    ece = (metrics.get("calibration") or {}).get("ece_after")
    version = v.model_copy(
        update={
            "per_class": _class_figures(metrics.get("test") or {}),
            "metrics": {**v.metrics, **({"ece": ece} if ece is not None else {})},
        }
    )
    return run.model_copy(update={"version": version})


def _with_data(run: Run, read_json: ReadJson) -> Run:
    """The version's data profile; without one, the job's health report's counts."""
    missing = list(run.missing)
    profile = None
    if run.version is not None:
        key = version_prefix(run.version.model_name, run.version.version) + DATA_PROFILE_FILE
        profile = read_json(key)
        if profile is None:
            missing.append(DATA_PROFILE_FILE)
    source = profile or read_json(report_key(run.job_id, HEALTH_FILE)) or {}
    per_class = source.get("per_class")
    test = (profile or {}).get("test") or []
    data = run.data.model_copy(
        update={
            "images": source.get("images", run.data.images),
            "per_class": per_class if isinstance(per_class, dict) else None,
            "test_images": len(test) if profile else None,
            "test_split_digest": split_digest(test) if profile else None,
            "fingerprint": (profile or {}).get("fingerprint"),
        }
    )
    return run.model_copy(update={"data": data, "missing": missing})


def with_store(runs: Sequence[Run], read_json: ReadJson) -> list[Run]:
    """``runs`` with the store's facts added (``read_json(key)``: a document or None)."""
    return [_with_data(_with_evaluation(r, read_json), read_json) for r in runs]


def load_runs(s: Session, job_ids: Sequence[int], read_json: ReadJson) -> list[Run]:
    """read_runs then with_store, in one go (the CLI)."""
    return with_store(read_runs(s, job_ids), read_json)
