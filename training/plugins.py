"""What a request may make the service import or write: its plugins and file arguments.

A request names code by import path (``package.module:name``) in four places: ``loss``,
a callback's name, LearningRateScheduler's ``schedule`` and LambdaCallback's hooks.
Importing a module runs it, so a path is allowed only inside the modules the operator
lists (``allowed``: patterns such as ``mypkg.*``; none by default: built-ins only), and it
is checked here, on the text, before anything is imported. Built-in callbacks' file
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

IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
FILE_ARGUMENTS = ("path", "log_dir", "filename")  # CSVLogger, TensorBoard


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


def check_import_path(field: str, path: str, allowed: Sequence[str]) -> None:
    if not IMPORT_PATH.match(path):
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


def import_paths(loss: str, callbacks: list[str | dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(field, import path) for every import path a loss and callbacks name."""
    if ":" in loss:
        yield "hyperparameters.loss", loss
    for i, spec in enumerate(callbacks):
        field = f"hyperparameters.callbacks.{i}"
        name = spec if isinstance(spec, str) else spec.get("name", "")
        if ":" in name:
            yield f"{field}.name", name
        if isinstance(spec, dict):
            for key, value in spec.items():
                if (
                    key != "name"
                    and isinstance(value, str)
                    and ":" in value
                    and key not in FILE_ARGUMENTS
                ):
                    yield f"{field}.{key}", value  # schedule, LambdaCallback's hooks


def check(loss: str, callbacks: list[str | dict[str, Any]], allowed: Sequence[str]) -> None:
    """PluginRefused, naming the field, for the first import path outside ``allowed`` or
    the first file argument that is not a plain relative name."""
    for field, path in import_paths(loss, callbacks):
        check_import_path(field, path, allowed)
    for i, spec in enumerate(callbacks):
        if isinstance(spec, dict):
            for key in FILE_ARGUMENTS:
                if key in spec:
                    check_file_argument(f"hyperparameters.callbacks.{i}.{key}", spec[key])
