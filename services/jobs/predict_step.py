"""A predict job (``mode: predict``): a model's predictions for every image of a folder or
an S3 prefix, in bulk on Ray Data.

    resolve the model -> list the images -> map_batches over a pool of actors (the model
    loaded once per actor; one GPU each when the job runs on GPUs) -> parquet + CSV in the
    store's predictions/job-<id>/ (and a copy in ``out_uri``) -> success, the row count
    (``total_images``) and the PredictionsReady event in one transaction

Each actor runs training.bulk_predict.BatchPredictor: the predict app's decode and
calibrated probabilities (model.pt's temperature). An image that cannot be read is a row
with its reason, never a failed job; a model reference that names no version fails the job
(``model: ...``) before anything runs. The images of a local folder are read by path, so
the actors must run where the folder is (as a local data set's decode tasks do); an S3
prefix is read object by object by the actors themselves, on any node. A driver that dies
half-way leaves no final status: the reconciler's next attempt predicts again and writes
the same files over the first attempt's. With ``label_next: N`` the actors also send each
row's margin and embedding, and services/jobs/label_next_step.py writes to_label.csv and
to_label.png beside the predictions, before the job's final status.
"""

from __future__ import annotations

import io
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from services.config import Settings
from services.db import repo
from services.db.models import ModelVersion
from services.db.session import session_factory
from services.errors import StepFailed, one_line
from services.events import outbox
from services.events.schemas import PredictionsReadyEvent
from services.intake.model_ref import ModelRef, resolve
from services.intake.spec import JobSpec
from services.jobs.label_next_step import Candidates, ToLabel, write_to_label
from services.jobs.steps.context import StepContext
from services.statuses import JobStatus
from services.store.artifacts import (
    MODEL_FILE,
    PREDICTIONS_CSV,
    PREDICTIONS_PARQUET,
    TO_LABEL_CSV,
    TO_LABEL_PNG,
    predictions_prefix,
    version_prefix,
)
from services.store.fetch import list_prefix, local_path, prefix_reader, put_file_at
from services.store.storage import StoreError
from training.bulk_predict import (
    SCHEMA,
    BatchPredictor,
    ImageSource,
    Listed,
    csv_table,
    image_objects,
    list_folder,
)
from training.data import DataError

BATCH_SIZE = 256  # images an actor predicts at once (38 MB of uint8 at 224 px)
WRITE_ROWS = 1024  # rows the driver writes at once (a parquet row group, a CSV chunk)
DEFAULT_TOP_K = 5
Say = Callable[[str], None]


@dataclass(frozen=True)
class Predictions:
    """What a predict job made: its rows (``bad_rows`` of them unreadable), the files'
    URIs and its event (None when the job was cancelled meanwhile)."""

    model_name: str
    version: int
    rows: int
    bad_rows: int
    uris: dict[str, str] = field(default_factory=dict)
    event: dict[str, Any] | None = None
    seconds: float = 0.0
    to_label: ToLabel | None = None  # with label_next: the picks


def resolve_model(spec: JobSpec, settings: Settings) -> ModelVersion:
    """The version the job's ``model`` reference names; StepFailed("model") otherwise."""
    try:
        ref = ModelRef.parse(str(spec.model or ""))
        with session_factory(settings.db_url)() as s:
            return resolve(s, ref)
    except (LookupError, ValueError) as e:
        raise StepFailed("model", one_line(e)) from None


def list_images(uri: str, settings: Settings) -> tuple[list[Listed], ImageSource]:
    """The images under a folder or an ``s3://`` prefix, and how the actors read them;
    StepFailed("data") when there are none, StepFailed("store") when it cannot be listed."""
    path = local_path(uri)
    try:
        if path is not None:
            return list_folder(path), ImageSource(root=str(path.resolve()))
        return image_objects(list_prefix(uri, settings), uri), ImageSource(
            reader=prefix_reader(uri, settings)
        )
    except (DataError, FileNotFoundError, ValueError) as e:
        raise StepFailed("data", one_line(e)) from None
    except StoreError as e:
        raise StepFailed("store", one_line(e)) from None


OUTPUT = SCHEMA.append(pa.field("model_name", pa.string())).append(
    pa.field("version", pa.int64())
)  # predictions.parquet's columns


def csv_columns(k: int) -> list[str]:
    """predictions.csv's columns: the top k spread over label_i / probability_i."""
    top = [f"{c}_{i}" for i in range(1, k + 1) for c in ("label", "probability")]
    return ["path", *top, "error", "model_name", "version"]


