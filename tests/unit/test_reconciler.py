"""The reconciler's decision for one active job, given Ray's word (pure)."""

import pytest

from services.jobs.reconciler import decide


@pytest.mark.parametrize(
    "status,sid,ray,attempts,action",
    [
        ("queued", None, None, 0, "submit"),  # recorded, never submitted
        ("training", None, None, 0, "wait"),  # a local `colecionador train`: no Ray job
        ("queued", "s", "PENDING", 1, "wait"),
        ("training", "s", "RUNNING", 1, "wait"),
        ("training", "s", "FAILED", 1, "resubmit"),  # the driver died: next attempt
        ("evaluating", "s", "STOPPED", 1, "resubmit"),
        ("training", "s", "SUCCEEDED", 1, "resubmit"),  # exited without a final status
        ("training", "s", None, 1, "resubmit"),  # Ray forgot it (head restarted)
        ("training", "s", "FAILED", 2, "fail"),  # out of attempts
        ("queued", "s", None, 2, "fail"),
    ],
)
def test_decision(status, sid, ray, attempts, action):
    assert decide(status, sid, ray, None, attempts, max_attempts=2).action == action


def test_the_failure_names_what_ray_said_and_the_attempts():
    d = decide(
        "training",
        "colecionador-job-7-attempt-2",
        "FAILED",
        "Job entrypoint command failed with exit code -9\nmore",
        2,
        2,
    )
    assert d.action == "fail"
    assert d.reason == (
        "driver: Ray job colecionador-job-7-attempt-2 FAILED: Job entrypoint "
        "command failed with exit code -9 (attempt 2 of 2)"
    )
    assert (
        decide("training", "x", None, None, 3, 3).reason
        == "driver: Ray job x is gone (attempt 3 of 3)"
    )


def test_a_job_over_its_wall_clock_limit_is_stopped_whatever_ray_says():
    for ray in ("RUNNING", "PENDING", None):
        d = decide("training", "s", ray, None, 1, 2, running_s=3601, max_seconds=3600)
        assert d.action == "stop" and d.reason.startswith("limit: the job ran 3601 s")
    assert decide("training", "s", "RUNNING", None, 1, 2, 3599, 3600).action == "wait"
    assert decide("queued", None, None, None, 0, 2, None, 3600).action == "submit"  # not started
    assert decide("training", "s", "RUNNING", None, 1, 2, 10**9, None).action == "wait"  # no limit
