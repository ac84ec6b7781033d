"""The seam between training/ and the database: a Ray Train UserCallback that runs in the
Train controller after every ``ray.train.report`` and writes the epoch's row."""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback

from services.db import repo
from services.db.session import session_factory


class EpochRecorder(UserCallback):
    """Writes rank 0's metrics of each epoch report into training_metrics (upsert on
    job_id + epoch); the final report, which carries no epoch, is not a row."""

    def __init__(self, database_url: str, job_id: int):
        self.database_url, self.job_id = database_url, job_id

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if not metrics or metrics[0].get("final") or "epoch" not in metrics[0]:
            return
        row = metrics[0]
        with session_factory(self.database_url)() as s:
            repo.record_epoch(s, self.job_id, int(row["epoch"]), row)
