"""GET /healthz: liveness and the database's answer."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from services.api.deps import DbDep
from services.api.schemas import ErrorOut, Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": ErrorOut}})
async def healthz(db: DbDep) -> Health:
    """Liveness and the database's answer to ``SELECT 1``."""
    await db(lambda s: s.execute(text("SELECT 1")))
    return Health(status="ok", database="ok")
