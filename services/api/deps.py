"""The API's dependencies, as ``Annotated`` aliases routes declare (the FastAPI full-stack
template's ``deps.py``): the settings, the database, the object store, read and write
access, and an existing job (or 404).

Every blocking call runs off the event loop (database calls on the Database's own
bounded pool, store reads with ``asyncio.to_thread``), and every dependency
is ``async``: a sync one costs Serve a thread-pool hop per request (ray PR #55457).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from services.api.schemas import JobId
from services.config import Settings
from services.db import repo
from services.db.models import TrainingJob
from services.db.repo import json_safe
from services.db.session import prepare_database, session_factory
from services.store.storage import Store, open_store, read_json

T = TypeVar("T")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


DB_THREADS = 8  # the deployment sizes it to the replica's max_ongoing_requests


class Database:
    """Runs a repo function in a session of its own, on a thread of a pool of its own:
    ``threads`` database calls at once (at most one per request a replica takes on), so
    they neither queue behind the store reads and PNG drawing in the event loop's default
    executor nor take more connections than the engine's pool holds."""

    def __init__(self, settings: Settings, threads: int = DB_THREADS):
        self.settings, self.threads = settings, threads
        self._pool: ThreadPoolExecutor | None = None
        self._sessions: sessionmaker[Session] | None = None

    def __getstate__(self) -> dict[str, Any]:  # Serve pickles the app: no pool, no engine
        return {**self.__dict__, "_pool": None, "_sessions": None}

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._sessions is None:  # retried on the next call while the database is down
            prepare_database(self.settings)
            self._sessions = session_factory(self.settings.db_url)
        with self._sessions() as s:
            return fn(s, *args)

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="api-db")
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(self.call, fn, *args)
        )


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


DbDep = Annotated[Database, Depends(get_db)]


class StoreReader:
    """The object store, opened on first use (the API answers without it)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._store: Store | None = None

    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    def bytes(self, key: str) -> bytes:
        return self.store().get_bytes(key)

    def json(self, key: str) -> dict[str, Any] | None:
        """A JSON report with NaN / inf as null, or None when it is not there or the
        store cannot be reached."""
        try:
            report: dict[str, Any] | None = json_safe(read_json(self.store(), key))
            return report
        except Exception:  # noqa: BLE001 - the store cannot be opened
            return None


async def get_store(request: Request) -> StoreReader:
    store: StoreReader = request.app.state.store
    return store


StoreDep = Annotated[StoreReader, Depends(get_store)]


# ------------------------------------------------------------------------ access
def _matches(given: str, *tokens: SecretStr | None) -> bool:
    ok = False
    for token in tokens:
        if token is not None:  # compare against every token: no early exit on a match
            ok |= secrets.compare_digest(given.encode(), token.get_secret_value().encode())
    return ok


def _presented(request: Request, basic: bool) -> str | None:
    """The token in ``Authorization: Bearer <token>`` (or, with ``basic``, the password of
    ``Authorization: Basic``), or None."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if basic and scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def _check_read(request: Request, settings: Settings, basic: bool) -> None:
    if settings.api_read_token is None:
        return
    challenge = 'Basic realm="colecionador"' if basic else "Bearer"
    token = _presented(request, basic)
    if token is None:
        raise HTTPException(
            401,
            "a token is needed to read: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": challenge},
        )
    if not _matches(token, settings.api_read_token, *(t for _, t in settings.write_tokens())):
        raise HTTPException(403, "invalid token")


# Module-level functions, not closures: Serve pickles the app to the replica, and a closure
# travels by value without the module globals its string annotations name (``from
# __future__ import annotations``), so FastAPI there took ``request`` and ``settings`` for
# query parameters and answered every read 422.
async def _read_bearer(request: Request, settings: SettingsDep) -> None:
    _check_read(request, settings, basic=False)


async def _read_basic(request: Request, settings: SettingsDep) -> None:
    _check_read(request, settings, basic=True)


_bearer = HTTPBearer(auto_error=False, description="COLECIONADOR_API_TOKEN")


async def _require_write(
    settings: SettingsDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The identity of the write token presented (``api``, or its name in api_writers)."""
    tokens = settings.write_tokens()
    if not tokens:
        raise HTTPException(
            403,
            "writes are disabled: no API token is configured "
            "(set COLECIONADOR_API_TOKEN or COLECIONADOR_API_WRITERS on the server)",
        )
    if creds is None or not creds.credentials:
        raise HTTPException(
            401,
            "a token is needed: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    who = None
    for name, token in tokens:  # every token compared: no early exit on a match
        if _matches(creds.credentials, token) and who is None:
            who = name
    if who is None:
        raise HTTPException(403, "invalid token")
    return who


# route-level dependencies: ``dependencies=[READ]``
READ = Depends(_read_bearer)
READ_PAGE = Depends(_read_basic)  # pages: HTTP Basic too, for a browser
WRITE = Depends(_require_write)
# a route that records who wrote: ``writer: WriterDep`` (the token's identity)
WriterDep = Annotated[str, Depends(_require_write)]


def not_found(what: str) -> HTTPException:
    return HTTPException(404, f"no {what}")


async def existing_job(job_id: JobId, db: DbDep) -> TrainingJob:
    job = await db(repo.get_job, job_id)
    if job is None:
        raise not_found(f"job {job_id}")
    return job


JobDep = Annotated[TrainingJob, Depends(existing_job)]
