"""Aliases (production, staging, ...), their moves and each model's promotion mode."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from services.db.models import (
    PROMOTION_MODES,
    AliasMove,
    ModelAlias,
    ModelPromotion,
    utcnow,
)


def version_for_alias(s: Session, model_name: str, alias: str) -> int | None:
    """The version ``alias`` (e.g. ``production``) of ``model_name`` points at, or None."""
    return s.scalar(
        select(ModelAlias.version).where(
            ModelAlias.model_name == model_name, ModelAlias.alias == alias
        )
    )


def model_aliases(s: Session, model_name: str | None = None) -> Sequence[ModelAlias]:
    """The aliases of one model (or of every model), by model then alias."""
    q = select(ModelAlias).order_by(ModelAlias.model_name, ModelAlias.alias)
    if model_name is not None:
        q = q.where(ModelAlias.model_name == model_name)
    return s.scalars(q).all()


def alias_moves(s: Session, model_name: str | None = None, limit: int = 100) -> Sequence[AliasMove]:
    """The audit of alias moves, newest first (of one model, or of every model)."""
    q = select(AliasMove).order_by(AliasMove.id.desc()).limit(limit)
    if model_name is not None:
        q = q.where(AliasMove.model_name == model_name)
    return s.scalars(q).all()


def alias_moves_to(s: Session, model_name: str, version: int) -> Sequence[AliasMove]:
    """The moves that pointed an alias at this version, oldest first (its model card)."""
    return s.scalars(
        select(AliasMove)
        .where(AliasMove.model_name == model_name, AliasMove.to_version == version)
        .order_by(AliasMove.id)
    ).all()


def promotion_mode(s: Session, model_name: str) -> str:
    """``auto`` (the default) or ``manual``."""
    return (
        s.scalar(select(ModelPromotion.mode).where(ModelPromotion.model_name == model_name))
        or "auto"
    )


def set_promotion_mode(s: Session, model_name: str, mode: str) -> None:
    if mode not in PROMOTION_MODES:
        raise ValueError(f"promotion mode must be one of {', '.join(PROMOTION_MODES)}")
    _upsert(
        s,
        ModelPromotion,
        {"model_name": model_name, "mode": mode, "updated_at": utcnow()},
        ["model_name"],
        ["mode", "updated_at"],
    )
    s.commit()


def _upsert(
    s: Session,
    model: type,
    row: dict[str, Any],
    keys: list[str],
    changed: list[str],
    where: Any = None,
) -> int:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET changed [WHERE where]: one atomic
    statement on PostgreSQL and SQLite. Returns the rows written (0: ``where`` said no)."""
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(model).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_={k: stmt.excluded[k] for k in changed},
        where=where(stmt.excluded) if where is not None else None,
    )
    return cast(CursorResult[Any], s.execute(stmt)).rowcount  # an INSERT's: it has rowcount


def _lock_alias(s: Session, model_name: str, alias: str) -> int | None:
    """Lock the alias for this transaction (its row, and on PostgreSQL an advisory lock
    that also covers an alias with no row yet); the version it points at now."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"colecionador alias {model_name} {alias}"},
        )
    return s.scalar(
        select(ModelAlias.version)
        .where(ModelAlias.model_name == model_name, ModelAlias.alias == alias)
        .with_for_update()
    )


def move_alias(
    s: Session,
    model_name: str,
    alias: str,
    version: int,
    *,
    by: str,
    reason: str | None,
    overrode_gate: bool = False,
    event_id: str | None = None,
    only_forward: bool = False,
) -> AliasMove | None:
    """Point ``alias`` at ``version`` and record the move, without committing (the caller
    commits it with its event). None when nothing moved: the alias already points there,
    or (``only_forward``) at a newer version. One conditional upsert, so two movers at
    once never lose a move's audit row; on PostgreSQL movers of one alias take its
    advisory lock first, so the first move of an alias (no row to lock yet) is serialised
    too and the second mover's audit row says where the first one left it."""
    current = _lock_alias(s, model_name, alias)

    def when(new: Any) -> Any:
        cond = ModelAlias.version != new.version
        return cond & (ModelAlias.version < new.version) if only_forward else cond

    now = utcnow()
    written = _upsert(
        s,
        ModelAlias,
        {
            "model_name": model_name,
            "alias": alias,
            "version": version,
            "moved_at": now,
            "moved_by": by,
        },
        ["model_name", "alias"],
        ["version", "moved_at", "moved_by"],
        where=when,
    )
    if written != 1:
        return None
    move = AliasMove(
        model_name=model_name,
        alias=alias,
        from_version=current,
        to_version=version,
        moved_by=by,
        reason=reason,
        overrode_gate=overrode_gate,
        event_id=event_id,
        moved_at=now,
    )
    s.add(move)
    s.flush()
    return move
