"""``colecionador predict --model NAME[@alias|@vN] --dataset URI [--out URI] [--label-next
N]``: bulk predictions on Ray Data (services/jobs/predict_step.py), recorded and run here
as a job; with ``--label-next``, the N images to label next printed and written beside
them (services/jobs/label_next_step.py).

The request is checked as on the queue (the local user's own dataset and out paths
excepted), and the model reference against the database, before anything is written: a
bad argument or a reference that names no version exits 2 with one line.
"""

from __future__ import annotations

import argparse
import uuid
from typing import TYPE_CHECKING, Any

from services.config import Settings
from services.statuses import JobStatus

if TYPE_CHECKING:
    from services.intake.request import TrainingRequest


def add_parsers(sub: Any) -> None:
    """The ``predict`` subcommand."""
    p = sub.add_parser("predict", help="predictions for every image of a folder or S3 prefix")
    p.add_argument("--model", required=True, help="NAME (its production), NAME@ALIAS or NAME@vN")
    p.add_argument("--dataset", required=True, help="folder, file:// or s3:// prefix of images")
    p.add_argument("--out", help="also write predictions.parquet/.csv here (folder or s3://)")
    p.add_argument("--top-k", type=int, default=None, help="labels kept per image (default 5)")
    p.add_argument(
        "--label-next",
        type=int,
        default=None,
        metavar="N",
        help="also rank the N images to label next: to_label.csv and .png (default 0: off)",
    )
    p.add_argument("--workers", type=int, default=None, help="actors at most (default: workers)")
    p.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one GPU per actor (default: when the cluster has GPUs)",
    )
    p.add_argument("--batch-id", help="idempotency key (default: a new one)")
    p.set_defaults(func=cmd_predict)


def _request(
    args: argparse.Namespace, parser: argparse.ArgumentParser, settings: Settings
) -> TrainingRequest:
    """The checked request, or exit 2 naming what is wrong."""
    from services.db.session import prepare_database
    from services.intake.admission import Rejection, admit
    from services.intake.model_ref import unresolved
    from services.store.fetch import local_path

    path = local_path(args.dataset)
    if path is not None and not path.is_dir():
        parser.error(f"dataset not found: {args.dataset}")
    out = local_path(args.out) if args.out else None
    body = {
        "batch_id": args.batch_id or f"cli-{uuid.uuid4().hex[:12]}",
        "dataset_uri": str(path.resolve()) if path else args.dataset,
        "mode": "predict",
        "model": args.model,
        "out_uri": str(out.resolve()) if out else args.out,
        "top_k": args.top_k,
        "label_next": args.label_next,
    }
    request = admit(body, settings, local_user=True)
    if isinstance(request, Rejection):
        parser.error(request.reason)
    prepare_database(settings)
    why = unresolved(settings, request.model or "")
    if why is not None:
        parser.error(f"--{why}")
    return request


def cmd_predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Record the predict job (a known batch id starts nothing), run it here, report."""
    from services.intake.records import create_job
    from services.jobs.driver import run_job

    settings = Settings()
    request = _request(args, parser, settings)
    job, created = create_job(settings, request, num_workers=args.workers, use_gpu=args.gpu)
    if not created:
        print(f"batch {request.batch_id} is job {job.id} ({job.status}); not started again")
        return 0 if job.status != JobStatus.FAILED else 1
    print(f"job {job.id} queued (predict): {request.dataset_uri} with {request.model}", flush=True)
    outcome = run_job(job.id, settings)
    print("\n".join(outcome.lines()))
    return 0 if outcome.status == JobStatus.SUCCESS else 1