class PredictActor:
    """A Ray Data actor: the model loaded once (from the object store's copy of model.pt),
    then every batch it is given predicted, with the model's name and version on each row
    and the CSV's flat columns beside the lists (the driver only writes)."""

    def __init__(
        self,
        package: Any,
        source: ImageSource,
        k: int,
        use_gpu: bool,
        model: tuple[str, int],
        embed: bool = False,
    ) -> None:
        import ray
        import torch

        from training.predict import Predictor

        raw = ray.get(package) if isinstance(package, ray.ObjectRef) else package
        loaded = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.predict = BatchPredictor(Predictor.from_package(loaded), source, k, device, embed)
        self.model_name, self.version, self.k = model[0], model[1], k

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        table = self.predict(batch)
        n = table.num_rows
        table = table.append_column("model_name", pa.array([self.model_name] * n, pa.string()))
        table = table.append_column("version", pa.array([self.version] * n, pa.int64()))
        flat = csv_table(table, self.k)  # k columns, empty past the model's classes
        for name in flat.column_names:
            if name not in table.column_names:
                table = table.append_column(name, flat.column(name))
        return table


def prediction_stream(
    listing: list[Listed],
    source: ImageSource,
    package: bytes,
    *,
    k: int,
    use_gpu: bool,
    actors: int,
    model: tuple[str, int],
    batch_size: int = BATCH_SIZE,
    embed: bool = False,
) -> Any:
    """The Ray Data dataset of the predictions (``OUTPUT`` and ``csv_columns`` columns;
    with ``embed``, each row's margin and embedding too) by ``model`` (name, version):
    the listing in blocks of ``batch_size``, through a pool of 1 to ``actors`` actors
    (one CPU, and one GPU with ``use_gpu``, each). A local folder's actors run on this
    node, where the folder is (``training.shards.this_node``): on a node that offers no
    CPU (a 0-CPU head) they ask for none, ``LOCAL_DECODERS`` of them; without a GPU on
    this node, on its CPU."""
    import ray
    from ray.data import ActorPoolStrategy

    from training.shards import LOCAL_DECODERS, quiet_ray_data, this_node

    placed: dict[str, Any] = {"num_cpus": 1, "num_gpus": 1 if use_gpu else 0}
    if source.root is not None:
        strategy, offers = this_node()
        placed["scheduling_strategy"] = strategy
        if offers.get("GPU", 0) < 1:
            placed["num_gpus"] = 0
        if offers.get("CPU", 0) < 1:
            placed["num_cpus"], actors = 0, min(actors, LOCAL_DECODERS)
        else:
            actors = min(actors, int(offers["CPU"]))

    quiet_ray_data()
    table = pa.table(
        {
            "path": pa.array([r[0] for r in listing], pa.string()),
            "bytes": pa.array([r[1] for r in listing], pa.int64()),
            "etag": pa.array([r[2] for r in listing], pa.string()),
        }
    )
    blocks = [table.slice(i, batch_size) for i in range(0, len(table), batch_size)]
    return ray.data.from_arrow(blocks).map_batches(
        PredictActor,
        fn_constructor_kwargs={
            "package": ray.put(package),
            "source": source,
            "k": k,
            "use_gpu": bool(placed["num_gpus"]),
            "model": model,
            "embed": embed,
        },
        # all of them asked for at once, but the stream starts with the first one ready
        compute=ActorPoolStrategy(min_size=1, max_size=max(1, actors), initial_size=max(1, actors)),
        batch_size=batch_size,
        batch_format="numpy",
        **placed,
    )


