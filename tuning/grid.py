"""Grids: parse, validate and expand the search space over hyperparameter names.

A grid maps hyperparameter names to the values to try (``--grid key=v1,v2`` or the
message's ``tuning.grid``). It is validated like ``--set``: unknown names, ill-typed values
and combinations the recipe rejects are errors, and so are names that must stay fixed for
a fair comparison (``NOT_TUNABLE``: the data, the split, the gate). ``num_samples`` 1
searches the whole grid (``tune.grid_search`` per key); ``num_samples`` N > 1 is a random
search: N configs, each key drawn from its values (``tune.choice``), seeded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from training.hyperparams import Hyperparameters, parse_assignment
from training.messages import validation_message

# Names a grid may not vary: the search must compare configs on the same data, folds and
# held-out test split, and the final model is judged once, by the job's own gate.
NOT_TUNABLE = {
    "image_size": "images are decoded once, at the job's image_size",
    "weights": "the starting weights are loaded once for the whole search",
    "seed": "the seed fixes the split and the folds, the same for every config",
    "val_frac": "the split is fixed for the whole search",
    "test_frac": "the split is fixed for the whole search (the test split stays held out)",
    "val_max": "the split is fixed for the whole search",
    "test_max": "the split is fixed for the whole search (the test split stays held out)",
    "min_per_class": "the data is checked once, before the search",
    "on_bad_image": "the data is checked once, before the search",
    "gate_accuracy": "the gate judges the final model only",
    "gate_precision": "the gate judges the final model only",
    "gate_recall": "the gate judges the final model only",
}
MAX_GRID = 10_000  # configs a grid may expand to


def _split_values(raw: str) -> list[str]:
    """Split ``v1,v2,...`` at top-level commas: ``[3,6],[5,10]`` is two values."""
    cur: list[str]
    parts, depth, quote, cur = [], 0, None, []
    for ch in raw:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_grid(assignments: Iterable[str]) -> dict[str, list[Any]]:
    """``["phase1_lr=1e-3,1e-2", "optimizer=adam,sgd"]`` -> ``{name: [values]}``.

    Each value is read like a ``--set`` value (JSON, ``true``/``false``, ``none``, or a
    string); a list-valued name takes JSON lists: ``milestones=[3,6],[5,10]``. Unknown
    names, a name given twice, and empty values are errors (ValueError, one line). The
    values are checked against the recipe by :func:`validate_grid`.
    """
    grid: dict[str, list[Any]] = {}
    for text in assignments:
        if "=" not in text:
            raise ValueError(f"--grid expects key=v1,v2,..., got {text!r}")
        key, raw = (p.strip() for p in text.split("=", 1))
        if key in grid:
            raise ValueError(f"grid key {key!r} given twice; list its values once: {key}=v1,v2")
        values = []
        for piece in _split_values(raw):
            if not piece:
                raise ValueError(f"grid {key}: empty value in {raw!r}")
            _, value = parse_assignment(f"{key}={piece}")  # unknown names raise here
            values.append(value)
        grid[key] = values
    return grid


def validate_grid(
    grid: Mapping[str, Sequence[Any]], base: Hyperparameters | Mapping[str, Any] | None = None
) -> dict[str, list[Any]]:
    """Check a grid against the recipe and return it with each value as the recipe reads
    it (``"1e-3"`` -> 0.001). Every value is validated on top of ``base`` (like ``--set``)
    and so is every combination (e.g. phase1_epochs=0 with phase2_epochs=0)."""
    base_values = base.effective() if isinstance(base, Hyperparameters) else dict(base or {})
    clean: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if key not in Hyperparameters.model_fields:
            raise ValueError(f"unknown hyperparameter {key!r} in grid")
        if key in NOT_TUNABLE:
            raise ValueError(f"grid: {key} cannot be tuned: {NOT_TUNABLE[key]}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(f"grid {key}: expected a list of values, got {values!r}")
        if not values:
            raise ValueError(f"grid {key}: no values")
        out = []
        for v in values:
            try:
                hp = Hyperparameters(**{**base_values, key: v})
            except ValidationError as e:
                raise ValueError(f"grid {key}={v!r}: {validation_message(e)}") from None
            coerced = hp.effective()[key]
            if coerced in out:
                raise ValueError(f"grid {key}: value {v!r} given twice")
            out.append(coerced)
        clean[key] = out
    size = math.prod(len(v) for v in clean.values())
    if size > MAX_GRID:
        raise ValueError(f"grid expands to {size} configs; at most {MAX_GRID}")
    for config in expand_grid(clean):
        try:
            Hyperparameters(**{**base_values, **config})
        except ValidationError as e:
            raise ValueError(f"grid config {config}: {validation_message(e)}") from None
    return clean


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every config of the grid (``itertools.product`` order: for sizes, bounds and
    checks; Tune makes the same set of trials, in its own order)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def total_epochs(hp: Hyperparameters) -> int:
    return hp.phase1_epochs + hp.phase2_epochs


def max_epochs(grid: Mapping[str, Sequence[Any]], base: Hyperparameters) -> int:
    """The longest config's epochs: ASHA's max_t."""
    values = base.effective()
    return max(total_epochs(Hyperparameters(**{**values, **c})) for c in expand_grid(grid))
