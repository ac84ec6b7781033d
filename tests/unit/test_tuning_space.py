"""The search space's grammar (tuning.space) and the spec's search strategy (tuning.spec)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.intake.request import parse_request
from training.hyperparams import Hyperparameters
from training.messages import validation_message
from tuning.space import (
    Choice,
    IntUniform,
    LogUniform,
    Uniform,
    parse_space,
    validate_space,
)
from tuning.spec import MAX_CONFIGS, TuningSpec


def test_space_text_gives_typed_ranges_and_lists_stay_lists():
    space = parse_space(
        [
            "phase1_lr=loguniform:1e-4:1e-2",
            "dropout=uniform:0:0.5",
            "optimizer=choice:adam,sgd",
            "batch_size=int:8:32",
            "hflip=true,false",
        ]
    )
    spec = TuningSpec(space=space, num_samples=12)
    assert spec.space == {
        "phase1_lr": LogUniform(low=1e-4, high=1e-2),
        "dropout": Uniform(low=0, high=0.5),
        "optimizer": Choice(values=["adam", "sgd"]),
        "batch_size": IntUniform(low=8, high=32),
        "hflip": [True, False],
    }
    assert spec.strategy == "tpe"  # ranges: TPE unless told otherwise
    assert spec.discrete_values() == {"optimizer": ["adam", "sgd"], "hflip": [True, False]}
    # the wire form (JSON objects) and the text shorthand are the same spec
    assert TuningSpec.model_validate(spec.model_dump(mode="json")) == spec
    assert (
        TuningSpec.model_validate(
            {"space": {k: v.text() if hasattr(v, "text") else v for k, v in spec.space.items()}}
            | {"numSamples": 12}
        )
        == spec
    )


@pytest.mark.parametrize(
    "fields, strategy",
    [
        ({"grid": {"phase1_lr": [1e-3, 1e-2]}}, "grid"),
        ({"space": {"phase1_lr": [1e-3, 1e-2]}}, "grid"),  # lists mean a grid in space too
        ({"grid": {"phase1_lr": [1e-3, 1e-2]}, "num_samples": 3}, "random"),
        ({"space": {"dropout": "uniform:0:0.5"}, "num_samples": 3}, "tpe"),
        ({"space": {"dropout": "uniform:0:0.5"}, "num_samples": 3, "search": "random"}, "random"),
        ({"grid": {"phase1_lr": [1e-3, 1e-2]}, "num_samples": 3, "search": "tpe"}, "tpe"),
        ({}, "grid"),
    ],
)
def test_the_search_strategy_defaults_to_grid_for_lists_and_tpe_for_ranges(fields, strategy):
    assert TuningSpec.model_validate(fields).strategy == strategy


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"space": {"phase1_lr": "loguniform:0:1"}, "num_samples": 2},
            "phase1_lr: loguniform needs low > 0",
        ),
        ({"space": {"phase1_lr": "uniform:1:1"}, "num_samples": 2}, "phase1_lr: uniform needs low"),
        (
            {"space": {"batch_size": "uniform:8:32"}, "num_samples": 2},
            "batch_size: uniform needs a",
        ),
        ({"space": {"dropout": "int:0:1"}, "num_samples": 2}, "dropout: int needs an integer"),
        ({"space": {"hflip": "int:0:1"}, "num_samples": 2}, "hflip: int needs an integer"),
        ({"space": {"dropout": "uniform:0:1.5"}, "num_samples": 2}, "dropout=1.5: dropout: "),
        ({"space": {"dropout": "uniform:a:b"}, "num_samples": 2}, "dropout: uniform bounds must"),
        ({"space": {"dropout": "uniform:0"}, "num_samples": 2}, "uniform:LOW:HIGH"),
        ({"space": {"dropout": "0.1,0.2"}}, "space dropout: expected a list"),
        ({"space": {"dropout": {"type": "normal"}}}, "space dropout: expected a list or a range"),
        ({"space": {"dropout": {"type": "uniform", "low": 0, "high": 0.5, "q": 1}}}, "q: unknown"),
        ({"space": {"optimizer": "choice:adam,rmsprop"}, "num_samples": 2}, "optimizer='rmsprop'"),
        ({"space": {"lr": [1e-3]}}, "unknown hyperparameter 'lr'"),
        ({"space": {"dropout": []}}, "space dropout: no values"),
        ({"space": {"dropout": [0.1] * (MAX_CONFIGS + 1)}}, "at most 256"),
        ({"grid": {"dropout": [0.1]}, "space": {"dropout": [0.2]}}, "dropout: in both grid"),
        ({"space": {"phase1_lr": "loguniform:1e-4:1e-2"}}, "give num_samples between 2"),
        ({"space": {"phase1_lr": "loguniform:1e-4:1e-2"}, "search": "grid"}, "phase1_lr: a range"),
        ({"grid": {"phase1_lr": [1e-3]}, "search": "grid", "num_samples": 2}, "num_samples must"),
        ({"search": "tpe", "num_samples": 2}, "needs a grid or a space"),
        ({"space": {"dropout": "uniform:0:0.5"}, "num_samples": 10**6}, "less than or equal"),
        ({"space": {"dropout": "uniform:0:0.5"}, "search": "bayes", "num_samples": 2}, "search"),
    ],
)
def test_a_bad_space_is_refused_naming_the_key(fields, message):
    with pytest.raises(ValidationError) as e:
        TuningSpec.model_validate(fields)
    assert message in validation_message(e.value, root=None)


def test_a_hostile_message_cannot_ask_for_unbounded_samples():
    base = {"batchId": "b", "datasetUri": "/data", "mode": "tune"}
    with pytest.raises(ValueError, match="tuning.numSamples"):
        parse_request(
            base | {"tuning": {"space": {"dropout": "uniform:0:0.5"}, "numSamples": 10**9}}
        )
    with pytest.raises(ValueError, match="tuning.space"):
        parse_request(base | {"tuning": {"space": {"dropout": list(range(10_000))}}})
    request = parse_request(
        base
        | {
            "tuning": {
                "space": {"phase1_lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
                "search": "random",
                "numSamples": 8,
            }
        }
    )
    assert request.tuning.strategy == "random" and request.tuning.num_samples == 8
    assert parse_request(request.to_json()).tuning == request.tuning  # stored and re-read


def test_the_space_is_checked_against_the_base_like_a_grid():
    base = Hyperparameters(phase2_epochs=0)
    dims = {"phase1_lr": LogUniform(low=1e-4, high=1e-2), "optimizer": Choice(values=["adam"])}
    assert validate_space({**dims, "dropout": ["0.1"]}, base) == {**dims, "dropout": [0.1]}
    with pytest.raises(ValueError, match="seed cannot be tuned"):
        validate_space({"seed": IntUniform(low=0, high=3)}, base)
    with pytest.raises(ValueError, match="phase1_epochs=0"):  # an end of the range
        validate_space({"phase1_epochs": IntUniform(low=0, high=3)}, base)


@given(
    low=st.floats(1e-8, 1.0, allow_nan=False),
    ratio=st.floats(1.01, 1e6, allow_nan=False),
    kind=st.sampled_from(["uniform", "loguniform"]),
)
def test_any_float_range_round_trips_through_its_text(low, ratio, kind):
    high = low * ratio
    (dim,) = TuningSpec(
        space={"phase1_lr": f"{kind}:{low!r}:{high!r}"}, num_samples=2
    ).space.values()
    assert (dim.type, dim.low, dim.high) == (kind, low, high)
    again = TuningSpec.model_validate({"space": {"phase1_lr": dim.model_dump()}, "num_samples": 2})
    assert again.space["phase1_lr"] == dim


def test_ranges_become_tune_domains_and_the_strategy_its_searcher():
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from tuning.search import searcher
    from tuning.space import to_tune

    lr = to_tune(LogUniform(low=1e-4, high=1e-2), grid=False)
    assert isinstance(lr, tune.search.sample.Float) and (lr.lower, lr.upper) == (1e-4, 1e-2)
    assert isinstance(lr.sampler, tune.search.sample.LogUniform)
    n = to_tune(IntUniform(low=8, high=32), grid=False)
    assert (n.lower, n.upper) == (8, 33)  # Tune's randint excludes its upper bound
    assert to_tune(Choice(values=["adam", "sgd"]), grid=True).categories == ["adam", "sgd"]

    space = {"space": {"dropout": "uniform:0:0.5"}, "num_samples": 8}
    assert isinstance(searcher(TuningSpec.model_validate(space), 0), OptunaSearch)
    limited = searcher(TuningSpec.model_validate({**space, "max_concurrent": 2}), 0)
    assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == 2
    rnd = TuningSpec.model_validate({**space, "search": "random"})
    assert isinstance(searcher(rnd, 0), BasicVariantGenerator)


def test_cli_tune_exits_2_on_a_bad_space_and_writes_nothing(tmp_path, make_dataset, capsys):
    from services.cli import main

    root = make_dataset(per_class=12)
    cases = [
        (["--space", "phase1_lr=loguniform:0:1", "--num-samples", "4"], "loguniform needs low"),
        (["--space", "phase1_lr=loguniform:1e-4:1e-2"], "give num_samples between 2"),
        (["--space", "dropout=uniform:0:0.5", "--search", "grid"], "dropout: a range cannot"),
        (["--space", "seed=int:0:3", "--num-samples", "4"], "seed cannot be tuned"),
        (["--space", "dropout=uniform:0:0.5", "--num-samples", "999"], "less than or equal"),
        (["--grid", "dropout=0.1", "--space", "dropout=0.2"], "in both grid and space"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as e:
            main(["tune", "--dataset", str(root), *args])
        assert e.value.code == 2
        assert message in capsys.readouterr().err, args
    assert not (tmp_path / "home" / "colecionador.db").exists()
