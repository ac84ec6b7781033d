"""The one error-line helper: never raises, one line, bounded."""

from __future__ import annotations

import pytest

from services.errors import one_line as services_one_line
from training.messages import first_line, one_line, typed_line


def test_the_services_use_the_same_helper():
    assert services_one_line is one_line


@pytest.mark.parametrize("text", ["", "   ", "\n\n", " \n \t\n"])
def test_an_empty_message_gives_an_empty_line(text):
    assert first_line(text) == "" and one_line(text) == ""


def test_an_error_with_no_message_is_named_by_its_type():
    assert one_line(TimeoutError()) == "TimeoutError"
    assert one_line(ValueError("  \n ")) == "ValueError"
    assert typed_line(OSError()) == "OSError"


def test_a_multiline_message_gives_its_first_non_empty_line():
    text = "\n  \n  first problem  \nsecond\nthird"
    assert first_line(text) == "first problem"
    assert one_line(RuntimeError(text)) == "first problem"
    assert typed_line(RuntimeError(text)) == "RuntimeError: first problem"


def test_a_long_message_is_cut_at_the_limit():
    long = "x" * 2000
    assert len(one_line(long)) == 500 and len(one_line(ValueError(long), 30)) == 30
    assert first_line(long) == long and len(first_line(long, 7)) == 7
    assert typed_line(ValueError(long), 20) == "ValueError: " + "x" * 8


def _error(model, data):
    from pydantic import ValidationError

    try:
        model.model_validate(data)
    except ValidationError as e:
        return e
    raise AssertionError("validated")


def test_one_formatter_words_an_unknown_key_by_where_it_is():
    from services.intake.request import TrainingRequest
    from training.hyperparams import Hyperparameters
    from training.messages import problem_words, validation_message

    hp = _error(Hyperparameters, {"lr": 1})
    assert validation_message(hp) == "lr: unknown hyperparameter"
    body = {"batch_id": "b", "model_name": "m", "dataset_uri": "/d"}
    nested = _error(TrainingRequest, {**body, "hyperparameters": {"lr": 1}})
    assert "hyperparameters.lr: unknown hyperparameter" in validation_message(nested, root=None)
    top = _error(TrainingRequest, {**body, "colour": "red"})
    assert validation_message(top, root=None) == "colour: unknown field"
    # the HTTP 422 words each field the same, its loc led by "body"
    http = {"type": "extra_forbidden", "loc": ("body", "hyperparameters", "lr"), "msg": "x"}
    assert problem_words(http) == "unknown hyperparameter"
    assert problem_words({**http, "loc": ("body", "colour")}) == "unknown field"
    assert problem_words({"type": "value_error", "msg": "Value error, bad"}) == "bad"


def test_a_field_name_that_is_not_printable_is_escaped():
    from training.messages import validation_message

    errors = [{"type": "missing", "loc": ("a\nb",), "msg": "Field required"}]
    assert validation_message(errors, root=None) == "a\\nb: Field required"
