"""Any JSON either validates as a training request or is refused with a one-line reason,
never another exception (Hypothesis), and hostile requests are refused naming the field."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.request import TrainingRequest, parse_request
from training.hyperparams import Hyperparameters

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
names = st.sampled_from(
    [
        "batch_id",
        "batchId",
        "dataset_uri",
        "total_images",
        "model_name",
        "mode",
        "hyperparameters",
        "tuning",
        "other",
    ]
)
hp_names = st.sampled_from([*Hyperparameters.model_fields, "learning_rate"])
requests = st.fixed_dictionaries(
    {"batch_id": st.text(max_size=30) | json_values, "dataset_uri": st.text(max_size=30)},
    optional={
        "hyperparameters": st.dictionaries(hp_names, json_values, max_size=4),
        "model_name": st.text(max_size=10) | json_values,
        "tuning": st.dictionaries(
            st.sampled_from(["grid", "k_folds", "num_samples"]), json_values, max_size=3
        ),
    },
)


def _validates_or_refuses(body) -> None:
    try:
        request = parse_request(body)
    except ValueError as e:
        reason = str(e)
        assert reason and "\n" not in reason
        return
    assert isinstance(request, TrainingRequest)
    json.dumps(request.to_json())  # what is stored is JSON


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(names, json_values, max_size=6) | requests)
def test_any_json_validates_or_is_refused_with_a_reason(body):
    _validates_or_refuses(body)
    _validates_or_refuses(json.dumps(body, allow_nan=True))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_validate_or_are_refused(raw):
    _validates_or_refuses(raw)


@pytest.mark.parametrize(
    "body,field",
    [
        ({"batch_id": "b", "dataset_uri": "d", "model_name": ".."}, "model_name"),
        ({"batch_id": "b", "dataset_uri": "d", "model_name": "."}, "model_name"),
        ({"batch_id": "b", "dataset_uri": "d", "model_name": "a/b"}, "model_name"),
        ({"batch_id": "../b", "dataset_uri": "d"}, "batch_id"),
        ({"batch_id": "b", "dataset_uri": "d" * 2001}, "dataset_uri"),
    ],
)
def test_hostile_names_are_refused_naming_the_field(body, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        parse_request(body)
