"""The seam between training/ and the database: a Ray Train UserCallback that runs in the
Train controller after every ``ray.train.report`` and writes the epoch's row (and, with
MLflow on, the epoch's MLflow record in the same transaction: services/events/mlflow_outbox.py;
the controller never talks to MLflow itself)."""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback

from services.db import repo
from services.db.session import session_factory
from services.events import mlflow_outbox


class EpochRecorder(UserCallback):
    """Writes rank 0's metrics of each epoch report into training_metrics (upsert on
    job_id + epoch); the final report, which carries no epoch, is not a row. With
    ``mlflow_model`` (the job's model name: MLflow on) the report's numbers are staged for
    MLflow too, at step = the epoch."""

    def __init__(self, database_url: str, job_id: int, mlflow_model: str | None = None):
        self.database_url, self.job_id, self.mlflow_model = database_url, job_id, mlflow_model

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if not metrics or metrics[0].get("final") or "epoch" not in metrics[0]:
            return
        row = metrics[0]
        with session_factory(self.database_url)() as s:
            if self.mlflow_model is not None:  # committed with the row, by record_epoch
                mlflow_outbox.stage_epoch(s, self.job_id, self.mlflow_model, row)
            repo.record_epoch(s, self.job_id, int(row["epoch"]), row)
