"""The search space's grammar: what one hyperparameter of a search may take.

A dimension is a list of values (a grid: every value tried, or drawn from by a random or
TPE search), or a typed range the search samples:

- ``Choice``: one of these values (``choice:adam,sgd``), sampled, never enumerated;
- ``Uniform``: a float in [low, high] (``uniform:0:0.5``);
- ``LogUniform``: a float in [low, high], uniform in log space (``loguniform:1e-4:1e-2``);
- ``IntUniform``: an integer in [low, high], both included (``int:16:64``).

Text (``--space`` and the message's shorthand) and JSON objects (``{"type": "uniform",
"low": 0, "high": 0.5}``) give the same typed objects; errors name the key. A float range
needs a float hyperparameter, an integer range an integer one, and both ends must be valid
values of it. No Ray and no torch here (services.intake.request imports this through
tuning.spec); ``to_tune`` imports Ray Tune when a search is built.
"""

from __future__ import annotations

import math
import types
import typing
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training.hyperparams import Hyperparameters, parse_assignment
from training.messages import validation_message
from tuning.grid import _split_values

if TYPE_CHECKING:
    from typing_extensions import TypeIs

MAX_CHOICES = 256  # values one list or choice may hold


class _Dim(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Choice(_Dim):
    type: Literal["choice"] = "choice"
    values: list[Any] = Field(min_length=1, max_length=MAX_CHOICES)

    def text(self) -> str:
        return "choice:" + ",".join(map(str, self.values))


class Uniform(_Dim):
    type: Literal["uniform"] = "uniform"
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if not self.low < self.high:
            raise ValueError(f"{self.type} needs low < high, got {self.low} and {self.high}")
        return self

    def text(self) -> str:
        return f"{self.type}:{self.low:g}:{self.high:g}"


class LogUniform(Uniform):
    type: Literal["loguniform"] = "loguniform"  # type: ignore[assignment]

    @model_validator(mode="after")
    def _positive(self) -> LogUniform:
        if self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        return self


class IntUniform(_Dim):
    type: Literal["int"] = "int"
    low: int
    high: int  # included

    @model_validator(mode="after")
    def _ordered(self) -> IntUniform:
        if not self.low < self.high:
            raise ValueError(f"int needs low < high, got {self.low} and {self.high}")
        return self

    def text(self) -> str:
        return f"int:{self.low}:{self.high}"


Range = Annotated[Choice | Uniform | LogUniform | IntUniform, Field(discriminator="type")]
RANGES = (Choice, Uniform, LogUniform, IntUniform)
KINDS: dict[str, type[Choice | Uniform | LogUniform | IntUniform]]
KINDS = {"choice": Choice, "uniform": Uniform, "loguniform": LogUniform, "int": IntUniform}


def is_range(dim: Any) -> TypeIs[Choice | Uniform | LogUniform | IntUniform]:
    """A sampled dimension (a ``Choice`` included), as opposed to a grid's list."""
    return isinstance(dim, RANGES)


def is_continuous(dim: Any) -> bool:
    """A dimension with no list of values to enumerate (Uniform, LogUniform, IntUniform)."""
    return isinstance(dim, (Uniform, IntUniform))


def parse_text(key: str, text: str) -> list[Any] | dict[str, Any]:
    """``--space`` text of one key: ``v1,v2`` (a grid's list, read like ``--set`` values),
    ``choice:v1,v2``, ``uniform:LO:HI``, ``loguniform:LO:HI`` or ``int:LO:HI``. Returns
    the list or the range's JSON (validated by the spec); ValueError names the key."""
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:  # a plain list of values
        return _values(key, text)
    if kind == "choice":
        return {"type": "choice", "values": _values(key, rest)}
    bounds = [p.strip() for p in rest.split(":")]
    if len(bounds) != 2 or not all(bounds):
        raise ValueError(f"space {key}: {kind} expects {kind}:LOW:HIGH, got {text!r}")
    try:
        low, high = (int(b) if kind == "int" else float(b) for b in bounds)
    except ValueError:
        what = "integers" if kind == "int" else "numbers"
        raise ValueError(f"space {key}: {kind} bounds must be {what}, got {text!r}") from None
    return {"type": kind, "low": low, "high": high}


def _values(key: str, raw: str) -> list[Any]:
    out = []
    for piece in _split_values(raw):
        if not piece:
            raise ValueError(f"space {key}: empty value in {raw!r}")
        out.append(parse_assignment(f"{key}={piece}")[1])  # unknown names raise here
    return out


def parse_space(assignments: typing.Iterable[str]) -> dict[str, Any]:
    """``["phase1_lr=loguniform:1e-4:1e-2", "optimizer=adam,sgd"]`` -> the space's JSON."""
    space: dict[str, Any] = {}
    for text in assignments:
        if "=" not in text:
            raise ValueError(f"--space expects key=range or key=v1,v2, got {text!r}")
        key, raw = (p.strip() for p in text.split("=", 1))
        if key not in Hyperparameters.model_fields:
            raise ValueError(f"unknown hyperparameter {key!r} in space")
        if key in space:
            raise ValueError(f"space key {key!r} given twice")
        space[key] = parse_text(key, raw)
    return space


def coerce(key: str, raw: Any) -> list[Any] | Range:
    """One dimension of the wire form (list, ``"kind:..."`` text or ``{"type": ...}``)
    as a list or a typed range; ValueError naming the key."""
    if isinstance(raw, str):
        raw = parse_text(key, raw)
        if isinstance(raw, list):
            raise ValueError(
                f"space {key}: expected a list, {{'type': ...}} or 'kind:...' text "
                "(choice, uniform, loguniform, int)"
            )
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise ValueError(f"space {key}: no values")
        if len(raw) > MAX_CHOICES:
            raise ValueError(f"space {key}: {len(raw)} values; at most {MAX_CHOICES}")
        return list(raw)
    if is_range(raw):
        return raw
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("type"), str)
        or raw["type"] not in KINDS
    ):
        raise ValueError(
            f"space {key}: expected a list or a range with type one of {', '.join(KINDS)}"
        )
    try:
        return KINDS[raw["type"]].model_validate(raw)
    except ValidationError as e:
        raise ValueError(f"space {key}: {validation_message(e, root=None)}") from None


