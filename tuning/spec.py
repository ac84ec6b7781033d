"""The one validated tuning spec: what the message's ``tuning``, ``colecionador tune`` and
``run_search`` mean by a search.

``TuningSpec`` holds what to search and how to judge it (the grid and the space, the search
strategy, k folds, sampling, the metric and its mode, the scheduler and its settings), with
the source system's camelCase names accepted. ``grid`` takes lists; ``space`` takes lists
and typed ranges (tuning.space: choice, uniform, loguniform, int). ``search``: ``grid``
tries every combination of the lists, ``random`` draws ``num_samples`` configs, ``tpe``
lets Optuna's TPE pick them; by default lists alone are a grid (random when num_samples
> 1) and a space with ranges is TPE. Where a search runs (resources, storage, name) is
the caller's: see tuning.search.SearchRun. Names and each value (a range's ends) on their
own are checked here; the whole space against a job's base hyperparameters (tunable
names, every combination) by tuning.space.validate_space, which needs that base.

No torch here: services.intake.request (the API and the ingress) imports this module.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from training.hyperparams import Hyperparameters
from tuning.report import MODES
from tuning.space import Range, check_values, coerce, ends, is_continuous, to_json

Metric = Literal["val_loss", "val_accuracy"]
Search = Literal["grid", "random", "tpe"]
MAX_CONFIGS = 256  # configs one search may train (grid combinations or random samples)
assert set(get_args(Metric)) == set(MODES), "tuning.report.MODES names every metric"


class TuningSpec(BaseModel):
    """A search: the grid (lists) and the space (lists and ranges) over hyperparameter
    names, the ``search`` strategy, ``k_folds`` stratified folds of train + val per config,
    ``num_samples`` (grid: 1, the whole grid; random and TPE: N configs), the ``metric``
    ASHA and the ranking use (the mean over folds), and the scheduler."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    space: dict[str, list[Any] | Range] = Field(default_factory=dict)
    search: Search | None = None  # None: grid for lists (random when num_samples > 1), else tpe
    k_folds: int = Field(5, ge=2, le=20, validation_alias=AliasChoices("k_folds", "kFolds"))
    num_samples: int = Field(
        1, ge=1, le=MAX_CONFIGS, validation_alias=AliasChoices("num_samples", "numSamples")
    )
    metric: Metric = "val_loss"
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1, validation_alias=AliasChoices("grace_period", "gracePeriod"))
    reduction_factor: float = Field(
        2.0, gt=1, validation_alias=AliasChoices("reduction_factor", "reductionFactor")
    )
    max_concurrent: int | None = Field(
        None, ge=1, validation_alias=AliasChoices("max_concurrent", "maxConcurrent")
    )

    @field_validator("grid")
    @classmethod
    def _known_names(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        unknown = sorted(set(grid) - set(Hyperparameters.model_fields))
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) in grid: {', '.join(unknown)}")
        combinations = 1
        for values in grid.values():
            combinations *= max(len(values), 1)
        if combinations > MAX_CONFIGS:
            raise ValueError(f"the grid has {combinations} combinations; at most {MAX_CONFIGS}")
        for name, values in grid.items():
            if not values:
                raise ValueError(f"grid for {name} is empty")
            for v in values:  # each value must be valid on its own
                Hyperparameters(**{name: v})
        return grid

    @field_validator("space", mode="before")
    @classmethod
    def _typed_space(cls, space: Any) -> Any:
        if not isinstance(space, dict):
            return space  # pydantic says what is wrong
        out = {}
        for key, raw in space.items():
            dim = coerce(str(key), raw)
            check_values(str(key), dim)
            out[key] = dim
        return out

    @model_validator(mode="after")
    def _consistent(self) -> TuningSpec:
        both = sorted(set(self.grid) & set(self.space))
        if both:
            raise ValueError(f"{', '.join(both)}: in both grid and space; give each key once")
        search = self.strategy
        continuous = [k for k, d in self.space.items() if is_continuous(d)]
        if search == "grid":
            if continuous:
                raise ValueError(
                    f"space {continuous[0]}: a range cannot be enumerated; "
                    "use search=random or search=tpe with num_samples"
                )
            if self.num_samples > 1:
                raise ValueError(
                    "search=grid tries every combination; num_samples must be 1 "
                    "(or use search=random or search=tpe)"
                )
            size = self.grid_size
            if size > MAX_CONFIGS:
                raise ValueError(f"the grid has {size} combinations; at most {MAX_CONFIGS}")
        else:
            if self.num_samples < 2:
                raise ValueError(
                    f"search={search} samples num_samples configs: give num_samples "
                    f"between 2 and {MAX_CONFIGS}"
                )
            if not self.dimensions:
                raise ValueError(f"search={search} needs a grid or a space to sample from")
        return self

    @property
    def dimensions(self) -> dict[str, Any]:
        """The grid and the space together: name -> list or typed range."""
        return {**self.grid, **self.space}

    @property
    def grid_size(self) -> int:
        """Configs the grid of the listed values holds (every combination)."""
        return math.prod(len(ends(d)) for d in self.dimensions.values())

    @property
    def strategy(self) -> str:
        """The search actually run: ``search``, or the default for what was given."""
        if self.search is not None:
            return self.search
        if any(is_continuous(d) or not isinstance(d, list) for d in self.space.values()):
            return "tpe"
        return "random" if self.num_samples > 1 else "grid"

    def discrete_values(self) -> dict[str, list[Any]]:
        """Every value a search may try by name, for the lists and choices (the plugin
        check reads loss and callbacks here)."""
        return {k: ends(d) for k, d in self.dimensions.items() if not is_continuous(d)}

    def space_json(self) -> dict[str, Any]:
        """The grid and the space as JSON (the tuning run's ``grid`` column)."""
        return {k: to_json(d) for k, d in self.dimensions.items()}

    @property
    def mode(self) -> str:
        """``min`` or ``max``: the metric's direction (derived, never on the wire)."""
        return MODES[self.metric]
