"""The status words: StrEnums that are exactly the strings the rows, events and API held."""

from __future__ import annotations

import json

from services.api.schemas import Gate, StatusFilter
from services.events.schemas import ModelEvaluationEvent
from services.statuses import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    JOB_STATUSES,
    EventStatus,
    GateStatus,
    JobStatus,
)


def test_the_words_are_the_strings_they_were():
    assert list(JOB_STATUSES) == [
        "queued", "training", "evaluating", "success", "failed", "cancelled",
    ]  # fmt: skip
    assert set(ACTIVE_STATUSES) | set(FINAL_STATUSES) == set(JobStatus)
    assert list(GateStatus) == ["approved", "rejected"]
    assert list(EventStatus) == ["approved", "rejected", "failed", "cancelled"]
    assert json.dumps({"s": JobStatus.QUEUED}) == '{"s": "queued"}'
    assert f"{JobStatus.FAILED}" == "failed" and str(GateStatus.APPROVED) == "approved"


def test_schemas_serialize_plain_strings():
    gate = Gate(status="approved", rules=[])
    assert gate.model_dump(mode="json") == {"status": "approved", "rules": []}
    assert json.loads(gate.model_dump_json())["status"] == "approved"
    event = ModelEvaluationEvent.model_validate(
        {"event_id": "e", "job_id": 1, "batch_id": "b", "model_name": "m",
         "status": "cancelled", "finished_at": "2026-01-01T00:00:00Z"}
    )  # fmt: skip
    assert json.loads(event.model_dump_json())["status"] == "cancelled"


def test_the_status_filter_takes_empty_or_a_status():
    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(StatusFilter)
    assert adapter.validate_python("") == "" and adapter.validate_python("failed") == "failed"
    try:
        adapter.validate_python("bogus")
    except ValidationError as e:
        assert "'queued', 'training'" in str(e)
    else:
        raise AssertionError("a bogus status was taken")
