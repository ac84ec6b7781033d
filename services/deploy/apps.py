"""The Serve applications ``up`` deploys: the API and a predict application per model.

Each is planned first (kept when the running one carries the wanted recipe and is
healthy, else created or replaced), then every one to deploy goes to Serve at once
(``serve.run_many``) and is awaited together: behind Ray's HAProxy ingress a replaced
or deleted replica stays reachable for a drain window (30 s by default,
``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S``) so that the load balancer lets go of
it, and one window for all beats one per application. Deletions go the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.deploy.options import API_APP, API_ROUTE, UpOptions
from services.deploy.recipe import KEY, Recipe, differences, recipe
from services.deploy.serve_state import ServeState, serve_state
from services.deploy.things import Action, Line, changed
from services.errors import one_line
from services.registry.apps import app_name
from services.replica_settings import ReplicaSettings

DELETE_WAIT_S = 180.0  # a drain window (30 s) and then some


@dataclass(frozen=True)
class Planned:
    """What one application will be: its line, and what to deploy (None: kept)."""

    line: Line
    target: Any = None  # ray.serve.RunTarget


def plan(
    name: str,
    wanted: Recipe,
    settings: Settings,
    state: ServeState | None,
    build: Callable[[dict[str, Any]], Any],
    route_prefix: str | None,
    detail: str,
) -> Planned:
    """Kept when the running application carries ``wanted`` and is healthy; else the
    application ``build(user_config)`` makes, to deploy under ``name``."""
    from ray.serve.api import RunTarget

    current = state.apps.get(name) if state is not None else None
    action: Action = "created"
    why = ""
    if current is not None:
        diff = differences(current.recipe, wanted, settings)
        if not diff and not current.broken:
            return Planned(Line(name, "kept", detail))
        action, why = "replaced", changed(diff) if diff else f"was {current.status}"
    target = RunTarget(target=build({KEY: wanted.stored()}), name=name, route_prefix=route_prefix)
    return Planned(Line(name, action, "; ".join(filter(None, [why, detail]))), target)


def plan_api(
    settings: Settings, options: UpOptions, state: ServeState | None, sent: ReplicaSettings
) -> Planned:
    """The API application (services/api/deployment.py) at the route prefix /; its
    replicas are sent ``sent`` (``ReplicaSettings.of(settings)``, computed once per up)."""
    from services.api import api_application

    def build(user_config: dict[str, Any]) -> Any:
        return api_application(
            settings,
            sent=sent,
            num_cpus=options.num_cpus,
            num_replicas=options.replicas,
            user_config=user_config,
        )

    detail = f"http://{options.host}:{options.port}{API_ROUTE}"
    if settings.api_token is None:
        detail += "; writes refused: COLECIONADOR_API_TOKEN is not set"
    wanted = recipe("api", settings, options.api())
    return plan(API_APP, wanted, settings, state, build, API_ROUTE, detail)


def served_models(settings: Settings, alias: str) -> list[str]:
    """The models whose ``alias`` (production) is set, by name."""
    with session_factory(settings.db_url)() as s:
        return sorted({a.model_name for a in repo.model_aliases(s) if a.alias == alias})


def plan_predict(
    settings: Settings,
    options: UpOptions,
    state: ServeState | None,
    model: str,
    sent: ReplicaSettings,
) -> Planned:
    """The model's predict application (services/registry/serving.py), no HTTP route;
    its replicas are sent ``sent``, as the API's."""
    from services.registry.serving import predict_application

    def build(user_config: dict[str, Any]) -> Any:
        return predict_application(
            settings,
            model,
            alias=options.predict_alias,
            num_replicas=options.predict_replicas,
            num_cpus=options.predict_num_cpus,
            max_batch_size=options.max_batch_size,
            batch_wait_timeout_s=options.batch_wait_ms / 1000,
            reload_s=options.reload_s,
            torch_threads=options.torch_threads,
            user_config=user_config,
            hard_cases=options.hard_cases(),
            sent=sent,
        )

    wanted = recipe("predict", settings, options.predict(model))
    detail = f"model {model}, the version behind {options.predict_alias!r}"
    if options.hard_cases() is not None:
        detail += "; keeps its hard cases"
    return plan(app_name(model), wanted, settings, state, build, None, detail)


def deploy(planned: list[Planned]) -> list[Line]:
    """Deploy every planned application at once and wait until they run; a line each
    (``failed`` with Serve's message for one that did not come up)."""
    from ray import serve

    targets = [p.target for p in planned if p.target is not None]
    error = ""
    if targets:
        try:
            serve.run_many(targets, wait_for_applications_running=True)
        except Exception as e:  # noqa: BLE001 - which ones failed: asked below
            error = f"{type(e).__name__}: {one_line(e)}"
    after = serve_state() if error else None
    lines = []
    for p in planned:
        app = after.apps.get(p.line.thing) if after is not None else None
        if p.target is None or not error or (app is not None and app.status == "RUNNING"):
            lines.append(p.line)
            continue
        status = app.status if app is not None else "absent"
        why = app.message if app is not None and app.message else error
        lines.append(Line(p.line.thing, "failed", f"{status}: {why}"))
    return lines


def remove(names: dict[str, str], wait_s: float = DELETE_WAIT_S) -> list[Line]:
    """Delete these applications (name -> why) at once and wait until they are gone."""
    from ray import serve

    for name in names:
        serve.delete(name, _blocking=False)
    left = list(names)
    deadline = time.monotonic() + wait_s
    while left and time.monotonic() < deadline:
        state = serve_state()
        left = [n for n in left if state is not None and n in state.apps]
        if left:
            time.sleep(0.5)
    return [
        Line(n, "failed", f"still there after {wait_s:.0f} s")
        if n in left
        else Line(n, "removed", w)
        for n, w in names.items()
    ]
