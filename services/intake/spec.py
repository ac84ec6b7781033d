"""A job's one typed, immutable spec: what the edge validated (services/intake/request.py),
recorded with the job (the row's columns, its hyperparameters rows and its request JSON:
no column of its own) and read back by the driver with one call, ``JobSpec.from_job``.

The driver's steps (services/jobs/steps/) take it with a small context
(services/jobs/steps/context.py) rather than the row; the workers get its hyperparameters
as a value. No torch here: the intake builds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from services.db.models import TrainingJob
from services.intake.request import TrainingRequest
from training.hyperparams import Hyperparameters
from tuning.spec import TuningSpec

Mode = Literal["train", "tune", "predict"]


class JobSpec(BaseModel):
    """What a job does: its mode, data set and model, every effective hyperparameter, a
    tune job's search (None otherwise), its resources (``use_gpu`` None: decided on the
    cluster, services/jobs/steps/cluster.py) and a predict job's model, copy, top-k and
    label-next count."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Mode = "train"
    batch_id: str
    dataset_uri: str
    model_name: str
    hyperparameters: Hyperparameters
    tuning: TuningSpec | None = None  # a tune job's search, validated (its space too)
    num_workers: int | None = None  # None: the settings' (a row from before it was kept)
    use_gpu: bool | None = None
    # mode predict (services/jobs/predict_step.py)
    model: str | None = None  # NAME, NAME@ALIAS or NAME@vN
    out_uri: str | None = None
    top_k: int | None = None
    label_next: int = 0

    @classmethod
    def from_request(
        cls, request: TrainingRequest, num_workers: int | None, use_gpu: bool | None
    ) -> JobSpec:
        """The spec of a request the edge parsed and checked (nothing validated again; a
        tune request without a search gets the default one, as the driver reads it)."""
        return cls.model_construct(
            mode=request.mode,
            batch_id=request.batch_id,
            dataset_uri=request.dataset_uri,
            model_name=request.model_name,
            hyperparameters=request.hyperparameters,
            tuning=(request.tuning or TuningSpec()) if request.mode == "tune" else None,
            num_workers=num_workers,
            use_gpu=use_gpu,
            model=request.model,
            out_uri=request.out_uri,
            top_k=request.top_k,
            label_next=request.label_next or 0,
        )

    @classmethod
    def from_job(cls, job: TrainingJob, hyperparameters: Mapping[str, Any]) -> JobSpec:
        """The spec of a recorded job, validated once as it crosses from the database:
        ``hyperparameters`` are the job's effective ones (repo.hyperparameters: after its
        search's merge and its preflight's suggestion, when it had them), the search and
        a predict job's fields come from its request. A tune job recorded without a
        search gets the default one, as before."""
        request = job.request or {}
        tuning = (request.get("tuning") or {}) if job.mode == "tune" else None
        return cls.model_validate(
            {
                "mode": job.mode,
                "batch_id": job.batch_id,
                "dataset_uri": job.dataset_uri,
                "model_name": job.model_name,
                "hyperparameters": dict(hyperparameters),
                "tuning": tuning,
                "num_workers": job.num_workers,
                "use_gpu": job.use_gpu,
                "model": request.get("model"),
                "out_uri": request.get("out_uri"),
                "top_k": request.get("top_k"),
                "label_next": int(request.get("label_next") or 0),
            }
        )

    def workers(self, default: int) -> int:
        """The job's Train workers (``default``: the settings', for a row without them)."""
        return self.num_workers or default

    def searched_values(self) -> dict[str, list[Any]] | None:
        """Every value a tune job's search may try, by name (None: no search)."""
        return None if self.tuning is None else self.tuning.discrete_values()