def write_outputs(
    stream: Any,
    folder: Path,
    k: int,
    on_batch: Callable[[int], None] = lambda _rows: None,
    keep: Callable[[pa.Table], None] | None = None,
) -> tuple[int, int]:
    """The stream's rows written as ``folder``/predictions.parquet and .csv, a batch at a
    time (the driver never holds them all); ``on_batch(rows)`` after each, and ``keep``
    given each batch when set (what to label next). Returns (rows, unreadable rows)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows = bad = 0
    flat = csv_columns(k)
    csv_writer = None
    with pq.ParquetWriter(folder / PREDICTIONS_PARQUET, OUTPUT) as parquet:
        try:
            for batch in stream.iter_batches(batch_format="pyarrow", batch_size=WRITE_ROWS):
                parquet.write_table(batch.select(OUTPUT.names).cast(OUTPUT))
                table = batch.select(flat)
                if csv_writer is None:
                    csv_writer = pacsv.CSVWriter(folder / PREDICTIONS_CSV, table.schema)
                csv_writer.write_table(table)
                if keep is not None:
                    keep(batch)
                rows += batch.num_rows
                bad += batch.num_rows - batch.column("error").null_count
                on_batch(batch.num_rows)
        finally:
            if csv_writer is not None:
                csv_writer.close()
    return rows, bad


def upload(spec: JobSpec, ctx: StepContext, folder: Path) -> dict[str, str]:
    """The files made (the predictions; to_label.csv and .png when made) into the job's
    folder in the store, and into ``out_uri`` when the request names one; their URIs
    (``out_*`` for the copies)."""
    out_uri, store, settings = spec.out_uri, ctx.store, ctx.settings
    uris = {}
    names = (PREDICTIONS_PARQUET, PREDICTIONS_CSV, TO_LABEL_CSV, TO_LABEL_PNG)
    try:
        for name in (n for n in names if (folder / n).exists()):
            uris[name] = store.put_file(predictions_prefix(ctx.job_id) + name, folder / name)
            if out_uri:
                uris[f"out_{name}"] = put_file_at(out_uri, name, folder / name, settings)
    except (StoreError, OSError) as e:
        raise StepFailed("store", one_line(e)) from e
    return uris


def finish(spec: JobSpec, ctx: StepContext, made: Predictions) -> dict[str, Any] | None:
    """``success`` with the row count and the PredictionsReady event, in one transaction;
    None (and nothing changed) when the job was cancelled meanwhile."""
    out = made.uris.get(f"out_{PREDICTIONS_PARQUET}") or made.uris[PREDICTIONS_PARQUET]
    csv = made.uris.get(f"out_{PREDICTIONS_CSV}") or made.uris[PREDICTIONS_CSV]
    with ctx.sessions() as s:
        if not repo.finish_job(
            s, ctx.job_id, JobStatus.SUCCESS, commit=False, total_images=made.rows, error=None
        ):
            s.rollback()
            return None
        body = outbox.stage(
            s,
            ctx.settings,
            PredictionsReadyEvent(
                event_id=uuid.uuid4().hex,
                job_id=ctx.job_id,
                batch_id=spec.batch_id,
                model_name=made.model_name,
                version=made.version,
                rows=made.rows,
                bad_rows=made.bad_rows,
                output_uri=out,
                csv_uri=csv,
                finished_at=datetime.now(UTC),
            ),
        )
        s.commit()
    return body


def _actors(spec: JobSpec, settings: Settings, images: int) -> int:
    """How many actors at most: the job's workers, no more than the cluster's GPUs (or
    CPUs) can hold, nor than the listing has batches (an idle actor's start, the model
    loaded, only takes CPU from the busy one's)."""
    import ray

    have = ray.cluster_resources().get("GPU" if spec.use_gpu else "CPU", 1)
    batches = -(-images // BATCH_SIZE)
    return max(1, min(spec.workers(settings.workers), int(have), batches))


def predict(spec: JobSpec, ctx: StepContext) -> Predictions:
    """Every step of a predict job (see the module); StepFailed naming the failing one."""
    from services.jobs import steps

    settings, store, say = ctx.settings, ctx.store, ctx.say
    mv = resolve_model(spec, settings)
    listing, source = list_images(spec.dataset_uri, settings)
    try:
        package = store.get_bytes(version_prefix(mv.model_name, mv.version) + MODEL_FILE)
    except StoreError as e:
        raise StepFailed("model", f"model.pt of {mv.model_name} v{mv.version}: {e}") from None
    spec = steps.on_the_cluster(spec, ctx)  # Ray up, the store checked, GPUs decided
    actors, k = _actors(spec, settings, len(listing)), spec.top_k or DEFAULT_TOP_K
    label_next = spec.label_next
    candidates = Candidates(label_next) if label_next else None
    where = "GPU" if spec.use_gpu else "CPU"
    say(
        f"predict: {len(listing)} images with {mv.model_name} v{mv.version}, "
        f"{actors} {where} actors at most"
    )
    t0 = time.perf_counter()
    stream = prediction_stream(
        listing,
        source,
        package,
        k=k,
        use_gpu=bool(spec.use_gpu),
        actors=actors,
        model=(mv.model_name, mv.version),
        embed=candidates is not None,
    )
    to_label = None
    with tempfile.TemporaryDirectory(prefix="colecionador-predict-") as tmp:
        try:
            keep = candidates.add if candidates is not None else None
            rows, bad = write_outputs(stream, Path(tmp), k, keep=keep)
        except StepFailed:
            raise
        except Exception as e:  # noqa: BLE001 - Ray Data's error wraps the actor's
            raise StepFailed("predict", one_line(e.__cause__ or e)) from e
        if candidates is not None:
            to_label = write_to_label(Path(tmp), candidates, k, (source, listing), say)
        uris = upload(spec, ctx, Path(tmp))
    seconds = time.perf_counter() - t0
    say(
        f"predict: {rows} rows ({bad} unreadable) in {seconds:.1f} s -> {uris[PREDICTIONS_PARQUET]}"
    )
    made = Predictions(mv.model_name, mv.version, rows, bad, uris, None, seconds, to_label)
    event = finish(spec, ctx, made)
    if event is None:  # cancelled meanwhile: it keeps nothing
        store.delete_prefix(predictions_prefix(ctx.job_id))
    return Predictions(mv.model_name, mv.version, rows, bad, uris, event, seconds, to_label)
