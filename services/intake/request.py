"""The request that comes in (queue ``training.requests``, POST /jobs, the CLI, ``python -m
services.jobs``): ``TrainingRequest`` and ``parse_request``. camelCase names from the source
system are accepted. What goes out (the events) is services/events/schemas.py."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from training.hyperparams import Hyperparameters, Text, validation_message
from tuning.spec import TuningSpec

MAX_INT = 2**31 - 1  # PostgreSQL integer columns


class TrainingRequest(BaseModel):
    """A request to train (or tune) on one batch of images. Whatever the database would
    refuse (NUL characters, non-finite numbers, integers past PostgreSQL's) is refused
    here, naming the field: a message is dead-lettered, never requeued forever."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    batch_id: str = Field(
        min_length=1, max_length=200, validation_alias=AliasChoices("batch_id", "batchId")
    )
    dataset_uri: Text = Field(
        min_length=1, max_length=2000, validation_alias=AliasChoices("dataset_uri", "datasetUri")
    )
    total_images: int | None = Field(
        None, ge=0, le=MAX_INT, validation_alias=AliasChoices("total_images", "totalImages")
    )
    model_name: str = Field(
        "classifier",
        min_length=1,
        max_length=200,
        pattern=r"^[\w.\-]+$",
        validation_alias=AliasChoices("model_name", "modelName"),
    )

    @field_validator("model_name")
    @classmethod
    def _plain_folder_name(cls, v: str) -> str:
        if v.strip(".") == "":  # ".", "..": another model's folder in the store
            raise ValueError("model_name must be a plain folder name, not '.' or '..'")
        return v

    mode: Literal["train", "tune"] = "train"
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    tuning: TuningSpec | None = None

    @field_validator("batch_id")
    @classmethod
    def _printable(cls, v: str) -> str:
        if not v.isprintable() or "/" in v:
            raise ValueError("batch_id must be printable and contain no '/'")
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _total(cls, data: Any, handler: Any) -> Any:
        """Whatever a value makes a validator raise is a validation error of the request
        (pydantic passes on anything but ValueError and AssertionError): the frameworks
        that validate the body themselves (FastAPI) answer 422, never 500."""
        try:
            return handler(data)
        except (ValidationError, ValueError, AssertionError):
            raise
        except Exception as e:  # noqa: BLE001 - turned into the request's rejection
            raise ValueError(unreadable(e)) from None

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        data["hyperparameters"] = self.hyperparameters.model_dump(mode="json", exclude_unset=True)
        return data


def unreadable(e: BaseException) -> str:
    """The reason for a request whose parsing or checking raised something other than a
    ValueError: the parser could not read it, named by the exception's type."""
    return f"the request could not be read ({type(e).__name__}: {e})"


def parse_request(body: bytes | str | dict[str, Any]) -> TrainingRequest:
    """Validate a request; raises ValueError with a one-line reason."""
    try:
        if isinstance(body, dict):
            return TrainingRequest.model_validate(body)
        return TrainingRequest.model_validate_json(body)
    except ValidationError as e:
        raise ValueError(validation_message(e, root=None)) from None
