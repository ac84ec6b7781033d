"""The HTTP API of DESIGN.md and a status page: a FastAPI app served by Ray Serve.

``create_app(settings)`` builds the app (testable on its own, e.g. on uvicorn): settings,
database and store on ``app.state``, the error handlers, one router per resource
(routes/jobs.py, routes/models.py, routes/lineage.py, routes/health.py, routes/predict.py:
it forwards to the model's own Serve application, services/registry/serving.py;
routes/compare.py) and the pages (home_page.py, job_page.py, compare_page.py,
version_page.py: a version's model card; label_next_page.py: a predict job's images to label
next); every successful GET carries an ETag and answers 304 to a matching If-None-Match
(caching.py). ``api_application(settings)`` is the Serve deployment (deployment.py);
``colecionador serve`` deploys it.

Reads (``GET``) are open unless ``api_read_token`` is set; then the read token or the write
token is needed, as ``Authorization: Bearer <token>``. Writes need ``Authorization: Bearer
<api_token>``; with no ``api_token`` every write is refused (default-deny). Errors are JSON
with a ``detail``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from services.api import compare_page, home_page, job_page, label_next_page, version_page
from services.api.caching import ConditionalGetMiddleware
from services.api.deps import DB_THREADS, Database, StoreReader
from services.api.edges import BodyLimit, SecurityHeaders, docs_routes
from services.api.routes import compare, health, jobs, lineage, metrics, models, predict
from services.api.schemas import ErrorOut
from services.config import Settings
from services.errors import problem_words

if TYPE_CHECKING:
    from services.replica_settings import ReplicaSettings

log = logging.getLogger("colecionador.api")

CANCEL_WAIT_S = 30.0  # how long POST /jobs/{id}/cancel waits for the Ray job to end


def create_app(
    settings: Settings, *, cancel_wait_s: float = CANCEL_WAIT_S, db_threads: int = DB_THREADS
) -> FastAPI:
    """The FastAPI app of DESIGN.md ("HTTP") for ``settings``; ``db_threads`` database
    calls at once (the deployment makes it its ``max_ongoing_requests``)."""
    app = FastAPI(
        title="colecionador",
        version="0.1.0",
        description="Training jobs, their per-epoch metrics, and model versions with the "
        "quality gate's outcome. Writes need `Authorization: Bearer <token>` "
        "(COLECIONADOR_API_TOKEN); reads are open unless "
        "COLECIONADOR_API_READ_TOKEN is set.",
        responses={422: {"model": ErrorOut, "description": "invalid request"}},
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )  # edges.docs_routes: read rule
    app.state.settings, app.state.cancel_wait_s = settings, cancel_wait_s
    app.state.db, app.state.store = Database(settings, db_threads), StoreReader(settings)
    app.state.predict_handles = {}  # model name -> its predict application's handle
    app.add_middleware(ConditionalGetMiddleware)  # ETag on reads, 304 on If-None-Match
    app.add_middleware(SecurityHeaders)
    # outermost: 413 before anything reads the body
    app.add_middleware(BodyLimit, upload_bytes=int(settings.api_upload_mb * 2**20))
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]  # Starlette types a handler for Exception
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(Exception, _crash)
    for router in (
        health.router,
        jobs.router,
        models.router,
        lineage.router,
        predict.router,
        compare.router,
        metrics.router,
        home_page.router,
        job_page.router,
        compare_page.router,
        version_page.router,
        label_next_page.router,
        docs_routes,
    ):
        app.include_router(router)
    return app


async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each field, in the words the CLI and the dead-letter reasons use."""
    detail = [
        {
            "loc": list(err.get("loc", ())),
            "msg": problem_words(err),
            "type": str(err.get("type", "value_error")),
        }
        for err in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
    log.error("database error: %s", exc)
    return JSONResponse(
        {"detail": "the database is unavailable; try again"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _crash(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def api_application(settings: Settings, sent: ReplicaSettings | None = None, **kw: Any) -> Any:
    """The bound Serve application, for ``serve.run(api_application(settings), name=...)``;
    its replicas are sent ``sent`` (``ReplicaSettings.of(settings)``, computed here when
    not given: ~50 ms a secret, so ``up`` computes it once for all its applications).
    EmbeddedOnCluster (services.jobs.ray_jobs) when the connected cluster has several
    nodes and the settings are one node's embedded database or store: a replica placed
    elsewhere would answer from an empty one."""
    from services.api.deployment import api_deployment
    from services.jobs.ray_jobs import refuse_embedded
    from services.replica_settings import ReplicaSettings

    refuse_embedded(settings, ("database", "store"))

    sent = sent if sent is not None else ReplicaSettings.of(settings)
    return api_deployment(settings, **kw).bind(sent)
