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
        ("queued", "s", None, 2, "resubmit"),  # lost with its cluster: not counted
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
        decide("training", "x", None, None, 8, 3, lost=5).reason
        == "driver: Ray job x is gone, lost with 5 clusters (attempt 3 of 3)"
    )


def test_an_attempt_lost_with_its_cluster_does_not_count_against_the_job():
    """A replaced cluster's job server knows none of the old Ray jobs: the job did not
    fail, the cluster went. Its attempt is resubmitted and not counted; what the job
    itself failed still is."""
    lost = decide("training", "s", None, None, 2, max_attempts=2)
    assert (lost.action, lost.counts) == ("resubmit", False)
    assert "the cluster that ran it was replaced" in lost.reason
    # two attempts, one of them lost: the job failed once, it has one more
    assert decide("training", "s", "FAILED", None, 2, 2, lost=1).action == "resubmit"
    assert decide("training", "s", "FAILED", None, 3, 2, lost=1).action == "fail"
    # a cluster that forgets every job it is given is not retried for ever
    assert decide("training", "s", None, None, 6, 2, lost=5).action == "fail"


def test_a_job_over_its_wall_clock_limit_is_stopped_whatever_ray_says():
    for ray in ("RUNNING", "PENDING", None):
        d = decide("training", "s", ray, None, 1, 2, running_s=3601, max_seconds=3600)
        assert d.action == "stop" and d.reason.startswith("limit: the job ran 3601 s")
    assert decide("training", "s", "RUNNING", None, 1, 2, 3599, 3600).action == "wait"
    assert decide("queued", None, None, None, 0, 2, None, 3600).action == "submit"  # not started
    assert decide("training", "s", "RUNNING", None, 1, 2, 10**9, None).action == "wait"  # no limit


def test_a_job_whose_driver_went_with_a_restarted_head_is_lost_not_failed():
    """With the GCS in Redis a restarted head keeps the job table: a job whose driver ran
    on the old head reads FAILED with Ray's "failed to get job supervisor" once the new
    job manager looks (tests/integration/test_gcs_restart.py). The cluster failed, not
    the job: resubmitted, not counted; any other FAILED still counts."""
    said = "Unexpected error occurred: failed to get job supervisor."
    gone = decide("training", "s", "FAILED", said, 2, max_attempts=2)
    assert (gone.action, gone.counts) == ("resubmit", False)
    assert "lost with the head" in gone.reason
    assert decide("training", "s", "FAILED", "exit code 1", 2, 2).action == "fail"
    # past MAX_LOST_ATTEMPTS it counts like any failure
    assert decide("training", "s", "FAILED", said, 7, 2, lost=5).action == "fail"
