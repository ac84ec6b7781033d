"""The search step of a ``mode: tune`` job: Ray Tune over the request's space with k-fold
cross-validation on train + val (the test split stays held out) and ASHA; every trial
recorded as it ends; the best config merged into the job's hyperparameters. The job then
trains, judges and versions that config like any train job (services/jobs/driver.py). With
``label_check`` the winner's out-of-fold probabilities (its k fold models, tuning/cv.py)
go back to the job for its label check, never into tuning.json."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from services.config import Settings
from services.db import repo
from services.db.models import TuningRun
from services.errors import StepFailed, one_line
from services.events import mlflow_outbox
from services.intake.spec import JobSpec
from services.jobs.ray_jobs import init_ray
from services.jobs.steps.context import StepContext
from services.statuses import TuningRunStatus
from services.store.artifacts import TUNING
from training.hyperparams import Hyperparameters
from training.label_issues import OutOfFold

log = logging.getLogger("colecionador.tuning")


def tune_step(
    job: JobSpec,
    ctx: StepContext,
    decoded: Any,
    split: Any,
    backbone_state: Any,
    shards: Any = None,
) -> tuple[Hyperparameters, dict[str, Any], OutOfFold | None]:
    """The search of a ``mode: tune`` job, every trial recorded as it ends and the best
    config merged into the job's hyperparameters (same transaction as the run's end).
    Returns them, tuning.json's summary and the winner's out-of-fold probabilities (for
    calibration and the label check; ``missing`` says why there are none; reading them
    never fails the job). A job resumed after its search ended reuses it (no out-of-fold
    probabilities: they are not kept); one whose driver died during it (its run still
    ``running``) restores that run from the store (Tune's ``Tuner.restore``) and trains
    no ended trial again. ``shards``: a large data set's decoded shards, streamed.
    ``job.tuning``: the search the edge validated (the driver read it back once)."""
    from tuning.search import run_search

    sf, settings, say, hp = ctx.sessions, ctx.settings, ctx.say, job.hyperparameters
    spec, dims, search = _plan(job)
    with sf() as s:
        previous = repo.latest_tuning_run(s, ctx.job_id)
        if previous is not None and previous.status == TuningRunStatus.COMPLETED:
            return hp, *_already_searched(s, ctx.job_id, previous, spec.strategy, say)
    resume_id = previous.id if previous and previous.status == TuningRunStatus.RUNNING else None
    run_id = _open_run(sf, ctx.job_id, hp, spec, dims, search, resume_id, say)
    search.storage_path, search.storage_filesystem = ctx.store.ray_storage(TUNING)
    search.name = f"job-{ctx.job_id}-run-{run_id}"  # stable: attempt n+1 restores it
    n_configs = _count_configs(spec, dims)
    say(
        f"job {ctx.job_id}: tuning run {run_id}: {spec.strategy} search, "
        f"{n_configs} config(s) x {spec.k_folds} folds "
        f"of train + val ({len(split.train) + len(split.val)} images; the "
        f"{len(split.test)} test images held out), {spec.scheduler.upper()} on "
        f"{spec.metric}"
    )
    init_ray(settings)
    try:
        result = run_search(
            decoded.images,
            decoded.labels,
            decoded.classes,
            split,
            hp,
            spec,
            search,
            backbone_state=backbone_state,
            listener=_recorder(sf, run_id, spec.metric, n_configs, say),
            shards=shards,  # a large data set: every fold streams its shards
            dims=dims,  # validated once, by _plan
        )
    except Exception as e:  # noqa: BLE001 - Tune's own errors; a failed trial is no error
        with sf() as s:
            repo.finish_tuning_run(s, run_id, TuningRunStatus.FAILED, error=one_line(e))
        raise StepFailed("tuning", one_line(e)) from e
    return _settle(
        sf, settings, (ctx.job_id, job.model_name), hp, run_id, spec, search, result, say
    )


def _plan(job: JobSpec) -> tuple[Any, dict[str, Any], Any]:
    """The job's tuning spec, its space validated on the job's hyperparameters (once here:
    the edge checked it on the request's) and the search's resources."""
    from tuning.search import SearchRun
    from tuning.space import validate_space

    spec = job.tuning
    assert spec is not None  # JobSpec.from_job: every tune job has one
    try:
        dims = validate_space(spec.dimensions, job.hyperparameters)
    except (ValueError, TypeError) as e:  # a ValidationError is a ValueError
        raise StepFailed("tuning", one_line(e)) from None
    search = SearchRun(cpus_per_trial=1.0, gpus_per_trial=1.0 if job.use_gpu else 0.0)
    return spec, dims, search


def _count_configs(spec: Any, dims: dict[str, Any]) -> int:
    from tuning.grid import expand_grid
    from tuning.space import ends

    if spec.strategy == "grid":
        return len(expand_grid({k: ends(d) for k, d in dims.items()}))
    return int(spec.num_samples)


def _already_searched(
    s: Session, job_id: int, run: TuningRun, strategy: str, say: Callable[[str], None]
) -> tuple[dict[str, Any], OutOfFold]:
    """A job resumed after its search had ended: that search's summary, and no out-of-fold
    probabilities (they are not kept)."""
    from tuning import report as tuning_report

    say(
        f"job {job_id}: search already done (run {run.id}); best config "
        f"{tuning_report.config_text(run.best_config or {})}"
    )
    trials = [_trial_dict(t) for t in repo.tuning_trials(s, run.id)]
    oof = OutOfFold(
        "",
        missing=f"the job resumed after its search (tuning run {run.id}) "
        "had ended, and its fold models' probabilities are not kept",
    )
    return _summary(run, strategy, True, trials), oof


def _open_run(
    sf: Callable[[], Session],
    job_id: int,
    hp: Hyperparameters,
    spec: Any,
    dims: dict[str, Any],
    search: Any,
    resume_id: int | None,
    say: Callable[[str], None],
) -> int:
    """The tuning run's id: the one a dead driver left ``running`` (restored from its
    storage), else a new row with the grid, the base hyperparameters and the settings."""
    from tuning.space import to_json

    if resume_id is not None:  # its driver died (this is attempt n+1): the same run
        with sf() as s:
            recorded = len(repo.tuning_trials(s, resume_id))
        say(
            f"job {job_id}: resuming tuning run {resume_id} (its driver died; {recorded} "
            "trial(s) recorded are not trained again)"
        )
        return resume_id
    asha = spec.scheduler == "asha"
    with sf() as s:
        return repo.create_tuning_run(
            s,
            job_id,
            grid={k: to_json(d) for k, d in dims.items()},  # the run's grid: the space
            base_hyperparameters=hp.effective(),
            k_folds=spec.k_folds,
            num_samples=spec.num_samples,
            metric=spec.metric,
            mode=spec.mode,
            scheduler=spec.scheduler,
            grace_period=spec.grace_period if asha else None,
            reduction_factor=spec.reduction_factor if asha else None,
            max_concurrent=spec.max_concurrent,
            resources=search.resources(),
        ).id


def _recorder(
    sf: Callable[[], Session], run_id: int, metric: str, n_configs: int, say: Callable[[str], None]
) -> Callable[[Any], None]:
    """The search's listener: says and records each trial as it ends (in this process);
    a write that fails is done again after the search."""
    from tuning import report as tuning_report

    def record(trial: Any) -> None:
        c = tuning_report.summarize(trial, metric)
        say("  " + tuning_report.trial_line(c, metric, n_configs))
        try:
            with sf() as s:
                repo.record_trial(s, run_id, **_trial_fields(c, trial.history, trial.trial_id))
        except Exception as e:  # noqa: BLE001 - recorded again after the search
            log.warning("trial %s of run %s not recorded yet: %s", c.index, run_id, e)

    return record


def _settle(
    sf: Callable[[], Session],
    settings: Settings,
    job: tuple[int, str],
    hp: Hyperparameters,
    run_id: int,
    spec: Any,
    search: Any,
    result: Any,
    say: Callable[[str], None],
) -> tuple[Hyperparameters, dict[str, Any], OutOfFold | None]:
    """Every trial recorded and ranked, the run completed with the winner merged into the
    job's hyperparameters (or failed, when no config produced an estimate). ``job``: its
    id and model name."""
    from tuning import report as tuning_report

    ranked = tuning_report.rank(result.trials, spec.metric)
    winner = tuning_report.best(ranked, spec.metric)
    by_index = {t.index: t for t in result.trials}
    names = ("max_t", "folds", "epochs_run", "fold_epochs_run", "wall_s")
    ended = {name: getattr(result, name) for name in names}
    with sf() as s:
        for c in ranked:  # every trial again, in case a listener write failed
            t = by_index[c.index]
            repo.record_trial(s, run_id, **_trial_fields(c, t.history, t.trial_id))
        repo.set_trial_ranks(s, run_id, {c.index: c.rank for c in ranked})
        if mlflow_outbox.enabled(settings):  # nested runs, committed with the run's end
            trials = [{**c.to_dict(), "history": by_index[c.index].history} for c in ranked]
            mlflow_outbox.stage_trials(s, *job, run_id, trials)
        if winner is None:
            first = next((c.error for c in ranked if c.error), "no trial reported a result")
            reason = f"no config produced an estimate ({len(ranked)} trial(s)); {first}"
            repo.finish_tuning_run(s, run_id, TuningRunStatus.FAILED, error=reason, **ended)
            raise StepFailed("tuning", reason)
        merged = Hyperparameters(**{**hp.effective(), **winner.config})
        repo.finish_tuning_run(
            s,
            run_id,
            TuningRunStatus.COMPLETED,
            best_trial_index=winner.index,
            best_config=winner.config,
            job_hyperparameters=merged.effective(),
            **ended,
        )
        run = s.get(TuningRun, run_id)
        assert run is not None
        summary = _summary(run, spec.strategy, result.resumed, [c.to_dict() for c in ranked])
    say(tuning_report.table(ranked, spec.metric))
    say(
        f"best config: {tuning_report.config_text(winner.config)} "
        f"({spec.metric} {tuning_report.estimate_text(winner, spec.metric)} over "
        f"{spec.k_folds} folds); "
        f"{result.epochs_run} config-epochs ({result.fold_epochs_run} fold-epochs) in "
        f"{result.wall_s:.0f} s. "
        f"Training it on the train split, judging it on the test split."
    )
    return merged, summary, _out_of_fold(by_index[winner.index], search, run_id, spec.k_folds)


def _summary(
    run: TuningRun, strategy: str, resumed: bool, trials: list[dict[str, Any]]
) -> dict[str, Any]:
    """tuning.json: the completed run as its row has it, and its trials (ranked)."""
    return {
        "run_id": run.id,
        "metric": run.metric,
        "mode": run.mode,
        "scheduler": run.scheduler,
        "search": strategy,
        "num_samples": run.num_samples,
        "resumed": resumed,
        "k_folds": run.k_folds,
        "grid": run.grid,
        "best_config": run.best_config,
        "max_t": run.max_t,
        "epochs_run": run.epochs_run,
        "trials": trials,
    }


def _out_of_fold(trial: Any, search: Any, run_id: int, k: int) -> OutOfFold:
    """The winner's out-of-fold probabilities from its checkpoint in the run's storage,
    or why there are none (a reading failure is logged and said, never raised)."""
    from tuning.search import load_out_of_fold

    source = (
        f"out-of-fold probabilities of the best config's {k} fold models "
        f"(tuning run {run_id}, k={k})"
    )
    if not trial.oof_checkpoint:
        why = "it stopped early" if trial.status == "stopped_early" else "it saved none"
        return OutOfFold(source, missing=f"the best config (trial {trial.index}) has none: {why}")
    try:
        loaded = load_out_of_fold(trial, search.storage_filesystem)
        assert loaded is not None  # None only without an oof_checkpoint, handled above
        index, probs = loaded
    except Exception as e:  # noqa: BLE001 - the check falls back to the linear head
        log.warning("out-of-fold probabilities of run %s not read: %s", run_id, e)
        return OutOfFold(source, missing=f"reading them failed: {one_line(e)}")
    return OutOfFold(source, index, probs)


def _trial_fields(c: Any, history: list[dict[str, Any]], trial_id: str) -> dict[str, Any]:
    """A tuning_trials row from a tuning.report.ConfigSummary and the trial's history."""
    last, best = c.last or {}, c.best or {}
    return dict(
        trial_index=c.index,
        trial_id=trial_id,
        config=c.config,
        status=c.status,
        stopped_at=c.stopped_at,
        max_epochs=c.max_epochs,
        mean_val_loss=last.get("val_loss"),
        std_val_loss=last.get("val_loss_std"),
        mean_val_accuracy=last.get("val_accuracy"),
        std_val_accuracy=last.get("val_accuracy_std"),
        best_epoch=best.get("epoch"),
        best_mean=best.get(c.metric),
        best_std=best.get(f"{c.metric}_std"),
        epochs=history,
        error=c.error,
    )


def _trial_dict(t: Any) -> dict[str, Any]:
    return {
        k: getattr(t, k)
        for k in (
            "trial_index",
            "config",
            "status",
            "stopped_at",
            "max_epochs",
            "mean_val_loss",
            "std_val_loss",
            "mean_val_accuracy",
            "std_val_accuracy",
            "rank",
            "error",
        )
    }
