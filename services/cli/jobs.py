"""``train``, ``tune`` (both recorded and run here as a job), ``status`` (the jobs, or one
in detail) and ``submit`` (a request published on the queue)."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from pydantic import ValidationError

from services.cli.args import SET_HELP, hyperparameters
from services.config import Settings
from services.statuses import JobStatus
from training.hyperparams import Hyperparameters


def _record_and_run(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    hp: Hyperparameters,
    **request_fields: Any,
) -> int:
    """What train and tune share: check a local dataset, record the job (a known batch id
    starts nothing), run it here, report the verdict."""
    from services.intake.admission import Rejection, admit
    from services.intake.records import create_job
    from services.jobs.driver import run_job
    from services.store.fetch import local_path

    path = local_path(args.dataset)
    if path is not None and not path.is_dir():
        parser.error(f"dataset not found: {args.dataset}")
    settings = Settings()
    body = {
        "batch_id": args.batch_id or f"cli-{uuid.uuid4().hex[:12]}",
        "dataset_uri": str(path.resolve()) if path else args.dataset,
        "model_name": args.model_name,
        "hyperparameters": hp,
        **request_fields,
    }
    # the local user's dataset is theirs to name; everything else is checked as on the queue
    request = admit(body, settings, local_user=True)
    if isinstance(request, Rejection):
        parser.error(request.reason)
    job, created = create_job(settings, request, num_workers=args.workers, use_gpu=args.gpu)
    if not created:
        print(f"batch {request.batch_id} is job {job.id} ({job.status}); not started again")
        return 0 if job.status != JobStatus.FAILED else 1
    print(
        f"job {job.id} queued ({request.mode}): {request.dataset_uri} -> model "
        f"{request.model_name}",
        flush=True,
    )
    outcome = run_job(job.id, settings)
    print("\n".join(outcome.lines()))
    return 0 if outcome.status == JobStatus.SUCCESS else 1


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return _record_and_run(args, parser, hyperparameters(args, parser))


def cmd_tune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """A search (grid, random or TPE) with k-fold CV and ASHA, then the best config
    trained, gated, versioned."""
    from services.errors import validation_message
    from tuning.grid import parse_grid
    from tuning.space import parse_space
    from tuning.spec import TuningSpec

    hp = hyperparameters(args, parser)
    try:
        grid, space = parse_grid(args.grid or []), parse_space(args.space or [])
        options = {
            k: v
            for k, v in (
                ("metric", args.metric),
                ("scheduler", args.scheduler),
                ("grace_period", args.grace_period),
                ("reduction_factor", args.reduction_factor),
                ("max_concurrent", args.max_concurrent),
                ("search", args.search),
            )
            if v is not None
        }
        spec = TuningSpec(
            grid=grid, space=space, k_folds=args.k_folds, num_samples=args.num_samples, **options
        )  # checked against the base (tunable, every combination) on admission
    except ValidationError as e:
        parser.error(validation_message(e, root=None))
    except ValueError as e:
        parser.error(str(e))
    return _record_and_run(args, parser, hp, mode="tune", tuning=spec)


def cmd_submit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.events.broker import publish_request
    from services.intake.admission import Rejection, admit

    hp = hyperparameters(args, parser)
    body = {
        "batch_id": args.batch_id,
        "dataset_uri": args.dataset,
        "model_name": args.model_name,
        "mode": "train",
        "hyperparameters": hp.model_dump(mode="json", exclude_unset=True),
    }
    if args.total_images is not None:
        body["total_images"] = args.total_images
    settings = Settings()
    rejected = admit(body, settings, local_user=True)  # as the ingress will, but the roots
    if isinstance(rejected, Rejection):
        parser.error(rejected.reason)
    publish_request(settings.amqp_url, settings.requests_queue, body)
    print(f"published batch {args.batch_id} on {settings.requests_queue}")
    return 0


def cmd_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.cli.status import print_job, print_jobs
    from services.db import repo
    from services.db.session import prepare_database, session_factory

    settings = Settings()
    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        if args.job_id is None:
            print_jobs(repo.list_jobs(s, limit=args.limit))
            return 0
        job = repo.get_job(s, args.job_id)
        if job is None:
            parser.error(f"no job {args.job_id}")
        print_job(s, settings, job)
    return 0


def _job_arguments(p: argparse.ArgumentParser, workers_help: str | None, gpu_help: str) -> None:
    """What a job run here takes besides its hyperparameters and search."""
    p.add_argument("--workers", type=int, default=None, help=workers_help)
    p.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None, help=gpu_help)
    p.add_argument("--batch-id", help="idempotency key (default: a new one)")
    p.add_argument("--model-name", default="classifier")


def _train_parser(sub: Any) -> None:
    train = sub.add_parser("train", help="train, evaluate, gate and version a model")
    train.add_argument("--dataset", required=True, help="folder, file:// or s3:// URI")
    train.add_argument("--config", help="hyperparameters file (.json, .yaml, .toml)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    _job_arguments(train, None, "one GPU per worker (default: when the cluster has GPUs)")
    train.set_defaults(func=cmd_train)


def _tune_parser(sub: Any) -> None:
    from services.cli.search_args import add_search_arguments

    tune = sub.add_parser(
        "tune",
        help="search (grid, random or TPE) with k-fold CV and ASHA, then train, gate and "
        "version the best config",
    )
    tune.add_argument("--dataset", required=True, help="folder, file:// or s3:// URI")
    add_search_arguments(tune)
    tune.add_argument("--config", help="base hyperparameters file (.json, .yaml, .toml)")
    tune.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a base hyperparameter (repeatable)"
    )
    _job_arguments(
        tune,
        "Ray Train workers of the final training",
        "one GPU per trial and per final-training worker (default: when the cluster has GPUs)",
    )
    tune.set_defaults(func=cmd_tune)


def _status_parser(sub: Any) -> None:
    status = sub.add_parser("status", help="jobs, or one job in detail")
    status.add_argument("job_id", type=int, nargs="?")
    status.add_argument("--limit", type=int, default=20)
    status.set_defaults(func=cmd_status)


def _submit_parser(sub: Any) -> None:
    submit = sub.add_parser("submit", help="publish a training request on the queue")
    submit.add_argument("--dataset", required=True, help="s3:// URI or a path the cluster sees")
    submit.add_argument("--batch-id", required=True)
    submit.add_argument("--model-name", default="classifier")
    submit.add_argument("--total-images", type=int)
    submit.add_argument("--config")
    submit.add_argument("--set", action="append", metavar="KEY=VALUE")
    submit.set_defaults(func=cmd_submit)


def add_parsers(sub: Any) -> None:
    for add in (_train_parser, _tune_parser, _status_parser, _submit_parser):
        add(sub)
