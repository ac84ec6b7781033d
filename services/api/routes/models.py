"""Model versions: list, versions of a model, one version (metrics, gate, artifacts),
its confusion matrix."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.api import reads
from services.api.deps import READ, DbDep, StoreDep, not_found
from services.api.schemas import (
    ErrorOut,
    ModelName,
    ModelSummary,
    VersionDetail,
    VersionNo,
    VersionSummary,
)
from services.db import repo

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

    def load(s):
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
