"""Aliases and promotion: which version of a model answers as ``production`` (or
``staging``, or a name of the user's), and who moved it, when and why.

- An approved version becomes ``production`` by itself (``by: gate``), in the job's own
  transaction (services/jobs/driver.py), unless the model's promotion mode is ``manual``; it
  only ever moves forward (a late, older approval does not take production back).
- A person moves any alias with ``promote`` (POST /models/{name}/versions/{v}/promote,
  ``colecionador promote``): over a rejected version too, but only with a reason (a
  human override of the gate, recorded as such).

Every move is an ``alias_moves`` row and a ``ModelPromoted`` event staged in the same
transaction (the outbox publishes it). No torch here: the API imports this module.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from services.config import Settings
from services.db import repo
from services.events import mlflow_outbox, outbox
from services.events.schemas import ModelPromotedEvent
from services.statuses import GateStatus

PRODUCTION = "production"
GATE = "gate"  # who moved it: the quality gate's automatic promotion


class PromotionError(ValueError):
    """A move refused: ``status`` is the HTTP status (404, 409, 422), ``field`` the body
    field at fault (None when it is not about one)."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.field = status, field


def promote(
    s: Session,
    settings: Settings,
    model_name: str,
    version: int,
    alias: str,
    *,
    by: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """Point ``alias`` at ``version`` (staged with its event; the caller commits).
    Returns the ModelPromoted event's body; PromotionError when the version does not
    exist (404), the alias already points there (409), or the version was rejected by
    the gate and no reason was given (422)."""
    mv = repo.get_version(s, model_name, version)
    if mv is None:
        raise PromotionError(404, f"no version {version} of model {model_name}")
    if repo.version_for_alias(s, model_name, alias) == version:
        raise PromotionError(409, f"{alias} of {model_name} already points at version {version}")
    reason = (reason or "").strip() or None
    overrode = mv.status != GateStatus.APPROVED
    if overrode and reason is None:
        raise PromotionError(
            422,
            f"version {version} was rejected by the quality gate: promoting it overrides "
            "the gate and needs a reason",
            "reason",
        )
    body = _move(s, settings, model_name, version, alias, mv.job_id, by, reason, overrode)
    if body is None:
        raise PromotionError(409, f"{alias} of {model_name} already points at version {version}")
    return body


def auto_promote(
    s: Session, settings: Settings, model_name: str, version: int, job_id: int
) -> dict[str, Any] | None:
    """An approved version becomes ``production`` unless the model is set to manual
    promotion or production already points at a newer version. Staged in the caller's
    transaction; returns the event's body, or None when nothing moved."""
    if repo.promotion_mode(s, model_name) == "manual":
        return None
    return _move(
        s,
        settings,
        model_name,
        version,
        PRODUCTION,
        job_id,
        GATE,
        f"approved by the quality gate (job {job_id})",
        False,
        only_forward=True,
    )


def _move(
    s: Session,
    settings: Settings,
    model_name: str,
    version: int,
    alias: str,
    job_id: int | None,
    by: str,
    reason: str | None,
    overrode: bool,
    *,
    only_forward: bool = False,
) -> dict[str, Any] | None:
    event_id = uuid.uuid4().hex
    move = repo.move_alias(
        s,
        model_name,
        alias,
        version,
        by=by,
        reason=reason,
        overrode_gate=overrode,
        event_id=event_id,
        only_forward=only_forward,
    )
    if move is None:
        return None
    if mlflow_outbox.tracks(s, settings, model_name=model_name):  # mirrored in MLflow
        mv = repo.get_version(s, model_name, version)
        if mv is not None:
            mlflow_outbox.stage_alias(s, model_name, alias, mv)
    return outbox.stage(
        s,
        settings,
        ModelPromotedEvent(
            event_id=event_id,
            model_name=model_name,
            version=version,
            alias=alias,
            from_version=move.from_version,
            job_id=job_id,
            by=by,
            reason=reason,
            overrode_gate=overrode,
            at=move.moved_at or datetime.now(UTC),
        ),
    )
