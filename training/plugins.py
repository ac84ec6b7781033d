"""What a request may make the service import or write: its plugins and file arguments.

A request names code by import path (``package.module:name``) in four places: ``loss``,
a callback's name, LearningRateScheduler's ``schedule`` and LambdaCallback's hooks.
Importing a module runs it, so a path is allowed only inside the modules the operator
lists (``allowed``: patterns such as ``mypkg.*``; none by default: built-ins only), and it
is checked here, on the text, before anything is imported. What is checked is decided by
where a value stands, not by how it is spelled: a loss or callback name that is not
built-in, and every argument that names code, must be an allowed import path (a bare
module name ``os`` is refused, not imported). ``training.losses.import_callable`` imports
nothing that is not of that form either. Built-in callbacks' file
arguments are plain names inside the run's own folder: relative, no ``..``.

Pure: no import of torch or of the callbacks themselves (the API and the ingress check
requests with it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")  # fullmatch
FILE_ARGUMENTS = ("path", "log_dir", "filename")  # CSVLogger, TensorBoard
BUILTIN_LOSSES = ("cross_entropy", "focal")


class PluginRefused(ValueError):
    """``str()`` names the field: ``hyperparameters.loss: ...``."""


def parse_patterns(text: str | None) -> list[str]:
    """``mypkg.*, other.losses`` as a list of module patterns."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def module_allowed(module: str, allowed: Sequence[str]) -> bool:
    """``mypkg.*`` allows ``mypkg`` and every module below it; a plain name, that module."""
    for pattern in allowed:
        if fnmatchcase(module, pattern):
            return True
        if pattern.endswith(".*") and module == pattern[:-2]:
            return True
    return False


def check_import_path(field: str, path: Any, allowed: Sequence[str]) -> None:
    if not isinstance(path, str) or not IMPORT_PATH.fullmatch(path):
        raise PluginRefused(f"{field}: {path!r} is not an import path 'package.module:name'")
    module = path.partition(":")[0]
    if not module_allowed(module, allowed):
        raise PluginRefused(
            f"{field}: {path!r} is outside the allowed plugin modules "
            f"({', '.join(allowed) or 'none: built-ins only'}; the operator sets "
            "COLECIONADOR_PLUGIN_MODULES)"
        )


def check_file_argument(field: str, value: Any) -> None:
    """A plain relative name inside the run's folder."""
    if not isinstance(value, str) or not value:
        raise PluginRefused(f"{field}: must be a file or folder name")
    for flavour in (PurePosixPath(value), PureWindowsPath(value)):
        if flavour.is_absolute() or flavour.anchor or ".." in flavour.parts:
            raise PluginRefused(
                f"{field}: {value!r} must be a name inside the run's own folder (relative, no '..')"
            )


# The built-in callbacks (training.callbacks.BUILTIN; a unit test keeps the two equal) and
# their arguments that name code: every string there is an import path, colon or not.
BUILTIN_CALLBACKS = (
    "EarlyStopping",
    "TerminateOnNaN",
    "ProgressLogger",
    "ModelCheckpoint",
    "CSVLogger",
    "LearningRateScheduler",
    "LearningRateMonitor",
    "TensorBoard",
    "LambdaCallback",
)
CODE_ARGUMENTS = {
    "LearningRateScheduler": ("schedule",),
    "LambdaCallback": None,  # every argument is a hook
}


def _code_arguments(name: str, spec: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(key, value) of the arguments of a callback spec that name code: a built-in's
    listed ones (LambdaCallback: all), and any other string holding a colon."""
    listed = CODE_ARGUMENTS.get(name, ())
    for key, value in spec.items():
        if key == "name" or key in FILE_ARGUMENTS:
            continue
        if listed is None or key in listed:
            yield key, value
        elif isinstance(value, str) and ":" in value:
            yield key, value


def import_paths(
    loss: str | None, callbacks: list[str | dict[str, Any]], where: str = "hyperparameters"
) -> Iterator[tuple[str, Any]]:
    """(field, value) for everything a loss and callbacks name that would be imported: a
    loss that is not built-in, a callback name that is not built-in, the arguments of a
    callback that name code. Whatever its spelling (with or without a colon, not even a
    string): each must then pass ``check_import_path``."""
    if loss is not None and loss not in BUILTIN_LOSSES:
        yield f"{where}.loss" if where == "hyperparameters" else where, loss
    for i, spec in enumerate(callbacks):
        field = f"{where}.callbacks.{i}" if where == "hyperparameters" else f"{where}.{i}"
        name = spec if isinstance(spec, str) else spec.get("name", "")
        if name not in BUILTIN_CALLBACKS:
            yield f"{field}.name", name
        if isinstance(spec, dict):
            for key, value in _code_arguments(str(name), spec):
                yield f"{field}.{key}", value  # schedule, LambdaCallback's hooks


def check(
    loss: str | None,
    callbacks: list[str | dict[str, Any]],
    allowed: Sequence[str],
    where: str = "hyperparameters",
) -> None:
    """PluginRefused, naming the field, for the first import path outside ``allowed`` or
    the first file argument that is not a plain relative name. ``where``: the field the
    values stand in (``hyperparameters``, or one value of a search: ``tuning.callbacks.1``)."""
    for field, path in import_paths(loss, callbacks, where):
        check_import_path(field, path, allowed)
    for i, spec in enumerate(callbacks):
        if isinstance(spec, dict):
            field = f"{where}.callbacks.{i}" if where == "hyperparameters" else f"{where}.{i}"
            for key in FILE_ARGUMENTS:
                if key in spec:
                    check_file_argument(f"{field}.{key}", spec[key])
