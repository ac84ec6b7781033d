"""A tune job's driver SIGKILLed in the middle of its search: the reconciler resubmits it
as attempt 2, which restores the same tuning run from its storage in the store (Ray Tune's
``Tuner.restore``) instead of starting over: every trial that had ended (and been recorded)
is trained once, not twice, and the job still ends with the search's winner versioned."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from services.db import repo
from services.db.session import session_factory
from services.intake.records import create_job
from services.intake.request import parse_request
from services.jobs.ray_jobs import RayJobs
from services.jobs.reconciler import Reconciler
from services.store.storage import open_store
from tests.conftest import TINY, wait_until
from training.callbacks import Callback

pytestmark = pytest.mark.integration

K = 2
LRS = [1e-3, 3e-3, 1e-2]
BASE = {**TINY, "image_size": 16, "phase1_epochs": 2, "phase2_epochs": 1}


class CountEpochs(Callback):
    """Appends ``<trial id> <epoch>`` to ``tally`` for every epoch a fold of a Tune trial
    trains (the final training, outside Tune, writes nothing). Every trial but the first
    waits at its first epoch's end until ``hold`` exists: the test kills the driver while
    the search is certainly unfinished, then lets the rest go."""

    def __init__(self, tally: str, hold: str):
        self.path, self.hold = Path(tally), Path(hold)

    def on_epoch_end(self, epoch, logs):
        from ray import tune

        try:
            trial_id = tune.get_context().get_trial_id()
        except Exception:  # noqa: BLE001 - not in a Tune trial
            trial_id = None
        if trial_id:
            with self.path.open("a") as f:
                f.write(f"{trial_id} {epoch}\n")
            first = self.path.read_text().split(maxsplit=1)[0]
            while trial_id != first and not self.hold.exists():
                time.sleep(0.05)


def test_a_killed_tune_driver_resumes_its_search_without_training_ended_trials_again(
    ray_cluster, pg_url, settings_for, make_dataset, tmp_path
):
    settings = settings_for(
        pg_url,
        ray_dashboard_url=ray_cluster.dashboard_url,
        ray_auth_token_path=ray_cluster.token_path,
        plugin_modules="tests.*",
        max_job_attempts=2,
    )
    epochs_log = tmp_path / "epochs.log"
    hold = tmp_path / "hold"
    counter = {
        "name": "tests.integration.test_tuning_resume:CountEpochs",
        "tally": str(epochs_log),
        "hold": str(hold),
    }
    request = parse_request(
        {
            "batchId": f"tune-resume-{uuid.uuid4().hex[:8]}",
            "datasetUri": str(make_dataset(per_class=10, size=16)),
            "modelName": "resumed",
            "mode": "tune",
            "hyperparameters": {**BASE, "callbacks": [counter]},
            # one trial at a time, FIFO: each config trains all its 3 epochs x 2 folds
            "tuning": {
                "grid": {"phase1_lr": LRS},
                "kFolds": K,
                "scheduler": "fifo",
                "maxConcurrent": 1,
            },
        }
    )
    job, _ = create_job(settings, request, num_workers=1)
    reconciler = Reconciler(settings, RayJobs(settings))
    first_sid = reconciler.submit(job.id)
    sf = session_factory(settings.db_url)

    def recorded_trials():
        with sf() as s:
            if repo.get_job(s, job.id).status == "failed":
                pytest.fail(f"the job failed: {repo.get_job(s, job.id).error}")
            runs = repo.tuning_runs(s, job.id)
            return runs and [(runs[0].id, t.trial_id) for t in repo.tuning_trials(s, runs[0].id)]

    try:
        before = wait_until(recorded_trials, 300, "a trial recorded", every=0.1)
    except TimeoutError:
        logs = reconciler.ray_jobs.client.get_job_logs(first_sid)
        pytest.fail(f"no trial recorded; the driver said:\n{logs[-4000:]}")
    pid = int(reconciler.ray_jobs.client.get_job_info(first_sid).driver_info.pid)
    os.kill(pid, signal.SIGKILL)  # mid-search: one trial ended, the next one held
    hold.touch()  # the restored search runs freely
    (run_id,) = {r for r, _ in before}
    ended_before = {t for _, t in before}

    def resubmitted():
        reconciler.pass_once()
        with sf() as s:
            return repo.get_job(s, job.id).attempts == 2

    wait_until(resubmitted, 120, "the second attempt", every=0.5)

    def finished():
        with sf() as s:
            row = repo.get_job(s, job.id)
            return row if row.status in ("success", "failed") else None

    row = wait_until(finished, 600, "the resumed job to finish", every=0.5)
    assert row.status == "success", row.error
    with sf() as s:
        (run,) = repo.tuning_runs(s, job.id)  # the same run, restored: not a second one
        trials = list(repo.tuning_trials(s, run.id))
        first, second = repo.job_attempts(s, job.id)
    assert (run.id, run.status) == (run_id, "completed")
    assert first.ray_status == "FAILED" and second.ray_job_id == row.ray_job_id
    assert sorted(t.config["phase1_lr"] for t in trials) == LRS
    assert all(t.status == "completed" and t.stopped_at == 3 for t in trials)

    trained = Counter(line.split()[0] for line in epochs_log.read_text().splitlines())
    for trial_id in ended_before:  # trained once: 3 epochs x K folds, not twice that
        assert trained[trial_id] == 3 * K, (trial_id, trained)
    assert set(trained) == {t.trial_id for t in trials}
    # the trial that was running when the driver died started again from its first epoch
    # (trials do not checkpoint); the rest ran once
    redone = sum(trained.values()) - 3 * K * len(LRS)
    assert 0 <= redone < 3 * K

    summary = json.loads(open_store(settings).get_bytes("models/resumed/v1/tuning.json"))
    assert summary["resumed"] is True and summary["search"] == "grid"
    assert summary["best_config"] == run.best_config
