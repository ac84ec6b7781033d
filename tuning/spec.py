"""The one validated tuning spec: what the message's ``tuning``, ``colecionador tune`` and
``run_search`` mean by a search.

``TuningSpec`` holds what to search and how to judge it (the grid, k folds, sampling, the
metric and its mode, the scheduler and its settings), with the source system's camelCase
names accepted. Where a search runs (resources, storage, name) is the caller's: see
tuning.search.SearchRun. The grid's names and each value on its own are checked here; the
whole grid against a job's base hyperparameters (tunable names, every combination) by
tuning.grid.validate_grid, which needs that base.

No torch here: services.messages (the API and the ingress) imports this module.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from training.hyperparams import Hyperparameters
from tuning.report import MODES

Metric = Literal["val_loss", "val_accuracy"]
MAX_CONFIGS = 256  # configs one search may train (grid combinations or random samples)
assert set(get_args(Metric)) == set(MODES), "tuning.report.MODES names every metric"


class TuningSpec(BaseModel):
    """A search: the grid over hyperparameter names, ``k_folds`` stratified folds of train +
    val per config, ``num_samples`` (1: the whole grid; N > 1: N random configs), the
    ``metric`` ASHA and the ranking use (the mean over folds), and the scheduler."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    grid: dict[str, list[Any]] = Field(default_factory=dict)
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

    @property
    def mode(self) -> str:
        """``min`` or ``max``: the metric's direction (derived, never on the wire)."""
        return MODES[self.metric]
