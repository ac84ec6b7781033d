"""``up``: the service made to exist on the connected Ray cluster, in order (the schema,
the ingress, Serve, the API, a predict application per model with the alias); ``down``:
the ingress stopped and the applications deleted, the database and the store left as
they are. Both are idempotent: run again, they find what they made and say so.

A thing that fails is reported (``failed`` and why) and the others still go ahead, but
for the database, which everything else needs. Killed half-way, a rerun finishes the
work: what was made is kept, what was being replaced runs with one recipe or the other
and is compared again.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from services.config import Settings
from services.deploy import apps, things
from services.deploy.options import UpOptions
from services.deploy.serve_state import ServeState, serve_state
from services.deploy.things import Line
from services.errors import one_line
from services.registry.apps import APP_PREFIX, app_name
from services.replica_settings import ReplicaSettings

Say = Callable[[Line], None]


def bad_settings(settings: Settings) -> str | None:
    """What to set, in one line, when the settings cannot make a working service
    (checked before anything is touched); None when they can."""
    secrets_dir = os.environ.get("COLECIONADOR_SECRETS_DIR")
    if secrets_dir and not os.path.isdir(secrets_dir):
        return (
            f"COLECIONADOR_SECRETS_DIR={secrets_dir} is not a folder: set it to the folder "
            "of colecionador_<setting> files, or unset it"
        )
    return None


def _do(thing: str, step: Callable[[], Line]) -> Line:
    try:
        return step()
    except Exception as e:  # noqa: BLE001 - said, and the other things go ahead
        return Line(thing, "failed", f"{type(e).__name__}: {one_line(e)}")


def _state(lines: list[Line]) -> ServeState | None:
    try:
        return serve_state()
    except Exception as e:  # noqa: BLE001 - the controller did not answer
        lines.append(Line("serve", "failed", f"status: {type(e).__name__}: {one_line(e)}"))
        return None


def up(settings: Settings, options: UpOptions, say: Say = print) -> list[Line]:
    """Make every thing exist with these settings and options; a line per thing, said
    as it is done. The caller is connected to the cluster (services.jobs.ray_jobs)."""
    lines: list[Line] = []

    def done(*new: Line) -> None:
        for line in new:
            lines.append(line)
            say(line)

    schema = _do("database", lambda: things.database(settings))
    done(schema)
    if schema.action == "failed":
        return lines
    sent = ReplicaSettings.of(settings)  # the secrets' fingerprints, once for every thing
    done(_do("ingress", lambda: things.ingress_up(settings, options, sent)))
    before = _state(lines)
    serve_line = _do("serve", lambda: things.serve_up(options, before))
    done(serve_line)
    if serve_line.action == "failed" and before is None:
        return lines  # no Serve to deploy on
    state = _state(lines)  # after a replaced Serve, none of the applications run
    try:
        models = apps.served_models(settings, options.predict_alias)
        planned = [apps.plan_api(settings, options, state, sent)]
        planned += [apps.plan_predict(settings, options, state, m, sent) for m in models]
    except Exception as e:  # noqa: BLE001 - the database went away since
        done(Line("applications", "failed", f"{type(e).__name__}: {one_line(e)}"))
        return lines
    done(*apps.deploy(planned))
    wanted = {app_name(m) for m in models}
    stale = sorted(a for a in (state.apps if state else {}) if a.startswith(APP_PREFIX))
    why = f"no {options.predict_alias!r} alias"
    done(*apps.remove({a: why for a in stale if a not in wanted}))
    return lines


def down(say: Say = print) -> list[Line]:
    """Stop the ingress, delete ``up``'s applications, and shut Serve down when nothing
    else runs on it. The database and the store stay as they are."""
    lines: list[Line] = []

    def done(*new: Line) -> None:
        for line in new:
            lines.append(line)
            say(line)

    done(_do("ingress", things.ingress_down))
    state = _state(lines)
    if state is None:
        if not any(line.thing == "serve" for line in lines):
            done(Line("serve", "absent"))
        return lines
    try:
        done(*apps.remove({a: "" for a in sorted(state.apps) if things.ours(a)}))
    except Exception as e:  # noqa: BLE001 - said; Serve is left as it is
        done(Line("applications", "failed", f"{type(e).__name__}: {one_line(e)}"))
        return lines
    done(_do("serve", lambda: things.serve_down(_state(lines))))
    return lines


def exit_code(lines: list[Line]) -> int:
    """0 when every thing is as wanted, 1 when one failed."""
    return 1 if any(line.action == "failed" for line in lines) else 0
