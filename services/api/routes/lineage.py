"""A version's lineage (trained on what, from what) and its model card as written with it."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Response
from sqlalchemy.orm import Session

from services.api.deps import READ, DbDep, StoreDep, StoreReader, not_found
from services.api.schemas import ErrorOut, ModelName, VersionNo
from services.db import repo
from services.registry.card_inputs import version_lineage
from services.registry.card_types import Lineage
from services.store.artifacts import MODEL_CARD_FILE, version_prefix

MARKDOWN = "text/markdown; charset=utf-8"

router = APIRouter(
    prefix="/models", tags=["models"], dependencies=[READ], responses={404: {"model": ErrorOut}}
)


@router.get("/{name}/versions/{version}/lineage", response_model=Lineage)
async def model_version_lineage(name: ModelName, version: VersionNo, db: DbDep) -> Lineage:
    """The data set (location and fingerprint), the job and batch, the starting weights
    (torchvision's by name, a parent version of this registry, or a file), every
    hyperparameter and those that differ from the defaults, and the search of a tune job."""

    def load(s: Session) -> Lineage | None:
        mv = repo.get_version(s, name, version)
        return None if mv is None else version_lineage(s, mv)

    found = await db(load)
    if found is None:
        raise not_found(f"version {version} of model {name}")
    return found


def _card_bytes(store: StoreReader, key: str) -> bytes | None:
    """The stored card, None when the store says it is not there; raises when the store
    cannot be read (then it cannot tell)."""
    try:
        return store.bytes(key)
    except Exception:
        if not store.store().exists(key):
            return None
        raise


@router.get(
    "/{name}/versions/{version}/model_card.md",
    response_class=Response,
    responses={200: {"content": {MARKDOWN: {}}, "description": "the card, Markdown"}},
)
async def model_version_card(
    name: ModelName, version: VersionNo, db: DbDep, store: StoreDep
) -> Response:
    """model_card.md as the job wrote it into the version folder (promotions as of the
    commit; the page /ui/models/{name}/versions/{v} shows them as they are now). 404: no
    such version, or a version from before model cards; 502: the store cannot be read."""
    if await db(repo.get_version, name, version) is None:
        raise not_found(f"version {version} of model {name}")
    key = version_prefix(name, version) + MODEL_CARD_FILE
    try:
        card = await asyncio.to_thread(_card_bytes, store, key)
    except Exception as exc:  # noqa: BLE001 - a store error of any kind
        raise HTTPException(502, f"cannot read {key} from the store: {exc}") from None
    if card is None:
        raise HTTPException(
            404,
            f"version {version} of model {name} has no {MODEL_CARD_FILE} (made before model "
            f"cards were written): its page /ui/models/{name}/versions/{version} renders one",
        )
    return Response(card, media_type=MARKDOWN, headers={"Cache-Control": "max-age=3600"})
