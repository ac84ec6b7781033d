"""Model versions: reserve the next number, read them, list the models."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.db.models import (
    ModelVersion,
)
from services.statuses import GateStatus


def next_version(s: Session, model_name: str) -> int:
    current = s.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_name == model_name)
    )
    return (current or 0) + 1


def reserve_version(
    s: Session, model_name: str, *, model_path: Callable[[int], str] | str, **fields: Any
) -> ModelVersion | None:
    """Insert the next version of ``model_name`` without committing: the row reserves the
    number (PostgreSQL's unique index makes a concurrent job wait, then fail) until the
    caller commits or rolls back. ``model_path``: the artifact URI, or a function of the
    version number that gives it. None if another job took that number first."""
    version = next_version(s, model_name)
    mv = ModelVersion(
        model_name=model_name,
        version=version,
        **fields,
        model_path=model_path(version) if callable(model_path) else model_path,
    )
    s.add(mv)
    try:
        s.flush()
    except IntegrityError:
        s.rollback()
        return None
    return mv


def versions(s: Session, model_name: str) -> Sequence[ModelVersion]:
    return s.scalars(
        select(ModelVersion)
        .where(ModelVersion.model_name == model_name)
        .order_by(ModelVersion.version)
    ).all()


def get_version(s: Session, model_name: str, version: int) -> ModelVersion | None:
    return s.scalar(
        select(ModelVersion).where(
            ModelVersion.model_name == model_name, ModelVersion.version == version
        )
    )


def latest_version(s: Session, model_name: str, status: str | None = None) -> ModelVersion | None:
    q = select(ModelVersion).where(ModelVersion.model_name == model_name)
    if status:
        q = q.where(ModelVersion.status == status)
    return s.scalar(q.order_by(ModelVersion.version.desc()).limit(1))


def job_versions(s: Session, job_id: int) -> Sequence[ModelVersion]:
    return s.scalars(select(ModelVersion).where(ModelVersion.job_id == job_id)).all()


def list_models(s: Session) -> list[dict[str, Any]]:
    """Every model name with its number of versions, its latest version (the row) and the
    number of its latest approved version (None if none was approved), by name."""
    counts = (
        select(
            ModelVersion.model_name,
            func.count().label("n"),
            func.max(ModelVersion.version).label("latest"),
        )
        .group_by(ModelVersion.model_name)
        .subquery()
    )
    approved = (
        select(ModelVersion.model_name, func.max(ModelVersion.version).label("v"))
        .where(ModelVersion.status == GateStatus.APPROVED)
        .group_by(ModelVersion.model_name)
        .subquery()
    )
    rows = s.execute(
        select(ModelVersion, counts.c.n, approved.c.v)
        .join(
            counts,
            (ModelVersion.model_name == counts.c.model_name)
            & (ModelVersion.version == counts.c.latest),
        )
        .outerjoin(approved, ModelVersion.model_name == approved.c.model_name)
        .order_by(ModelVersion.model_name)
    ).all()
    return [
        {"name": mv.model_name, "versions": n, "latest": mv, "latest_approved": v}
        for mv, n, v in rows
    ]
