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
