"""The job's label check (services/jobs/steps/labels.py): a tune job's out-of-fold
probabilities are used as given; without them, or when they do not fit the job's
train + val images, the linear head runs and the report's source says why."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.intake.spec import JobSpec
from services.jobs.steps import PreparedData, check_labels
from services.jobs.steps.context import StepContext
from services.store.storage import LocalStore
from tests.conftest import TINY
from training.data import DecodedDataset, Split
from training.hyperparams import Hyperparameters
from training.label_issues import OutOfFold
from training.model import build_model

N_PER_CLASS, FLIPPED = 12, (0, 1)  # images 0 and 1: class 0 filed as class 1


@pytest.fixture
def job_data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), N_PER_CLASS)
    labels[list(FLIPPED)] = 1
    decoded = DecodedDataset(
        images=rng.integers(0, 255, (len(labels), 3, 16, 16), dtype=np.uint8),
        labels=labels,
        classes=["a", "b", "c"],
        paths=[f"img_{i}.png" for i in range(len(labels))],
    )
    test = np.array([5, 17, 29])
    rest = np.setdiff1d(np.arange(len(labels)), test)
    split = Split(rest[::4], np.setdiff1d(rest, rest[::4]), test)  # val before train
    return PreparedData(decoded, split, {})


class Trained:
    def __init__(self):
        self.calls = 0

    def module(self):
        self.calls += 1
        return build_model("mobilenet_v3_small", 3)


def _check(tmp_path, data, oof):
    hp = Hyperparameters(**{**TINY, "image_size": 16, "label_check": True})
    trained, said, store = Trained(), [], LocalStore(tmp_path / "store")
    spec = JobSpec(batch_id="b", dataset_uri="d", model_name="m", hyperparameters=hp)
    ctx = StepContext(7, None, store, None, said.append)  # settings, sessions: unused
    out = check_labels(spec, ctx, trained, data, None, oof)
    stored = json.loads(store.get_bytes("reports/job-7/label_issues.json"))
    assert stored == out.report
    return out.report, trained.calls, said


def test_given_out_of_fold_probs_are_used_without_a_linear_head(tmp_path, job_data):
    pool = np.union1d(job_data.split.train, job_data.split.val)
    true = np.repeat(np.arange(3), N_PER_CLASS)[pool]  # the fold models know better
    probs = np.full((len(pool), 3), 0.05, np.float32)
    probs[np.arange(len(pool)), true] = 0.9
    oof = OutOfFold("the search's fold models (test)", pool, probs)
    report, calls, said = _check(tmp_path, job_data, oof)
    assert calls == 0 and report["source"] == "the search's fold models (test)"
    assert report["images_checked"] == len(pool) == 33
    assert {i["path"] for i in report["issues"]} == {f"img_{i}.png" for i in FLIPPED}
    assert all(i["given_label"] == "b" and i["likely_label"] == "a" for i in report["issues"])
    assert "the search's fold models" in said[-1]


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda pool: OutOfFold("s", missing="the job resumed after its search"), "resumed"),
        (lambda pool: OutOfFold("s", pool[:-1], np.full((32, 3), 1 / 3)), "score 32 images"),
        (lambda pool: OutOfFold("s", pool, np.full((33, 2), 0.5)), "shape (33, 2)"),
    ],
)
def test_without_fitting_out_of_fold_probs_the_linear_head_runs_and_says_why(
    tmp_path, job_data, make, why
):
    pool = np.union1d(job_data.split.train, job_data.split.val)
    report, calls, said = _check(tmp_path, job_data, make(pool))
    assert calls == 1 and report["images_checked"] == 33
    assert report["source"].startswith("out-of-fold probabilities of a LogisticRegression")
    assert "not the search's fold models" in report["source"] and why in report["source"]
    assert "a linear head" in said[-1]


def test_a_train_job_says_nothing_of_a_search(tmp_path, job_data):
    report, calls, _ = _check(tmp_path, job_data, None)
    assert calls == 1 and "search" not in report["source"]
