"""Model versions: list, versions of a model, one version (metrics, gate, artifacts),
its confusion matrix; a model's aliases and their history, promote a version (moves an
alias), a model's promotion mode."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from sqlalchemy.orm import Session

from services.api import reads
from services.api.deps import READ, WRITE, DbDep, SettingsDep, StoreDep, WriterDep, not_found
from services.api.schemas import (
    AliasMoveOut,
    AliasOut,
    ErrorOut,
    ModelAliases,
    ModelName,
    ModelSummary,
    Promoted,
    PromoteIn,
    PromotionModeIn,
    VersionDetail,
    VersionNo,
    VersionSummary,
)
from services.db import repo
from services.events import outbox
from services.registry import promotion

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}}

router = APIRouter(
    prefix="/models", tags=["models"], dependencies=[READ], responses={404: {"model": ErrorOut}}
)


@router.get("", response_model=list[ModelSummary])
async def list_models(db: DbDep) -> list[ModelSummary]:
    """Every model with its latest version and gate verdict."""
    return await db(reads.models)


@router.get("/{name}/versions", response_model=list[VersionSummary])
async def model_versions(name: ModelName, db: DbDep) -> list[VersionSummary]:
    found = await db(reads.versions, name)
    if not found:
        raise not_found(f"model {name}")
    return found


@router.get("/{name}/versions/{version}", response_model=VersionDetail)
async def model_version(
    name: ModelName, version: VersionNo, db: DbDep, store: StoreDep
) -> VersionDetail:
    """Metrics, the gate rule by rule, and the artifact URIs of one version."""

    def load(s: Session) -> VersionDetail | None:
        mv = repo.get_version(s, name, version)
        return None if mv is None else reads.version_detail(s, mv, store)

    found = await db(load)
    if found is None:
        raise not_found(f"version {version} of model {name}")
    return found


@router.get(
    "/{name}/versions/{version}/confusion_matrix.png",
    response_class=Response,
    responses=reads.PNG_RESPONSES,
)
async def model_confusion(
    name: ModelName, version: VersionNo, db: DbDep, store: StoreDep
) -> Response:
    """The test split's confusion matrix, as stored with the version."""
    return await reads.confusion_png(db, store, name, version)


# ------------------------------------------------------- aliases and promotion (issue 16)
@router.get("/{name}/aliases", response_model=ModelAliases)
async def model_aliases(name: ModelName, db: DbDep) -> ModelAliases:
    """The model's aliases, its promotion mode and every alias move, newest first."""

    def load(s: Session) -> ModelAliases | None:
        if repo.latest_version(s, name) is None:
            return None
        return ModelAliases(
            model_name=name,
            promotion=repo.promotion_mode(s, name),
            aliases=[AliasOut.model_validate(a) for a in repo.model_aliases(s, name)],
            history=[AliasMoveOut.model_validate(m) for m in repo.alias_moves(s, name, 500)],
        )

    found = await db(load)
    if found is None:
        raise not_found(f"model {name}")
    return found


@router.post(
    "/{name}/versions/{version}/promote",
    response_model=Promoted,
    responses={409: {"model": ErrorOut}, **AUTH_ERRORS},
)
async def promote_version(
    name: ModelName,
    version: VersionNo,
    body: PromoteIn,
    db: DbDep,
    settings: SettingsDep,
    writer: WriterDep,
) -> Promoted:
    """Point an alias (default ``production``) at this version; recorded (who, when, why)
    and published as a ModelPromoted event. 404: no such version; 409: the alias already
    points there; 422: the gate rejected the version and no ``reason`` was given."""

    def move(s: Session) -> dict[str, Any]:
        try:
            event = promotion.promote(
                s, settings, name, version, body.alias, by=writer, reason=body.reason
            )
        except promotion.PromotionError:
            s.rollback()
            raise
        s.commit()
        return event

    try:
        event = await db(move)
    except promotion.PromotionError as e:
        detail: Any = str(e)
        if e.field is not None:
            detail = [{"loc": ["body", e.field], "msg": str(e), "type": "value_error"}]
        raise HTTPException(e.status, detail) from None
    if event.get("job_id") is not None:
        await asyncio.to_thread(outbox.try_publish, settings, event["job_id"])
    return Promoted(**event)


@router.put(
    "/{name}/promotion",
    response_model=PromotionModeIn,
    dependencies=[WRITE],
    responses=AUTH_ERRORS,
)
async def set_promotion(name: ModelName, body: PromotionModeIn, db: DbDep) -> PromotionModeIn:
    """``auto``: an approved version becomes ``production`` by itself; ``manual``: only
    POST .../promote moves it."""
    await db(repo.set_promotion_mode, name, body.mode)
    return body
