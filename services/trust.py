"""What a request may make the service do (README, "Security model").

- Read: its dataset_uri and weights must lie under the operator's roots
  (``COLECIONADOR_DATASET_ROOTS``; weights also under the store's ``models/``). Local
  paths are resolved (symbolic links too) before the check; S3 keys are compared by path
  segment and may not hold ``..``. The CLI's own ``--dataset PATH`` is the local user's
  choice and is not checked; the queue, HTTP and ``python -m services.jobs`` are.
- Import: the loss, callbacks, schedules and hooks it names by import path only inside
  ``COLECIONADOR_PLUGIN_MODULES`` (training/plugins.py), checked on every entry point,
  the CLI too, and again by the job driver, before anything is imported.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlparse

from services.config import Settings
from services.fetch import local_path
from services.messages import TrainingRequest
from training import plugins
from training.hyperparams import Hyperparameters


def _is_name(location: str) -> bool:
    """A weights name (imagenet, IMAGENET1K_V2, ...), not a path or URI."""
    return "/" not in location and "\\" not in location and "://" not in location


def under(location: str, roots: list[str]) -> bool:
    """Whether ``location`` (a path, file:// or s3:// URI) lies under one of ``roots``."""
    path = local_path(location)
    if path is not None:
        resolved = path.resolve()
        for root in roots:
            base = local_path(root)
            if base is not None and (
                resolved == base.resolve() or base.resolve() in resolved.parents
            ):
                return True
        return False
    parsed = urlparse(location)
    if parsed.scheme != "s3" or not parsed.netloc:
        return False
    key = PurePosixPath(parsed.path)
    if ".." in key.parts:
        return False
    for root in roots:
        r = urlparse(root)
        if r.scheme == "s3" and r.netloc == parsed.netloc:
            base = PurePosixPath(r.path or "/")
            if key == base or base in key.parents:
                return True
    return False


def check_plugins(
    hp: Hyperparameters, settings: Settings, grid: dict[str, list] | None = None
) -> None:
    """PluginRefused (a ValueError) naming the field for an import path outside the
    allowed modules or a callback file argument outside the run's folder, in the
    hyperparameters and in a tuning search's listed values (a grid's lists, a space's choices)."""
    allowed = plugins.parse_patterns(settings.plugin_modules)
    plugins.check(hp.loss, hp.callbacks, allowed)
    for loss in (grid or {}).get("loss", []):
        plugins.check(str(loss), [], allowed)
    for callbacks in (grid or {}).get("callbacks", []):
        plugins.check("", list(callbacks), allowed)


def check_request(request: TrainingRequest, settings: Settings) -> None:
    """ValueError naming the field when the request points outside the roots or names
    code outside the allowed plugin modules."""
    check_plugins(
        request.hyperparameters,
        settings,
        request.tuning.discrete_values() if request.tuning else None,
    )
    roots = settings.data_roots()
    if not under(request.dataset_uri, roots):
        raise ValueError(
            f"dataset_uri: {request.dataset_uri!r} is not under an allowed root "
            f"({', '.join(roots)}; the operator sets COLECIONADOR_DATASET_ROOTS)"
        )
    weights = request.hyperparameters.weights
    if weights and not _is_name(weights) and not under(weights, settings.weights_roots()):
        raise ValueError(
            f"hyperparameters.weights: {weights!r} is not under an allowed root "
            f"or the store's models/ (COLECIONADOR_DATASET_ROOTS)"
        )
