"""The search's own parts without Ray: the spec, where a search runs, a trial's error."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from services.intake.request import TrainingRequest, parse_request
from tuning.search import SearchRun, error_line
from tuning.spec import TuningSpec


def test_error_line_is_the_exception_line_of_the_trace(tmp_path):
    import cloudpickle

    class T:
        pickled_error_file = None
        error_file = str(tmp_path / "error.txt")

    (tmp_path / "error.txt").write_text(
        'Failure # 1\nTraceback (most recent call last):\n  File "x.py", line 3\n'
        "    raise RuntimeError(cv.failure)\n"
        "RuntimeError: fold 1 diverged: loss became nan at epoch 2\n"
    )
    assert error_line(T()) == "RuntimeError: fold 1 diverged: loss became nan at epoch 2"

    class Wrapped(Exception):  # as a RayTaskError carries the trial's own exception
        def __init__(self, cause):
            super().__init__("long trace")
            self.cause = cause

    T.pickled_error_file = str(tmp_path / "error.pkl")
    with open(T.pickled_error_file, "wb") as f:
        cloudpickle.dump(Wrapped(RuntimeError("fold 0 diverged: loss became nan")), f)
    assert error_line(T()) == "RuntimeError: fold 0 diverged: loss became nan"


# ------------------------------------------------------------------ the spec
def test_the_message_and_the_search_share_one_spec_with_camel_case_names():
    spec = TuningSpec.model_validate(
        {
            "grid": {"phase1_lr": [1e-3, 1e-2]},
            "kFolds": 3,
            "numSamples": 2,
            "metric": "val_accuracy",
            "gracePeriod": 2,
            "reductionFactor": 3,
            "maxConcurrent": 1,
        }
    )
    assert (
        spec.k_folds,
        spec.num_samples,
        spec.grace_period,
        spec.reduction_factor,
        spec.max_concurrent,
    ) == (3, 2, 2, 3.0, 1)
    assert spec.mode == "max" and TuningSpec().mode == "min"
    request = parse_request(
        {
            "batch_id": "b",
            "dataset_uri": "/d",
            "mode": "tune",
            "tuning": {"grid": {"phase1_lr": [1e-3]}, "kFolds": 3},
        }
    )
    assert isinstance(request.tuning, TuningSpec)
    # the derived mode is not on the wire: a stored request validates again as it was
    stored = request.to_json()
    assert "mode" not in stored["tuning"]
    assert TrainingRequest.model_validate(stored).tuning == request.tuning


@pytest.mark.parametrize(
    "tuning, message",
    [
        ({"kFolds": 1}, "kFolds"),
        ({"k_folds": 21}, "k_folds"),
        ({"numSamples": 0}, "numSamples"),
        ({"metric": "f1"}, "metric"),
        ({"scheduler": "hyperband"}, "scheduler"),
        ({"grace_period": 0}, "grace_period"),
        ({"reduction_factor": 1}, "reduction_factor"),
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"grid": {"lr": [1]}}, "unknown hyperparameter"),
        ({"grid": {"phase1_lr": []}}, "grid for phase1_lr is empty"),
        ({"grid": {"phase1_lr": [-1]}}, "greater than 0"),
        ({"folds": 3}, "folds"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(tuning, message):
    with pytest.raises(ValidationError, match=message):
        TuningSpec.model_validate(tuning)


def test_where_a_search_runs_is_separate_from_the_spec():
    assert SearchRun().resources() == {"cpu": 1.0}
    assert SearchRun(cpus_per_trial=2, gpus_per_trial=1).resources() == {"cpu": 2, "gpu": 1}
    with pytest.raises(ValueError, match="at least some CPU"):
        SearchRun(cpus_per_trial=0)
    assert not set(TuningSpec.model_fields) & {"cpus_per_trial", "storage_path", "name"}


def test_the_spec_imports_no_torch():
    """services.intake.request (the API, the ingress) imports tuning.spec: it stays torch-free."""
    code = "import sys, tuning.spec; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_a_search_is_bounded():
    with pytest.raises(ValidationError, match="257 combinations; at most 256"):
        TuningSpec(grid={"phase1_lr": [i * 1e-4 + 1e-4 for i in range(257)]})
    with pytest.raises(ValidationError, match="num_samples"):
        TuningSpec(num_samples=10_000)
