"""What a request may make the service do (docs/operations/security.md).

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
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError

from services.config import Settings
from services.errors import validation_message
from services.intake.request import TrainingRequest
from services.store.fetch import local_path
from training import plugins
from training.hyperparams import Hyperparameters, is_weights_name
from tuning.space import ends, validate_space
from tuning.spec import TuningSpec


def under(location: str, roots: list[str]) -> bool:
    """Whether ``location`` (a path, file:// or s3:// URI) lies under one of ``roots``."""
    try:
        return _under(location, roots)
    except (OSError, RuntimeError, ValueError):  # ~nobody, a name too long, a NUL: not ours
        return False


def _under(location: str, roots: list[str]) -> bool:
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
            top = PurePosixPath(r.path or "/")
            if key == top or top in key.parents:
                return True
    return False


def check_plugins(
    hp: Hyperparameters, settings: Settings, grid: dict[str, list[Any]] | None = None
) -> None:
    """PluginRefused (a ValueError) naming the field for an import path outside the
    allowed modules or a callback file argument outside the run's folder, in the
    hyperparameters and in a tuning search's listed values (a grid's lists, a space's choices)."""
    allowed = plugins.parse_patterns(settings.plugin_modules)
    plugins.check(hp.loss, hp.callbacks, allowed)
    for j, loss in enumerate((grid or {}).get("loss", [])):
        plugins.check(loss, [], allowed, where=f"tuning.loss.{j}")
    for j, callbacks in enumerate((grid or {}).get("callbacks", [])):
        plugins.check(None, list(callbacks), allowed, where=f"tuning.callbacks.{j}")


def check_gate(hp: Hyperparameters, settings: Settings) -> None:
    """ValueError naming the field for a gate threshold below the operator's floor: a
    request may ask for a stricter gate, never a weaker one."""
    for name, floor in settings.gate_floor().items():
        asked = getattr(hp, name)
        if name in hp.model_fields_set and asked < floor:
            setting = "COLECIONADOR_" + name.replace("gate_", "GATE_MIN_").upper()
            raise ValueError(
                f"hyperparameters.{name}: {asked} is below the operator's floor {floor} "
                f"(a request may raise the gate, not lower it; the operator sets {setting})"
            )


def judged_by(hp: Hyperparameters, settings: Settings) -> Hyperparameters:
    """``hp`` with each gate threshold at least the operator's floor: what the driver
    judges a model by (a row recorded before the floor was raised is held to it too)."""
    floor = settings.gate_floor()
    return hp.model_copy(update={k: max(getattr(hp, k), v) for k, v in floor.items()})


def check_tuning(request: TrainingRequest, settings: Settings) -> None:
    """ValueError naming the field for a search the driver would refuse (names that may not
    be tuned, values or combinations invalid on top of the request's hyperparameters) or
    one over the operator's budget of epochs."""
    if request.tuning is None:
        return
    try:
        validate_space(request.tuning.dimensions, request.hyperparameters)
    except ValidationError as e:
        raise ValueError(f"tuning.{validation_message(e, root=None)}") from None
    except ValueError as e:
        raise ValueError(f"tuning.{e}") from None
    budget = search_epochs(request.tuning, request.hyperparameters)
    if budget > settings.max_tuning_epochs:
        raise ValueError(
            f"tuning: the search trains up to {budget} epochs (configs x folds x epochs a "
            f"config); at most {settings.max_tuning_epochs} (COLECIONADOR_MAX_TUNING_EPOCHS)"
        )


def search_epochs(spec: TuningSpec, hp: Hyperparameters) -> int:
    """The most epochs a search may train: its configs (every grid combination, or
    ``num_samples``) x ``k_folds`` x the epochs of its longest config (both phases, the
    largest value searched where the epochs are searched)."""
    dims = spec.dimensions

    def most(name: str) -> int:
        return max(int(v) for v in ends(dims[name])) if name in dims else getattr(hp, name)

    configs = spec.grid_size if spec.strategy == "grid" else spec.num_samples
    return configs * spec.k_folds * (most("phase1_epochs") + most("phase2_epochs"))


def check_request(request: TrainingRequest, settings: Settings, *, roots: bool = True) -> None:
    """ValueError naming the field when the request points outside the roots, names
    code outside the allowed plugin modules, lowers the operator's gate or asks for a
    search its driver would refuse. ``roots=False``: the CLI's local user names their own
    data and weights (everything else is checked all the same)."""
    check_plugins(
        request.hyperparameters,
        settings,
        request.tuning.discrete_values() if request.tuning else None,
    )
    check_gate(request.hyperparameters, settings)
    check_tuning(request, settings)
    if roots:
        check_locations(request, settings)


def check_locations(request: TrainingRequest, settings: Settings) -> None:
    """ValueError naming the field for a dataset_uri, out_uri or weights outside the roots."""
    roots = settings.data_roots()
    if not under(request.dataset_uri, roots):
        raise ValueError(
            f"dataset_uri: {request.dataset_uri!r} is not under an allowed root "
            f"({', '.join(roots)}; the operator sets COLECIONADOR_DATASET_ROOTS)"
        )
    out = request.out_uri
    if out is not None and not under(out, settings.out_roots()):
        raise ValueError(
            f"out_uri: {out!r} is not under the store's predictions/ or an allowed root "
            f"({', '.join(roots)}; the operator sets COLECIONADOR_DATASET_ROOTS)"
        )
    weights = request.hyperparameters.weights
    if weights and not is_weights_name(weights) and not under(weights, settings.weights_roots()):
        raise ValueError(
            f"hyperparameters.weights: {weights!r} is not under an allowed root "
            f"or the store's models/ (COLECIONADOR_DATASET_ROOTS)"
        )
