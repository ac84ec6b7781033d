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

from services.errors import validation_message
from services.intake.model_ref import ModelRef
from training.hyperparams import Hyperparameters, Text
from tuning.spec import TuningSpec

MAX_INT = 2**31 - 1  # PostgreSQL integer columns
MAX_LABEL_NEXT = 1000  # label_next: the picks the driver ranks (it holds 2N embeddings)


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

    mode: Literal["train", "tune", "predict"] = "train"
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    tuning: TuningSpec | None = None
    # mode predict (bulk predictions, services/jobs/predict_step.py): the model to run, where
    # a copy of the predictions goes (besides the job's folder in the store), how many
    # labels a row keeps, and how many images to rank to label next (0: none)
    model: str | None = Field(None, max_length=300, description="NAME, NAME@ALIAS or NAME@vN")
    out_uri: Text | None = Field(
        None, min_length=1, max_length=2000, validation_alias=AliasChoices("out_uri", "outUri")
    )
    top_k: int | None = Field(
        None, ge=1, le=100, validation_alias=AliasChoices("top_k", "topK"), description="5"
    )
    label_next: int | None = Field(
        None,
        ge=0,
        le=MAX_LABEL_NEXT,
        strict=True,
        validation_alias=AliasChoices("label_next", "labelNext"),
        description="0 (off): how many images to rank to label next",
    )

    @field_validator("model")
    @classmethod
    def _model_ref(cls, v: str | None) -> str | None:
        return None if v is None else str(ModelRef.parse(v))

    @model_validator(mode="after")
    def _predict_fields(self) -> TrainingRequest:
        """A predict request names its model (and its job the model's name); ``model``,
        ``out_uri``, ``top_k`` and ``label_next`` belong to predict requests only, ``tuning``
        to tune ones."""
        if self.mode != "predict":
            for name in ("model", "out_uri", "top_k", "label_next"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only a predict request (mode predict) has it")
            return self
        if self.model is None:
            raise ValueError("model: a predict request names its model (NAME[@alias|@vN])")
        if self.tuning is not None:
            raise ValueError("tuning: a predict request does not tune")
        name = ModelRef.parse(self.model).name
        if "model_name" in self.model_fields_set and self.model_name != name:
            raise ValueError(f"model_name: {self.model_name!r} is not the model's ({name!r})")
        self.model_name = name
        return self

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
