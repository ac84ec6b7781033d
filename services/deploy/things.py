"""One step per thing ``up`` makes exist and ``down`` removes, but the Serve
applications (apps.py): the database's schema, the ingress actor and Serve itself. Each
step looks at what runs, leaves it when it fits, replaces it when not, creates it when
missing, and answers with the line that says which."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.engine import make_url

from services import ingress
from services.config import Settings
from services.db.session import current_revision, upgrade
from services.deploy.options import API_APP, UpOptions
from services.deploy.recipe import Recipe, differences, read, recipe
from services.deploy.serve_state import ServeState
from services.registry.apps import APP_PREFIX
from services.replica_settings import ReplicaSettings

Action = Literal["created", "kept", "replaced", "migrated", "removed", "absent", "failed"]
ASK_S = 30.0  # how long a running actor has to answer


@dataclass(frozen=True)
class Line:
    """What ``up`` or ``down`` did to one thing."""

    thing: str
    action: Action
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.thing}: {self.action}" + (f" ({self.detail})" if self.detail else "")


def ours(app: str) -> bool:
    """Whether a Serve application is one ``up`` deploys (and ``down`` deletes)."""
    return app == API_APP or app.startswith(APP_PREFIX)


def changed(diff: list[str]) -> str:
    """The names that differ, as a line's detail."""
    return "changed: " + ", ".join(diff)


# ------------------------------------------------------------------ the database
def where_database(url: str) -> str:
    """The database's kind, host and name, never its credentials."""
    u = make_url(url)
    host = f"{u.host}{f':{u.port}' if u.port else ''}/" if u.host else ""
    return f"{u.get_backend_name()} {host}{u.database or ''}"


def database(settings: Settings) -> Line:
    """Migrations to head (under the migrations' advisory lock, as every process takes)."""
    url = settings.db_url
    before = current_revision(url)
    upgrade(url)
    after, where = current_revision(url), where_database(url)
    if before == after:
        return Line("database", "kept", f"{where}, schema at {after}")
    if before is None:
        return Line("database", "created", f"{where}, schema at {after}")
    return Line("database", "migrated", f"{where}, schema {before} -> {after}")


# ------------------------------------------------------------------ the ingress
def _find_ingress() -> Any:
    try:
        return ingress.get_ingress()
    except ValueError:
        return None


def _deployed_as(actor: Any) -> Recipe | None:
    """The recipe a running ingress keeps; None when it has none (started by
    ``colecionador ingress`` or an older release) or does not answer."""
    import ray

    try:
        return read(ray.get(actor.deployed_as.remote(), timeout=ASK_S))
    except Exception:  # noqa: BLE001 - no such method, dead, restarting: replace it
        return None


def _consuming(actor: Any, settings: Settings) -> str:
    import ray

    status = ray.get(actor.status.remote(), timeout=ASK_S)
    if status.get("consuming"):
        return f"consuming {settings.requests_queue}"
    error = (status.get("last_error") or {}).get("error", "starting")
    return f"not consuming yet, retrying: {error}"


def ingress_up(settings: Settings, options: UpOptions, sent: ReplicaSettings) -> Line:
    """The detached ingress actor on the head, with these settings and prefetch (``sent``:
    ``ReplicaSettings.of(settings)``). SecretNotOnNode when its node lacks a secret."""
    wanted = recipe("ingress", settings, options.ingress())
    action: Action = "created"
    why = ""
    actor = _find_ingress()
    if actor is not None:
        diff = differences(_deployed_as(actor), wanted, settings)
        if not diff:
            return Line("ingress", "kept", _consuming(actor, settings))
        ingress.stop_ingress()
        action, why = "replaced", changed(diff)
    actor = ingress.start_ingress(
        settings,
        prefetch=options.prefetch,
        wait_s=options.ingress_wait_s,
        deployed_as=wanted.stored(),
        sent=sent,
    )
    return Line("ingress", action, "; ".join(filter(None, [why, _consuming(actor, settings)])))


def ingress_down() -> Line:
    """The ingress stopped cleanly (its loops end, held messages go back to the queue)."""
    if _find_ingress() is None:
        return Line("ingress", "absent")
    status = ingress.stop_ingress()
    error = status.get("stop_error")
    return Line("ingress", "removed", f"killed: {error}" if error else "stopped cleanly")


# ------------------------------------------------------------------ Serve itself
def _where(opts: dict[str, Any]) -> str:
    return f"HTTP {opts['host']}:{opts['port']}, proxies {opts['proxy_location']}"


def _start_serve(options: UpOptions) -> None:
    from ray import serve

    serve.start(
        proxy_location=options.proxy_location,
        http_options={"host": options.host, "port": options.port},
    )


def serve_up(options: UpOptions, state: ServeState | None) -> Line:
    """Serve on the cluster with these HTTP options. They are Serve's own, fixed while
    it runs: other options mean shutting Serve down and starting it again, which ``up``
    does only when every application on it is one of its own."""
    want = options.serve()
    if state is None:
        _start_serve(options)
        return Line("serve", "created", _where(want))
    have = state.serve_options()
    if have == want:
        return Line("serve", "kept", _where(want))
    foreign = sorted(a for a in state.apps if not ours(a))
    if foreign:
        return Line(
            "serve",
            "failed",
            f"runs {_where(have)}, not {_where(want)}, and other applications run on it "
            f"({', '.join(foreign)}): `serve shutdown` then `colecionador up` applies it",
        )
    from ray import serve

    serve.shutdown()
    _start_serve(options)
    return Line("serve", "replaced", f"{_where(want)}; was {_where(have)}")


def serve_down(state: ServeState | None) -> Line:
    """Serve shut down once no application runs on it."""
    if state is None:
        return Line("serve", "absent")
    if state.apps:
        others = ", ".join(sorted(state.apps))
        return Line("serve", "kept", f"other applications run on it: {others}")
    from ray import serve

    serve.shutdown()
    return Line("serve", "removed")
