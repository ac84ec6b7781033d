"""``POST /models/{name}/predict``: one or many images (multipart/form-data files, or JSON
with base64 strings) -> the top-k labels with probabilities, and the version that
answered. Reads follow the read-token rule.

The model runs elsewhere: in the model's own Serve application (services/registry/serving.py,
``predict-<name>``), reached through a deployment handle, so this app stays torch-free.
Multipart bodies are parsed as they stream in (Starlette's parser over
``python-multipart``), bounded: at most ``MAX_IMAGES`` files and ``MAX_FIELDS`` other
fields of ``MAX_FIELD_BYTES`` each (the files by the upload limit, services/api/edges.py);
a body over a bound is refused (422) as soon
as the bound is crossed, never after parsing the rest (20,000 empty parts once took the
stdlib ``email`` parser 13 s of the replica's event loop).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from services.api.deps import READ
from services.api.schemas import ErrorOut, ModelName
from services.errors import problem_words
from services.registry.apps import DEPLOYMENT_NAME, app_name

MAX_IMAGES = 64  # per request
MAX_FIELDS = 16  # form fields that are not files (ignored, but counted)
MAX_FIELD_BYTES = 64 * 2**10  # a field that is not a file (files: the upload limit, edges.py)


router = APIRouter(prefix="/models", tags=["predict"], responses={404: {"model": ErrorOut}})


class PredictIn(BaseModel):
    """JSON body: ``images`` (base64 strings, standard alphabet) or one ``image``."""

    model_config = ConfigDict(extra="forbid")

    images: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, max_length=MAX_IMAGES
    )
    image: str | None = Field(None, min_length=1)
    top_k: int = Field(5, ge=1, le=1000)


class Label(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    model_name: str
    alias: str | None = Field(None, description="the alias served (null: a pinned version)")
    version: int = Field(description="the version that answered")
    predictions: list[list[Label]] = Field(description="per image, the top-k, best first")


def _invalid(loc: list[Any], msg: str) -> HTTPException:
    return HTTPException(422, [{"loc": loc, "msg": msg, "type": "value_error"}])


async def _multipart(request: Request) -> list[bytes]:
    """Every file part's bytes (any field name), in order, parsed as the body streams in
    and refused (422) at the first part over a bound."""
    parser = MultiPartParser(
        request.headers,
        request.stream(),
        max_files=MAX_IMAGES,
        max_fields=MAX_FIELDS,
        max_part_size=MAX_FIELD_BYTES,
    )
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise _invalid(["body", "images"], e.message) from None
    try:
        files = []
        for _name, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append(await value.read())
        return files
    finally:
        await form.close()


def _from_json(raw: bytes) -> tuple[list[bytes], int]:
    try:
        body = PredictIn.model_validate_json(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise _invalid(["body", *err["loc"]], problem_words(err)) from None
    if (body.images is None) == (body.image is None):
        raise _invalid(["body", "images"], "give either images (a list) or image")
    texts = body.images if body.images is not None else [cast(str, body.image)]  # one is set
    field = "images" if body.images is not None else "image"
    images = []
    for i, text in enumerate(texts):
        try:
            images.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            loc = ["body", field, i] if field == "images" else ["body", field]
            raise _invalid(loc, "not base64") from None
    return images, body.top_k


async def _images(request: Request, k: int | None) -> tuple[list[bytes], int]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        images, top = await _multipart(request), k or 5
        if not images:
            raise _invalid(["body", "images"], "no image files in the form")
    elif content_type.startswith("application/json") or not content_type:
        images, top = _from_json(await request.body())
        top = k or top
    else:
        raise HTTPException(415, "send multipart/form-data files or JSON with base64 images")
    if len(images) > MAX_IMAGES:
        raise _invalid(["body", "images"], f"at most {MAX_IMAGES} images a request")
    return images, top


def _handle(request: Request, model_name: str) -> Any:
    """The model's deployment handle (kept per app), or 404 when it is not served."""
    import ray
    from ray import serve
    from ray.serve.exceptions import RayServeException

    handles = request.app.state.predict_handles
    if model_name not in handles:
        if not ray.is_initialized():  # the app on bare uvicorn: Serve would start a Ray
            raise HTTPException(404, f"model {model_name} is not served (no Ray Serve here)")
        try:
            handles[model_name] = serve.get_deployment_handle(
                DEPLOYMENT_NAME, app_name=app_name(model_name)
            )
        except (RayServeException, KeyError, ValueError):
            raise HTTPException(
                404, f"model {model_name} is not served (colecionador serve --predict)"
            ) from None
    return handles[model_name]


@router.post(
    "/{name}/predict",
    response_model=Prediction,
    dependencies=[READ],
    responses={422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": PredictIn.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "images": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                    }
                },
            },
            "required": True,
        }
    },
)
async def predict(
    name: ModelName,
    request: Request,
    k: Annotated[int | None, Query(ge=1, le=1000, description="top-k (multipart)")] = None,
) -> Prediction:
    """The top-k labels of each image, by the version behind the model's alias."""
    images, top = await _images(request, k)
    try:
        answer = await _handle(request, name).predict.remote(images, top)
    except HTTPException:
        raise
    except Exception as e:  # noqa: BLE001 - Ray's errors: the app gone, a replica died
        request.app.state.predict_handles.pop(name, None)  # looked up again next time
        raise HTTPException(
            503,
            f"model {name}'s serving is unavailable ({type(e).__name__}); try again",
            headers={"Retry-After": "5"},
        ) from None
    if "error" in answer:
        status = answer["status"]
        detail = answer["error"]
        if status == 422:
            index = detail.partition("]")[0].removeprefix("images[")
            loc = ["body", "images", int(index)] if index.isdigit() else ["body", "images"]
            raise _invalid(loc, detail)
        raise HTTPException(status, detail, headers={"Retry-After": "5"} if status == 503 else None)
    return Prediction(**answer)
