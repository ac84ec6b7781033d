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

from services.config import Settings
from services.db import repo
from services.db.models import TrainingJob
from services.db.session import session_factory
from services.errors import StepFailed, one_line
from services.events import mlflow_outbox
from services.jobs.ray_jobs import init_ray
from services.store.artifacts import TUNING
from services.store.storage import Store
from training.hyperparams import Hyperparameters
from training.label_issues import OutOfFold

log = logging.getLogger("colecionador.tuning")


def tune_step(
    job: TrainingJob,
    hp: Hyperparameters,
    decoded: Any,
    split: Any,
    backbone_state: Any,
    store: Store,
    settings: Settings,
    say: Callable[[str], None],
    shards: Any = None,
) -> tuple[Hyperparameters, dict[str, Any], OutOfFold | None]:
    """The search of a ``mode: tune`` job: Ray Tune over the request's grid with k-fold CV
    on train + val (the test split stays held out) and ASHA; every trial recorded as it
    ends; the best config merged into the job's hyperparameters (same transaction as the
    run's completion). Returns the merged hyperparameters, a summary for tuning.json and
    the winner's out-of-fold probabilities (``OutOfFold``, for the calibration and the
    label check; its ``missing`` says why there are none): reading them never fails the
    job. A job resumed after its search completed reuses that search
    (its out-of-fold probabilities are not kept: the check fits its linear head); one
    whose driver died during the search (its tuning run still ``running``) restores that
    run from its storage in the store (tuning.search: Tune's ``Tuner.restore``), and the
    trials that had ended are not trained again. ``shards`` (a large data set's decoded
    shards, PreparedData.shards): every fold of every trial streams them."""
    from pydantic import ValidationError

    from tuning import report as tuning_report
    from tuning.grid import expand_grid
    from tuning.search import SearchRun, run_search
    from tuning.space import ends, to_json, validate_space
    from tuning.spec import TuningSpec

    sf = session_factory(settings.db_url)
    with sf() as s:
        previous = repo.latest_tuning_run(s, job.id)
        if previous is not None and previous.status == "completed":
            say(
                f"job {job.id}: search already done (run {previous.id}); best config "
                f"{tuning_report.config_text(previous.best_config or {})}"
            )
            trials = [_trial_dict(t) for t in repo.tuning_trials(s, previous.id)]
            oof = OutOfFold(
                "",
                missing=f"the job resumed after its search (tuning run {previous.id}) "
                "had ended, and its fold models' probabilities are not kept",
            )
            return (
                hp,
                {
                    "run_id": previous.id,
                    "metric": previous.metric,
                    "best_config": previous.best_config,
                    "trials": trials,
                },
                oof,
            )
        resume_id = previous.id if previous is not None and previous.status == "running" else None
    try:
        spec = TuningSpec.model_validate((job.request or {}).get("tuning") or {})
        dims = validate_space(spec.dimensions, hp)
        grid = {k: to_json(d) for k, d in dims.items()}  # the run's grid column: the space
        search = SearchRun(cpus_per_trial=1.0, gpus_per_trial=1.0 if job.use_gpu else 0.0)
    except (ValidationError, ValueError, TypeError) as e:
        raise StepFailed("tuning", one_line(e)) from None
    if resume_id is not None:
        # its driver died (this is attempt n+1): the same run, restored from its storage
        run_id = resume_id
        with sf() as s:
            recorded = len(repo.tuning_trials(s, run_id))
        say(
            f"job {job.id}: resuming tuning run {run_id} (its driver died; {recorded} "
            "trial(s) recorded are not trained again)"
        )
    else:
        with sf() as s:
            run_id = repo.create_tuning_run(
                s,
                job.id,
                grid=grid,
                base_hyperparameters=hp.effective(),
                k_folds=spec.k_folds,
                num_samples=spec.num_samples,
                metric=spec.metric,
                mode=spec.mode,
                scheduler=spec.scheduler,
                grace_period=spec.grace_period if spec.scheduler == "asha" else None,
                reduction_factor=spec.reduction_factor if spec.scheduler == "asha" else None,
                max_concurrent=spec.max_concurrent,
                resources=search.resources(),
            ).id
    search.storage_path, search.storage_filesystem = store.ray_storage(TUNING)
    search.name = f"job-{job.id}-run-{run_id}"  # stable: attempt n+1 restores it
    if spec.strategy == "grid":
        n_configs = len(expand_grid({k: ends(d) for k, d in dims.items()}))
    else:
        n_configs = spec.num_samples
    say(
        f"job {job.id}: tuning run {run_id}: {spec.strategy} search, "
        f"{n_configs} config(s) x {spec.k_folds} folds "
        f"of train + val ({len(split.train) + len(split.val)} images; the "
        f"{len(split.test)} test images held out), {spec.scheduler.upper()} on "
        f"{spec.metric}"
    )

    def record(trial: Any) -> None:  # runs in this process as each trial ends
        c = tuning_report.summarize(trial, spec.metric)
        say("  " + tuning_report.trial_line(c, spec.metric, n_configs))
        try:
            with sf() as s:
                repo.record_trial(s, run_id, **_trial_fields(c, trial.history, trial.trial_id))
        except Exception as e:  # noqa: BLE001 - recorded again after the search
            log.warning("trial %s of run %s not recorded yet: %s", c.index, run_id, e)

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
            listener=record,
            shards=shards,  # a large data set: every fold streams its shards
        )
    except Exception as e:  # noqa: BLE001 - Tune's own errors; a failed trial is no error
        with sf() as s:
            repo.finish_tuning_run(s, run_id, "failed", error=one_line(e))
        raise StepFailed("tuning", one_line(e)) from e
    ranked = tuning_report.rank(result.trials, spec.metric)
    winner = tuning_report.best(ranked, spec.metric)
    summary_fields: dict[str, Any] = dict(
        max_t=result.max_t,
        folds=result.folds,
        epochs_run=result.epochs_run,
        fold_epochs_run=result.fold_epochs_run,
        wall_s=result.wall_s,
    )
    with sf() as s:
        by_index = {t.index: t for t in result.trials}
        for c in ranked:  # every trial again, in case a listener write failed
            t = by_index[c.index]
            repo.record_trial(s, run_id, **_trial_fields(c, t.history, t.trial_id))
        repo.set_trial_ranks(s, run_id, {c.index: c.rank for c in ranked})
        if mlflow_outbox.enabled(settings):  # nested runs, committed with the run's end
            trials = [{**c.to_dict(), "history": by_index[c.index].history} for c in ranked]
            mlflow_outbox.stage_trials(s, job.id, job.model_name, run_id, trials)
        if winner is None:
            first = next((c.error for c in ranked if c.error), "no trial reported a result")
            reason = f"no config produced an estimate ({len(ranked)} trial(s)); {first}"
            repo.finish_tuning_run(s, run_id, "failed", error=reason, **summary_fields)
            raise StepFailed("tuning", reason)
        merged = Hyperparameters(**{**hp.effective(), **winner.config})
        repo.finish_tuning_run(
            s,
            run_id,
            "completed",
            best_trial_index=winner.index,
            best_config=winner.config,
            job_hyperparameters=merged.effective(),
            **summary_fields,
        )
    oof = _out_of_fold(by_index[winner.index], search, run_id, spec.k_folds)
    say(tuning_report.table(ranked, spec.metric))
    say(
        f"best config: {tuning_report.config_text(winner.config)} "
        f"({spec.metric} {tuning_report.estimate_text(winner, spec.metric)} over "
        f"{spec.k_folds} folds); "
        f"{result.epochs_run} config-epochs ({result.fold_epochs_run} fold-epochs) in "
        f"{result.wall_s:.0f} s. "
        f"Training it on the train split, judging it on the test split."
    )
    return (
        merged,
        {
            "run_id": run_id,
            "metric": spec.metric,
            "mode": spec.mode,
            "scheduler": spec.scheduler,
            "search": spec.strategy,
            "num_samples": spec.num_samples,
            "resumed": result.resumed,
            "k_folds": spec.k_folds,
            "grid": grid,
            "best_config": winner.config,
            "max_t": result.max_t,
            "epochs_run": result.epochs_run,
            "trials": [c.to_dict() for c in ranked],
        },
        oof,
    )


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