def _field_kind(key: str) -> set[object]:
    """The scalar types a hyperparameter takes (``float | None`` -> {float, NoneType})."""
    ann = Hyperparameters.model_fields[key].annotation
    if typing.get_origin(ann) in (Union, types.UnionType):
        return set(typing.get_args(ann))
    return {ann}


def check_values(key: str, dim: list[Any] | Range) -> None:
    """Each value (or each end of a range) valid on its own for hyperparameter ``key``,
    and a range of the hyperparameter's own type; ValueError naming the key."""
    if key not in Hyperparameters.model_fields:
        raise ValueError(f"unknown hyperparameter {key!r} in space")
    kinds = _field_kind(key)
    if isinstance(dim, Uniform) and float not in kinds:
        raise ValueError(f"space {key}: {dim.type} needs a float hyperparameter")
    if isinstance(dim, IntUniform) and (int not in kinds or bool in kinds):
        raise ValueError(f"space {key}: int needs an integer hyperparameter")
    if isinstance(dim, (Uniform, IntUniform)):
        values: list[Any] = [dim.low, dim.high]
    else:
        values = dim.values if isinstance(dim, Choice) else dim
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"space {key}: {v} is not a finite number")
        try:
            Hyperparameters(**{key: v})
        except ValidationError as e:
            raise ValueError(f"space {key}={v!r}: {validation_message(e)}") from None


def ends(dim: list[Any] | Range) -> list[Any]:
    """Values that stand for the dimension in whole-space checks: every listed value, or
    a range's two ends."""
    if isinstance(dim, (Uniform, IntUniform)):
        return [dim.low, dim.high]
    return list(dim.values) if isinstance(dim, Choice) else list(dim)


def to_json(dim: list[Any] | Range) -> list[Any] | dict[str, Any]:
    return dim.model_dump(mode="json") if is_range(dim) else list(dim)


def to_tune(dim: list[Any] | Range, *, grid: bool) -> Any:
    """Ray Tune's domain: a list is ``tune.grid_search`` in a grid search and
    ``tune.choice`` otherwise; ranges map to ``uniform``, ``loguniform``, ``randint``
    (upper bound exclusive in Tune, so ``high + 1``)."""
    from ray import tune

    if isinstance(dim, list):
        return tune.grid_search(dim) if grid else tune.choice(dim)
    if isinstance(dim, Choice):
        return tune.choice(list(dim.values))
    if isinstance(dim, LogUniform):
        return tune.loguniform(dim.low, dim.high)
    if isinstance(dim, Uniform):
        return tune.uniform(dim.low, dim.high)
    return tune.randint(dim.low, dim.high + 1)


def validate_space(
    dims: dict[str, list[Any] | Range], base: Hyperparameters | dict[str, Any] | None = None
) -> dict[str, list[Any] | Range]:
    """The grid's checks (tuning.grid.validate_grid) for every dimension on top of the
    job's ``base``: names that may be tuned, each listed value (a choice's too) and a
    range's two ends valid there, every combination of them too. Returns the dimensions
    with each listed value as the recipe reads it."""
    from tuning.grid import validate_grid

    standing = {k: ends(d) for k, d in dims.items()}
    checked = validate_grid(standing, base)  # NOT_TUNABLE, values and combinations
    out: dict[str, list[Any] | Range] = {}
    for key, dim in dims.items():
        if isinstance(dim, list):
            out[key] = checked[key]
        elif isinstance(dim, Choice):
            out[key] = Choice(values=checked[key])
        else:
            out[key] = dim
    return out
