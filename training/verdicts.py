"""The quality gate's two words, defined once: ``GateResult.status`` (training/evaluate.py)
says them, and so do the rows, the events and the API (services/statuses.py re-exports
them). Pure: no torch."""

from __future__ import annotations

from enum import StrEnum


class GateStatus(StrEnum):
    """The quality gate's verdict on a version (model_versions.status)."""

    APPROVED = "approved"
    REJECTED = "rejected"
