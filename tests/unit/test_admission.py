"""The trust boundary's one door (services/intake/admission.py): whatever a request holds, ``admit``
returns a checked request or a Rejection with one printable line; it never raises.

Requests are generated over the whole schema (TrainingRequest's JSON Schema, tuning ``grid``
and ``space`` included), then mutated (a value swapped for arbitrary JSON at any depth), and
as arbitrary JSON and bytes. The suite's Hypothesis profile is derandomized (conftest); what
an exploring run found is kept below as ``@example``s."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.config import Settings
from services.intake.admission import Rejection, admit, rejection
from services.intake.request import TrainingRequest
from tests.schema_strategy import from_json_schema

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
schema_requests = from_json_schema(TrainingRequest.model_json_schema(by_alias=False))
# what the schema cannot say (a printable batch id without '/', a location under a root) drawn
# often enough that most requests get past the first field to the checks behind it
batch_ids = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp"), exclude_characters="/"),
    min_size=1,
    max_size=20,
)
locations = st.sampled_from(["s3://d/x/", "s3://d/a/../b", "s3://e/x", "/etc", "rel/ative"])
plausible = st.builds(
    lambda body, batch, uri: {**body, "batch_id": batch, "dataset_uri": uri},
    schema_requests,
    batch_ids,
    locations | st.text(max_size=30),
)


@st.composite
def mutated(draw: st.DrawFn) -> object:
    """A request of the schema with one value, at any depth, replaced by arbitrary JSON."""
    body = draw(plausible)
    node = body
    path = []
    while isinstance(node, dict | list) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append((node, key))
        node = node[key]
    if path:
        parent, key = path[-1]
        parent[key] = draw(json_values)
    return body


@pytest.fixture(scope="module")
def operator(tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp("home")
    return Settings(home=home, dataset_roots=f"{home},s3://d", plugin_modules="mypkg.*")


def _admitted_or_rejected(body: object, operator: Settings) -> TrainingRequest | Rejection:
    out = admit(body, operator)  # type: ignore[arg-type]
    if isinstance(out, Rejection):
        assert out.reason and out.reason.isprintable(), out.reason
        assert len(out.reason) <= 1000
        detail = out.detail()
        assert detail[0]["loc"][0] == "body" and detail[0]["msg"]
    else:
        assert isinstance(out, TrainingRequest)
        json.dumps(out.to_json())  # what is stored is JSON
    return out


BASE = {"batch_id": "b", "dataset_uri": "s3://d/x/"}


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(plausible | schema_requests | mutated())
@example({**BASE, "tuning": {"grid": {"\n": [1]}}})  # a newline key once leaked into a reason
@example({**BASE, "dataset_uri": "/" + "a" * 5000})  # OSError (name too long) in resolve()
@example({**BASE, "dataset_uri": "s3://d/x\x00y"})
@example({**BASE, "dataset_uri": "~U"})  # RuntimeError: could not determine home directory
@example({**BASE, "tuning": {"space": {"dropout": {"type": "uniform", "low": 0, "high": 1e309}}}})
@example({**BASE, "tuning": {"space": {"dropout": {"type": "choice", "values": [[]]}}}})
@example({**BASE, "tuning": {"space": {"lr": [1]}}})
@example({**BASE, "tuning": {"space": {"schedule": {"type": {}}}}})  # TypeError: unhashable
def test_every_request_of_the_schema_is_admitted_or_rejected(operator, body):
    _admitted_or_rejected(body, operator)
    _admitted_or_rejected(json.dumps(body, allow_nan=True), operator)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(json_values | st.binary(max_size=200))
def test_any_json_or_bytes_are_admitted_or_rejected(operator, body):
    _admitted_or_rejected(body, operator)


def test_an_unexpected_exception_is_the_requests_rejection():
    out = rejection(RecursionError("maximum recursion depth exceeded\nwhile decoding"))
    assert out.reason == (
        "the request could not be read (RecursionError: maximum recursion depth "
        "exceeded\\nwhile decoding)"
    )
    assert out.field is None and out.detail() == [
        {"loc": ["body"], "msg": out.reason, "type": "value_error"}
    ]


def test_a_rejection_names_its_field(operator):
    out = admit({**BASE, "hyperparameters": {"lr": 1}}, operator)
    assert isinstance(out, Rejection)
    assert out.field == "hyperparameters.lr"
    assert out.detail()[0]["loc"] == ["body", "hyperparameters", "lr"]


@pytest.mark.parametrize(
    "gate,field",
    [
        ({"gate_accuracy": 0.0}, "hyperparameters.gate_accuracy"),
        ({"gate_precision": 0.5}, "hyperparameters.gate_precision"),
        ({"gate_recall": 0.87}, "hyperparameters.gate_recall"),
    ],
)
def test_a_request_may_not_lower_the_operators_gate(tmp_path, gate, field, monkeypatch):
    for metric in ("ACCURACY", "PRECISION", "RECALL"):
        monkeypatch.delenv(f"COLECIONADOR_GATE_MIN_{metric}")
    operator = Settings(home=tmp_path, dataset_roots="s3://d")  # the defaults: .90/.88/.88
    out = admit({**BASE, "hyperparameters": gate}, operator)
    assert isinstance(out, Rejection) and out.field == field
    assert "below the operator's floor" in out.reason
    raised = {k: 0.99 for k in gate}  # stricter than the floor: fine
    assert isinstance(admit({**BASE, "hyperparameters": raised}, operator), TrainingRequest)
    assert isinstance(admit(BASE, operator), TrainingRequest)  # the defaults meet the floor


def test_the_driver_judges_by_the_stricter_of_request_and_floor(tmp_path):
    from services.intake.trust import judged_by
    from training.hyperparams import Hyperparameters

    operator = Settings(home=tmp_path, gate_min_accuracy=0.95, gate_min_recall=0.5)
    hp = judged_by(Hyperparameters(gate_accuracy=0.5, gate_recall=0.9), operator)
    assert (hp.gate_accuracy, hp.gate_precision, hp.gate_recall) == (0.95, 0.88, 0.9)


@pytest.mark.parametrize(
    "tuning,field",
    [
        ({"grid": {"weights": ["imagenet", None]}}, "tuning.grid"),
        ({"grid": {"seed": [1, 2]}}, "tuning.grid"),
        ({"space": {"image_size": [32, 64]}}, "tuning.grid"),
    ],
)
def test_a_search_the_driver_would_refuse_is_refused_on_admission(operator, tuning, field):
    out = admit({**BASE, "mode": "tune", "tuning": tuning}, operator)
    assert isinstance(out, Rejection) and out.field == field, out
    assert "cannot be tuned" in out.reason


@pytest.mark.parametrize(
    "hp,field",
    [
        ({"callbacks": ["os"]}, "hyperparameters.callbacks.0.name"),
        ({"callbacks": [{"name": "antigravity"}]}, "hyperparameters.callbacks.0.name"),
        (
            {"callbacks": [{"name": "LambdaCallback", "on_epoch_end": "this"}]},
            "hyperparameters.callbacks.0.on_epoch_end",
        ),
        (
            {"callbacks": [{"name": "LearningRateScheduler", "schedule": "antigravity"}]},
            "hyperparameters.callbacks.0.schedule",
        ),
        (
            {"callbacks": [{"name": "LambdaCallback", "on_epoch_end": ["os:system"]}]},
            "hyperparameters.callbacks.0.on_epoch_end",
        ),
        ({"callbacks": ["mypkg.cb:Cb\n"]}, "hyperparameters.callbacks.0.name"),
    ],
)
def test_code_named_without_a_colon_is_refused_before_any_import(operator, hp, field):
    import sys

    before = set(sys.modules)
    out = admit({**BASE, "hyperparameters": hp}, operator)
    assert isinstance(out, Rejection) and out.field == field, out
    assert not {"antigravity", "this"} & (set(sys.modules) - before)


def test_code_named_without_a_colon_in_a_tuning_grid_is_refused(operator):
    out = admit(
        {**BASE, "mode": "tune", "tuning": {"grid": {"callbacks": [["CSVLogger"], ["os"]]}}},
        operator,
    )
    assert isinstance(out, Rejection) and out.field == "tuning.callbacks.1.0.name", out


def test_the_builtin_callbacks_are_the_ones_the_plugin_check_knows():
    from training.callbacks import BUILTIN
    from training.plugins import BUILTIN_CALLBACKS

    assert set(BUILTIN) == set(BUILTIN_CALLBACKS)


def test_import_callable_imports_nothing_but_an_import_path():
    from training.losses import import_callable

    with pytest.raises(ValueError, match="not an import path"):
        import_callable("antigravity")


def test_a_set_is_streamed_by_its_count_or_by_its_decoded_size(tmp_path):
    settings = Settings(home=tmp_path, stream_min_images=8000, decode_memory_mb=4096)
    assert not settings.streams(7999, 224)  # 1.2 GB decoded: in memory
    assert settings.streams(8000, 32)  # the count
    assert settings.streams(7999, 1024)  # 25 GB decoded: over the budget, streamed
    assert not settings.streams(7999)  # no size known: the count alone


def test_a_search_over_the_operators_budget_of_epochs_is_refused(tmp_path):
    operator = Settings(home=tmp_path, dataset_roots="s3://d", max_tuning_epochs=1000)
    hp = {"phase1_epochs": 10, "phase2_epochs": 20}
    big = {"grid": {"dropout": [0.1, 0.2, 0.3, 0.4]}, "k_folds": 10}  # 4 x 10 x 30 = 1200
    out = admit({**BASE, "mode": "tune", "hyperparameters": hp, "tuning": big}, operator)
    assert isinstance(out, Rejection) and out.field == "tuning"
    assert "up to 1200 epochs" in out.reason and "at most 1000" in out.reason
    fits = {"grid": {"dropout": [0.1, 0.2, 0.3]}, "k_folds": 10}  # 900
    assert isinstance(
        admit({**BASE, "mode": "tune", "hyperparameters": hp, "tuning": fits}, operator),
        TrainingRequest,
    )
    sampled = {  # 8 samples x 5 folds x (10 + the largest phase-2 value searched, 40)
        "space": {"phase2_epochs": {"type": "int", "low": 5, "high": 40}},
        "num_samples": 8,
    }
    out = admit({**BASE, "mode": "tune", "hyperparameters": hp, "tuning": sampled}, operator)
    assert isinstance(out, Rejection) and "up to 2000 epochs" in out.reason
