"""The hyperparameter contract: one model for ``--set``, ``--config``, the message and the DB.

Every name and default comes from DESIGN.md (Hyperparameters). Unknown names are an error,
never silently ignored, and every effective value (defaults included) is what gets stored.
``load_hyperparameters`` reads a config file and ``--set`` assignments into the model, for
every command line that takes them (the CLI and ``python -m services.jobs``).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from training.messages import first_line, validation_message


def storable(value: Any) -> Any:
    """Values every store of the contract keeps (JSON, PostgreSQL text and JSONB): no NUL
    characters, no NaN or infinity, at any depth."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            storable(k)
            storable(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            storable(v)
    return value


Text = Annotated[str, AfterValidator(storable)]

# Bounds on what one request may ask of the cluster (a message must not be able to tie up
# GPUs for ever or exhaust a worker's memory with one field).
MAX_EPOCHS = 1000  # per phase
MAX_BATCH = 4096  # per worker
MAX_CALLBACK_SPEC = 4000  # characters of the callbacks' JSON

# ``weights``: ``imagenet`` (the backbone's DEFAULT weights), a member of the backbone's
# weights enum (``IMAGENET1K_V2``, ``DEFAULT``) or its full name
# (``MobileNet_V2_Weights.IMAGENET1K_V2``). Anything else (a path, an s3:// URI) is a file.
_WEIGHTS_NAME = re.compile(r"(?:[A-Za-z0-9_]+_Weights\.)?[A-Z][A-Z0-9_]*")


def is_weights_name(value: str) -> bool:
    """Does ``weights`` name torchvision's registered weights rather than a file?"""
    return value.lower() == "imagenet" or _WEIGHTS_NAME.fullmatch(value) is not None


Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal[
    "plateau", "none", "step", "multistep", "exponential", "cosine", "cyclical", "onecycle"
]


class Hyperparameters(BaseModel):
    """Effective training settings of one job (or one tuning trial)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False
    )

    # model
    backbone: Text = Field("mobilenet_v2", max_length=100)
    weights: Text | None = Field(None, max_length=2000)
    image_size: int = Field(224, ge=8, le=1024)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)

    # the two phases
    batch_size: int = Field(32, gt=0, le=MAX_BATCH)
    phase1_epochs: int = Field(10, ge=0, le=MAX_EPOCHS)
    phase1_lr: float = Field(1e-3, gt=0)
    phase2_epochs: int = Field(20, ge=0, le=MAX_EPOCHS)
    phase2_lr: float = Field(1e-5, gt=0)
    unfreeze_last: int = Field(50, ge=0, le=100_000)

    # optimisation
    optimizer: Optimizer = "adam"
    weight_decay: float = Field(0.0, ge=0)
    schedule: Schedule = "plateau"
    factor: float = Field(0.1, gt=0, lt=1)
    plateau_patience: int = Field(2, ge=0, le=MAX_EPOCHS)
    step_size: int = Field(5, gt=0, le=MAX_EPOCHS)
    gamma: float = Field(0.5, gt=0, le=1)
    milestones: list[PositiveInt] = Field(default_factory=lambda: [5, 10], max_length=100)
    lr_min: float = Field(1e-6, ge=0)
    t_max: PositiveInt | None = None
    cycle_half: int = Field(2, gt=0, le=MAX_EPOCHS)
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)

    # callbacks
    early_stopping_patience: int = Field(5, ge=0, le=MAX_EPOCHS)
    min_delta: float = Field(0.0, ge=0)
    callbacks: list[str | dict[str, Any]] = Field(default_factory=list, max_length=20)

    # loss
    loss: Text = Field("cross_entropy", max_length=300)
    focal_gamma: float = Field(2.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["balanced"] | None = None
    sampler: Literal["weighted"] | None = None

    # step mechanics
    grad_clip: float | None = Field(None, gt=0)
    grad_accum: int = Field(1, gt=0, le=1024)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    loader_workers: int = Field(0, ge=0, le=64)  # DataLoader processes per training worker
    prefetch_factor: int = Field(2, ge=1, le=64)  # batches each loader process keeps ready
    ema_decay: float | None = Field(None, gt=0, lt=1)

    # augmentation (the source system's Keras ImageDataGenerator pipeline)
    augment: Literal["default", "none"] = "default"
    rotation: float = Field(20.0, ge=0, le=180)
    shift: float = Field(0.2, ge=0, lt=1)
    zoom: float = Field(0.2, ge=0, lt=1)
    hflip: bool = True

    # data
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy and torch seeds
    val_frac: float = Field(0.1, gt=0, lt=1)
    test_frac: float = Field(0.1, gt=0, lt=1)
    val_max: PositiveInt | None = None
    test_max: PositiveInt | None = None
    min_per_class: int = Field(10, ge=2, le=1_000_000)
    on_bad_image: Literal["fail", "skip"] = "fail"

    # data health and preflight (before training)
    fail_on: list[
        Literal[
            "imbalance",
            "duplicates",
            "near_duplicates",
            "leakage",
            "label_conflicts",
            # against the version in production (training/drift.py)
            "class_shift",
            "new_classes",
            "missing_classes",
            "version_leakage",
        ]
    ] = Field(default_factory=list)
    max_imbalance: float = Field(10.0, ge=1)
    near_duplicate_distance: int = Field(10, ge=0, le=32)  # hash candidates, then pixels
    preflight: bool = False
    use_suggested_lr: bool = False
    # label issues (issue #17): out-of-fold probabilities of every train + val image from a
    # linear head cross-validated on frozen-backbone features, fed to cleanlab
    label_check: bool = False

    # the quality gate (strictly greater than)
    gate_accuracy: float = Field(0.90, ge=0, le=1)
    gate_precision: float = Field(0.88, ge=0, le=1)
    gate_recall: float = Field(0.88, ge=0, le=1)
    # the gate's rule on model.onnx (issue #16): rejected unless ONNX Runtime gives the same
    # probabilities (training/export.py TOLERANCE) and top-1 labels as PyTorch on the test split
    gate_onnx_parity: bool = False
    # optional calibration rule (issue #17): rejected unless the test split's expected
    # calibration error after temperature scaling is below it (training/calibration.py)
    gate_ece: float | None = Field(None, gt=0, le=1)
    export_onnx: bool = True  # model.onnx and its parity check with every version

    @field_validator("augment", "schedule", mode="before")
    @classmethod
    def _null_means_none(cls, v: Any) -> Any:
        """A JSON/YAML null (``augment: null``, ``"schedule": null``) means "none", as
        the word does: no augmentation, a constant lr."""
        return "none" if v is None else v

    @field_validator("callbacks")
    @classmethod
    def _storable_callbacks(cls, v: list[Any]) -> list[Any]:
        if len(json.dumps(v, default=str)) > MAX_CALLBACK_SPEC:
            raise ValueError(f"callbacks take at most {MAX_CALLBACK_SPEC} characters of JSON")
        kept: list[Any] = storable(v)
        return kept

    @model_validator(mode="after")
    def _check(self) -> Hyperparameters:
        if self.phase1_epochs + self.phase2_epochs == 0:
            raise ValueError("phase1_epochs + phase2_epochs must be at least 1")
        if self.val_frac + self.test_frac >= 0.9:
            raise ValueError("val_frac + test_frac must leave at least 10% for training")
        if self.loss not in ("cross_entropy", "focal") and ":" not in self.loss:
            raise ValueError(
                "loss must be cross_entropy, focal, or an import path 'package.module:function'"
            )
        for spec in self.callbacks:
            if isinstance(spec, dict) and not isinstance(spec.get("name"), str):
                raise ValueError('each callback is a name or {"name": ..., **arguments}')
        if self.gate_onnx_parity and not self.export_onnx:
            raise ValueError("gate_onnx_parity needs export_onnx")
        if sorted(self.milestones) != self.milestones:
            raise ValueError("milestones must be increasing")
        return self

    def effective(self) -> dict[str, Any]:
        """All values, defaults included, as JSON-compatible data."""
        return self.model_dump(mode="json")


def field_names() -> list[str]:
    return list(Hyperparameters.model_fields)


def _literals(annotation: Any) -> set[Any]:
    """The values of every Literal in an annotation (through Optional, unions and
    Annotated), and None where the annotation admits None."""
    if annotation is type(None):
        return {None}
    origin = get_origin(annotation)
    if origin is Literal:
        return set(get_args(annotation))
    if origin is Annotated:
        return _literals(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return set().union(*(_literals(a) for a in get_args(annotation)))
    return set()


def _none_word(key: str, raw: str) -> str | None:
    """What the word ``none`` means for a field: the string where the field's allowed
    values include "none" (``augment=none``, ``schedule=none``), None where the field
    accepts None (``weights=none``), else the word itself for pydantic to judge."""
    allowed = _literals(Hyperparameters.model_fields[key].annotation)
    if "none" in allowed:
        return "none"
    return None if None in allowed else raw


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` from the command line into a name and a JSON-ish value.

    ``phase1_lr=3e-4`` gives a float, ``hflip=false`` a bool, ``milestones=[3,6]`` a list,
    ``weights=none`` None but ``augment=none`` and ``schedule=none`` the string "none"
    (those fields' values include the word); a list field takes one value or several
    (``fail_on=leakage``, ``fail_on=leakage,label_conflicts``); anything that is not JSON
    stays a string for pydantic to judge.
    """
    if "=" not in text:
        raise ValueError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in Hyperparameters.model_fields:
        raise ValueError(f"unknown hyperparameter {key!r}")
    raw = raw.strip()
    lowered = raw.lower()
    if lowered == "none":
        return key, _none_word(key, raw)
    if lowered == "null":
        return key, None
    if lowered in ("true", "false"):
        return key, lowered == "true"
    is_list = get_origin(Hyperparameters.model_fields[key].annotation) is list
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        if "," in raw and Hyperparameters.model_fields[key].annotation is not str:
            return key, [_json_or_word(p) for p in raw.split(",")]
        value = raw
    return key, [value] if is_list and not isinstance(value, list) else value


def _json_or_word(text: str) -> Any:
    """One item of ``a,b,c``: JSON where it parses (``3``), else the word (``leakage``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()


def _read_config(path: str) -> dict[str, Any]:
    """The mapping of a ``.json``, ``.yaml``/``.yml`` or ``.toml`` file, or of its
    ``hyperparameters`` key when it has one."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file not found: {path}")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - every parser has its own error
        raise ValueError(f"cannot parse {path}: {first_line(str(e))}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of hyperparameters")
    found: dict[str, Any] = data.get("hyperparameters", data)
    return found


def load_hyperparameters(config: str | None, assignments: list[str]) -> Hyperparameters:
    """``--config FILE`` then each ``--set key=value`` on top.

    Raises ValueError with one line saying why (a missing or unparsable file, an unknown
    name, an ill-typed value), so a command line can exit 2 before anything is written."""
    values: dict[str, Any] = _read_config(config) if config else {}
    for a in assignments:
        key, value = parse_assignment(a)
        values[key] = value
    try:
        return Hyperparameters(**values)
    except ValidationError as e:
        raise ValueError(validation_message(e)) from None
