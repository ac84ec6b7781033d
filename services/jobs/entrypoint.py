"""``python -m services.jobs --job-id N`` (what a Ray job runs), or ``--dataset URI`` to record
and run a new job (``--model NAME[@alias|@vN]`` for bulk predictions)."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.intake.admission import Rejection, admit
from services.intake.records import create_job
from services.jobs.driver import run_job
from services.jobs.ray_jobs import current_submission_id
from services.statuses import JobStatus
from training.hyperparams import load_hyperparameters


def main(argv: list[str] | None = None) -> int:
    """``python -m services.jobs --job-id N`` or ``--dataset URI [--batch-id ID]``."""
    p = argparse.ArgumentParser(prog="python -m services.jobs", description=__doc__)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--job-id", type=int)
    g.add_argument("--dataset")
    p.add_argument("--batch-id")
    p.add_argument("--model-name", default="classifier")
    p.add_argument("--config", help="hyperparameters file (with --dataset)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="with --dataset")
    p.add_argument("--workers", type=int)
    p.add_argument("--model", help="with --dataset: predict with NAME[@alias|@vN] (mode predict)")
    p.add_argument("--out", help="with --model: a copy of the predictions goes here")
    p.add_argument("--label-next", type=int, help="with --model: rank N images to label next")
    args = p.parse_args(argv)
    settings = Settings()
    job_id = args.job_id
    if job_id is None:
        try:
            hp = load_hyperparameters(args.config, args.set or [])
        except ValueError as e:
            p.error(str(e))
        body: dict[str, Any] = {
            "batch_id": args.batch_id or f"job-{uuid.uuid4().hex[:12]}",
            "dataset_uri": args.dataset,
            "model_name": args.model_name,
            "hyperparameters": hp,
        }
        if any(v is not None for v in (args.model, args.out, args.label_next)):  # admit checks
            body.update(
                mode="predict", model=args.model, out_uri=args.out, label_next=args.label_next
            )
            del body["model_name"]
        request = admit(body, settings)  # a Ray job is a request like any other
        if isinstance(request, Rejection):
            p.error(request.reason)
        job, created = create_job(settings, request, num_workers=args.workers)
        job_id = job.id
        submission_id = current_submission_id()
        if created and submission_id:
            with session_factory(settings.db_url)() as s:
                repo.set_ray_job_id(s, job_id, submission_id)
    outcome = run_job(job_id, settings)
    print(
        json.dumps(
            {
                "job_id": outcome.job_id,
                "status": outcome.status,
                "verdict": outcome.verdict,
                "version": outcome.version,
                "error": outcome.error,
            }
        )
    )
    return 0 if outcome.status == JobStatus.SUCCESS else 1
