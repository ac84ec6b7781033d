"""The steps of a job, each a function that returns a small typed result:

    prepare_data -> PreparedData      list (fetch a small S3 set), decode, split, health report
    load_weights -> state dict        the backbone to start from, if any
    run_preflight -> Preflight        overfit one batch + LR range test, as a Ray task
    train -> TrainedModel             Ray Train's TorchTrainer over the two phases
    evaluate -> Evaluation            calibration, test-set metrics, error report, model.onnx,
                                      the gate
    version_files -> dict             what models/<name>/v<N>/ will hold

A step that fails raises ``StepFailed(step, reason)``; the driver (services/jobs/driver.py)
records it. Nothing here decides a job's final status.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.config import Settings
from services.db import repo
from services.db.models import TrainingJob
from services.db.session import session_factory
from services.errors import StepFailed, one_line
from services.events import mlflow_outbox
from services.jobs.ray_jobs import alive_nodes, init_ray
from services.store.artifacts import (
    CHECKPOINTS,
    DATA_PROFILE_FILE,
    LABEL_ISSUES_FILE,
    LABEL_ISSUES_PNG,
    MODEL_FILE,
    ONNX_FILE,
    RELIABILITY_FILE,
    checkpoints_prefix,
    report_key,
    version_prefix,
)
from services.store.fetch import dataset_index, fetch_file
from services.store.storage import Store, StoreError
from training import data as datasets
from training import drift
from training.calibration import calibration_report, fit_split, softmax
from training.data import DatasetIndex, DecodedDataset, Split
from training.errors import error_report, worst_examples_png
from training.evaluate import GateResult, predict_logits, quality_gate
from training.export import OnnxExport, export_with_parity
from training.health import failing, health_report
from training.hyperparams import Hyperparameters
from training.label_issues import OutOfFold
from training.loop import TrainData
from training.metrics import classification_metrics
from training.model import (
    build_model,
    is_weights_name,
    load_backbone_weights,
    load_model,
    load_named_weights,
    read_state_dict,
)
from training.plots import confusion_matrix_png, curves_png, reliability_png
from training.ray_worker import MODEL_FILE as CHECKPOINT_MODEL_FILE
from training.shards import ShardImages, ShardSet

Say = Callable[[str], None]


def put_report(store: Store, job_id: int, name: str, payload: bytes | dict[str, Any]) -> None:
    """reports/job-<id>/<name>: kept for every job, failed ones too."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload, indent=2).encode()
    store.put_bytes(report_key(job_id, name), data)


# ----------------------------------------------------------------- data
@dataclass(frozen=True)
class PreparedData:
    """The decoded data set, its split and health report. With ``shards`` (a large set:
    settings.stream_min_images) the images stay in the decoded shards in the store:
    ``decoded.images`` is lazy, training streams them (``train_datasets``) and the test
    split is read a batch at a time."""

    decoded: DecodedDataset
    split: Split
    health: dict[str, Any]
    shards: ShardSet | None = None
    fingerprint: str | None = None  # training.data.fingerprint of the listing (lineage)

    @property
    def streamed(self) -> bool:
        return self.shards is not None

    def train_data(self) -> TrainData:
        d = self.decoded
        return TrainData(d.images, d.labels, self.split.train, self.split.val, d.classes)

    def train_datasets(self, hp: Hyperparameters, workers: int = 1) -> dict[str, Any] | None:
        """Ray Data datasets of the train and val rows (None: the data is in memory):
        train is every epoch of the run in one stream (training.loaders.StreamedBatches
        takes each rank's epoch from it), val one pass, read again each epoch; two shard
        reads at most in flight per Train worker."""
        if self.shards is None:
            return None
        ids = self.shards.kept()  # decoded position -> listing id
        epochs = hp.phase1_epochs + hp.phase2_epochs
        readers = 2 * max(1, workers)
        return {
            "train": self.shards.part(
                ids[self.split.train], epochs=epochs, seed=hp.seed, readers=readers
            ),
            "val": self.shards.part(ids[self.split.val], readers=readers),
        }

    def test_set(self) -> tuple[np.ndarray | ShardImages, np.ndarray, list[str]]:
        """Images, labels and paths of the test split (images lazy when streamed)."""
        d, idx = self.decoded, self.split.test
        return self.images_of(idx), d.labels[idx], [d.paths[i] for i in idx]

    def images_of(self, idx: np.ndarray) -> np.ndarray | ShardImages:
        """The images at ``idx``: a lazy view over the shards when streamed."""
        images = self.decoded.images
        return images.view(idx) if isinstance(images, ShardImages) else images[idx]


def inspect_dataset(
    source: Path | DatasetIndex,
    hp: Hyperparameters,
    decoder: Callable[[DatasetIndex], DecodedDataset] | None = None,
) -> tuple[DecodedDataset, Split | None, dict[str, Any]]:
    """Decode every image (unreadable ones left out and listed), split when every class
    has min_per_class images (None otherwise), and the health report of both. Nothing
    here fails for what the report finds: the caller decides (ValueError: no dataset).
    ``source``: a folder, or its listing; ``decoder``: how the listing is decoded
    (default: into memory, here)."""
    index = source if isinstance(source, DatasetIndex) else datasets.discover(source)
    decoded = (
        decoder(index) if decoder is not None else datasets.decode(index, hp.image_size, "skip")
    )
    counts = np.bincount(decoded.labels, minlength=len(decoded.classes))
    split = (
        datasets.split(decoded.labels, hp.val_frac, hp.test_frac, hp.val_max, hp.test_max, hp.seed)
        if counts.min() >= hp.min_per_class
        else None
    )
    report = health_report(
        decoded,
        split,
        min_per_class=hp.min_per_class,
        max_imbalance=hp.max_imbalance,
        near_distance=hp.near_duplicate_distance,
        mirrored=hp.hflip,
    )
    return decoded, split, report


def prepare_data(
    job: TrainingJob, hp: Hyperparameters, settings: Settings, store: Store, say: Say
) -> PreparedData:
    """List (and copy a small S3 set into the cache), decode and split; the health report
    is written before any check can fail the job, so a job failed for its data says what
    is wrong with it. A large set (settings.stream_min_images) is decoded into shards by
    Ray tasks, reading an S3 set's objects from the bucket (services/store/fetch.py)."""
    try:
        index = dataset_index(job.dataset_uri, settings, hp.image_size)
    except (FileNotFoundError, ValueError) as e:
        raise StepFailed("dataset", one_line(e)) from None
    except Exception as e:  # noqa: BLE001 - a store error of any kind
        raise StepFailed("dataset", one_line(e)) from e
    shards: list[ShardSet] = []

    def from_shards(index: DatasetIndex) -> DecodedDataset:
        if not settings.streams(len(index), hp.image_size):
            return datasets.decode(index, hp.image_size, "skip")
        if len(index) < settings.stream_min_images:
            say(
                f"job {job.id}: {len(index)} images at {hp.image_size} px decode to "
                f"{len(index) * hp.image_size**2 * 3 / 2**20:.1f} MB, over the "
                f"{settings.decode_memory_mb} MB budget (COLECIONADOR_DECODE_MEMORY_MB): "
                "streamed from decoded shards"
            )
        from services.jobs.decoded_cache import shard_set

        got, _ = shard_set(index, hp.image_size, settings, store, say)
        shards.append(got)
        return got.decoded(index.classes)

    try:
        decoded, split, report = inspect_dataset(index, hp, from_shards)
    except (ValueError, StoreError) as e:  # StoreError: the bucket could not be read
        raise StepFailed("dataset", one_line(e)) from None
    shift = drift_from_production(job, decoded, settings, store, say)
    if shift is not None:
        report["drift"] = shift
        report["findings"] = report["findings"] + shift["findings"]
    put_report(store, job.id, "health.json", report)
    for f in report["findings"]:
        say(f"health: {f['message']}")
    try:
        datasets.check_bad(decoded.bad, hp.on_bad_image)
        datasets.check_min_per_class(decoded.labels, decoded.classes, hp.min_per_class)
    except ValueError as e:
        raise StepFailed("dataset", one_line(e)) from None
    fails = failing(report, hp.fail_on)
    if fails:
        raise StepFailed("health", "; ".join(fails))
    assert split is not None  # every class has min_per_class images
    if decoded.bad:
        say(f"skipped {len(decoded.bad)} unreadable image(s)")
    say(
        f"job {job.id}: {len(decoded)} images, {len(decoded.classes)} classes, "
        f"split {split.sizes()}"
    )
    return PreparedData(
        decoded,
        split,
        report,
        shards[0] if shards else None,
        datasets.fingerprint(index, hp.image_size),
    )


def drift_from_production(
    job: TrainingJob, decoded: DecodedDataset, settings: Settings, store: Store, say: Say
) -> dict[str, Any] | None:
    """The health report's ``drift`` section: this batch against the data of the version
    of the same model in production (training/drift.py); None when there is none, or it
    has no data_profile.json (versions from before it was kept)."""
    with session_factory(settings.db_url)() as s:
        version = repo.version_for_alias(s, job.model_name, "production")
    if version is None:
        return None
    try:
        key = version_prefix(job.model_name, version) + DATA_PROFILE_FILE
        previous = json.loads(store.get_bytes(key))
    except Exception as e:  # noqa: BLE001 - absent, or unreadable: no comparison
        say(f"drift: no data profile of {job.model_name} v{version} ({one_line(e)})")
        return None
    counts = np.bincount(decoded.labels, minlength=len(decoded.classes))
    try:
        out = drift.compare(
            previous,
            {c: int(n) for c, n in zip(decoded.classes, counts)},
            decoded.paths,
            [decoded.classes[k] for k in decoded.labels],
            decoded.sha1,
            drift.image_hashes(decoded.images),
        )
    except (KeyError, TypeError, ValueError) as e:  # a profile of another shape
        say(f"drift: cannot compare with {job.model_name} v{version}: {one_line(e)}")
        return None
    return {"production_version": version, **out}


def load_weights(
    hp: Hyperparameters, n_classes: int, settings: Settings
) -> dict[str, torch.Tensor] | None:
    """The state dict named by ``hp.weights``, checked against the backbone (None when no
    weights are named): torchvision's registered weights by name (``imagenet``,
    ``IMAGENET1K_V2``...; cached under <home>/torch), or a file by path or s3:// URI."""
    if not hp.weights:
        return None
    try:
        if is_weights_name(hp.weights):
            state = load_named_weights(hp.backbone, hp.weights, settings.resolved_home / "torch")
        else:
            state = read_state_dict(fetch_file(hp.weights, settings))
        load_backbone_weights(build_model(hp.backbone, n_classes, hp.dropout), state)
    except (FileNotFoundError, ValueError, StoreError) as e:
        raise StepFailed("weights", one_line(e)) from None
    return state


# ----------------------------------------------------------------- preflight
PREFLIGHT_IMAGES = 1024  # train images the checks sample from when the data is streamed


@dataclass(frozen=True)
class Preflight:
    hp: Hyperparameters  # with the suggested phase1_lr when use_suggested_lr
    report: dict[str, Any] | None  # None: preflight was not asked for


def driver_uses(settings: Settings) -> tuple[str, ...]:
    """What a job's driver needs that an embedded default would give it on one node only:
    the store (checkpoints, versions), the database, and the broker when it publishes."""
    return ("store", "database", "broker") if settings.publish_events else ("store", "database")


def on_the_cluster(job: TrainingJob, settings: Settings) -> None:
    """Ray up (``init_ray``), then, once per run before anything trains (the driver calls
    it): StepFailed when the settings are one node's embedded defaults on a cluster of
    several nodes (Settings.embedded_on_cluster: a store, database or broker the other
    nodes' processes would not share); and
    the job's GPUs decided, as asked
    (``use_gpu`` true or false) or, None (the default), from the cluster: one GPU per worker
    when it has GPUs, so a queue, HTTP or ``ray job submit`` job on a cluster with GPU
    nodes uses them without a flag. The decision is recorded on the row (a resumed attempt
    keeps it)."""
    import ray

    init_ray(settings)
    problem = settings.embedded_on_cluster(alive_nodes(), driver_uses(settings))
    if problem is not None:
        raise StepFailed("settings", problem)
    if job.use_gpu is None:
        job.use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
        with session_factory(settings.db_url)() as s:
            repo.set_use_gpu(s, job.id, job.use_gpu)


def run_preflight(
    job: TrainingJob,
    hp: Hyperparameters,
    train_data: TrainData,
    backbone_state: Any,
    store: Store,
    settings: Settings,
    say: Say,
) -> Preflight:
    """Overfit one batch and the LR range test, as a Ray task with a worker's resources
    (a GPU with --gpu); fails the job if one batch cannot be overfit; with
    use_suggested_lr the suggestion becomes phase1_lr (recorded with the job)."""
    if not hp.preflight:
        return Preflight(hp, None)
    import ray

    from training.preflight import preflight

    def run(hp: Hyperparameters, data: TrainData, state: Any) -> dict[str, Any]:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return preflight(hp, data, state, device)

    init_ray(settings)
    task = ray.remote(
        num_cpus=1, num_gpus=1 if job.use_gpu else 0, resources=settings.worker_resources
    )(run)
    sample = train_data.sample_in_memory(PREFLIGHT_IMAGES, hp.seed)  # streamed: a sample
    try:
        result = ray.get(task.remote(hp, sample, backbone_state))
    except Exception as e:  # noqa: BLE001 - the task's error, whatever it is
        raise StepFailed("preflight", one_line(e)) from e
    put_report(store, job.id, "lr_range.png", result.pop("png"))
    put_report(store, job.id, "preflight.json", result)
    overfit, suggested = result["overfit"], result["lr_range"]["suggested_lr"]
    say(f"preflight: {overfit['message']}; LR range test suggests phase1_lr {suggested:.2g}")
    if not overfit["passed"]:
        raise StepFailed("preflight", overfit["message"])
    if hp.use_suggested_lr:
        hp = hp.model_copy(update={"phase1_lr": suggested})
        with session_factory(settings.db_url)() as s:
            repo.set_hyperparameters(s, job.id, hp.effective())  # all of them, recorded
    return Preflight(hp, result)


# ----------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainedModel:
    package: bytes  # model.pt as the run wrote it: weights + what rebuilds the model
    summary: dict[str, Any]  # the run's final report
    training_time_s: float

    def module(self) -> torch.nn.Module:
        model, _ = load_model(
            torch.load(io.BytesIO(self.package), map_location="cpu", weights_only=True)
        )
        return model


def train(
    job: TrainingJob,
    hp: Hyperparameters,
    train_data: TrainData,
    backbone_state: Any,
    store: Store,
    settings: Settings,
    resume: bool,
    datasets: dict[str, Any] | None = None,
) -> TrainedModel:
    """Ray Train's TorchTrainer over both phases, a checkpoint every epoch in the store
    (checkpoints/<job id>); with ``resume`` the run continues from its latest one.
    ``datasets`` (PreparedData.train_datasets): the workers stream their batches."""
    import ray

    from services.jobs.progress import EpochRecorder
    from training.trainer import build_trainer

    init_ray(settings)
    storage_path, filesystem = store.ray_storage(CHECKPOINTS)
    if not resume:  # a reused (storage_path, name) silently resumes an older run
        store.delete_prefix(checkpoints_prefix(job.id))
    config_hp = hp.effective()
    config = {
        "hyperparameters": config_hp,
        "data": ray.put(train_data),
        "backbone_state": ray.put(backbone_state) if backbone_state is not None else None,
    }
    tracked = job.model_name if mlflow_outbox.enabled(settings) else None
    # the run's params: every effective value, as the trainer gets them (after the search
    # and the preflight's suggested lr)
    mlflow_outbox.record(settings, mlflow_outbox.stage_params, job.id, job.model_name, config_hp)
    trainer = build_trainer(
        config,
        num_workers=job.num_workers or settings.workers,
        use_gpu=bool(job.use_gpu),
        storage_path=storage_path,
        storage_filesystem=filesystem,
        name=str(job.id),
        max_failures=settings.max_failures,
        callbacks=[EpochRecorder(settings.db_url, job.id, tracked)],
        datasets=datasets,
        resources_per_worker=settings.resources_per_worker(bool(job.use_gpu)),
    )
    t0 = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as e:  # noqa: BLE001 - TrainingFailedError wraps the worker's error
        raise StepFailed("training", one_line(e.__cause__ or e)) from e
    elapsed = time.perf_counter() - t0
    if result.checkpoint is None:
        raise StepFailed("training", "the run reported no checkpoint")
    summary = dict(result.metrics or {})
    if summary.get("failure"):
        raise StepFailed("training", summary["failure"])
    with result.checkpoint.as_directory() as d:
        package = (Path(d) / CHECKPOINT_MODEL_FILE).read_bytes()
    return TrainedModel(package, summary, elapsed)


# ----------------------------------------------------------------- evaluation
PARITY_IMAGES = 512  # test images the ONNX parity check reads when the data is streamed


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]  # accuracy, precision, recall, f1, roc_auc, ece, per class, n...
    errors: dict[str, Any]  # the error report
    gate: GateResult
    onnx: OnnxExport | None = None  # model.onnx and its parity with PyTorch
    calibration: dict[str, Any] | None = None  # ECE before/after, the temperature, the bins
    package: bytes | None = None  # model.pt with its "temperature" (None: the trained one)

    def event_metrics(self) -> dict[str, float]:
        return {k: self.metrics[k] for k in ("accuracy", "precision", "recall", "f1")}


def with_temperature(package: bytes, temperature: float) -> bytes:
    """model.pt with its ``"temperature"`` key set (every predict path divides the logits
    by it: training.evaluate.predict_probs, model.onnx, the predict route)."""
    pkg = torch.load(io.BytesIO(package), map_location="cpu", weights_only=True)
    pkg["temperature"] = float(temperature)
    buf = io.BytesIO()
    torch.save(pkg, buf)
    return buf.getvalue()


def evaluate(
    trained: TrainedModel,
    data: PreparedData,
    hp: Hyperparameters,
    oof: OutOfFold | None = None,
) -> Evaluation:
    """Temperature scaling fitted on the validation split, or on a tune job's pooled
    out-of-fold predictions (``oof``, every train + val image once) when it has them
    (stored in model.pt), then the
    test-set metrics on the calibrated probabilities with the ECE before and after, the
    error report, model.onnx (which applies the temperature too) with its parity check on
    the test split (never fails the job: the report says why there is no model.onnx) and
    the quality gate."""
    test_x, test_y, paths = data.test_set()
    d, val = data.decoded, data.split.val
    try:
        model = trained.module()
        test_logits = predict_logits(model, test_x)
        pool = np.union1d(data.split.train, val)
        given, why_not = _given_out_of_fold(oof, pool, len(d.classes))
        split = fit_split(
            lambda: (predict_logits(model, data.images_of(val)), d.labels[val]),
            None if given is None else given.probs,
            None if given is None else d.labels[pool],
            why_not,
        )
        calibration = calibration_report(split, test_logits, test_y)
        t = calibration["temperature"]
        probs = softmax(test_logits, t)
        metrics = classification_metrics(test_y, probs, d.classes)
        metrics["ece"] = calibration["ece_after"]
        metrics["ece_uncalibrated"] = calibration["ece_before"]
        metrics["temperature"] = t
        errors = error_report(test_y, probs, d.classes, paths)
        package = with_temperature(trained.package, t)
    except Exception as e:  # noqa: BLE001
        raise StepFailed("evaluation", one_line(e)) from e
    if not hp.export_onnx:
        return Evaluation(metrics, errors, quality_gate(metrics, hp), None, calibration, package)
    if isinstance(test_x, ShardImages):  # streamed: a bounded sample, not the whole split
        test_x = test_x[:PARITY_IMAGES]
    onnx = export_with_parity(model, hp.image_size, test_x, temperature=t)
    gate = quality_gate(metrics, hp, onnx.report)
    return Evaluation(metrics, errors, gate, onnx, calibration, package)


# ----------------------------------------------------------------- label issues
@dataclass(frozen=True)
class LabelCheck:
    report: dict[str, Any]  # label_issues.json
    png: bytes | None  # the top issues as a grid (None: no issues, or the check failed)


def check_labels(
    job: TrainingJob,
    trained: TrainedModel,
    data: PreparedData,
    hp: Hyperparameters,
    backbone_state: dict[str, torch.Tensor] | None,
    store: Store,
    say: Say,
    oof: OutOfFold | None = None,
) -> LabelCheck | None:
    """With ``label_check``: cleanlab's label issues among the train + val images, from
    out-of-fold probabilities (training/label_issues.py). A tune job hands in ``oof``, its
    best config's k fold models' (services/jobs/tune_step.py): each image scored by the fold
    model that never trained on it, at no extra cost. Otherwise (a train job, or a tune job
    without them: resumed after its search, the winner stopped early, their images not
    this job's train + val; the report's ``source`` says why) a linear head is
    cross-validated on frozen-backbone features: the backbone the job started from when
    it named weights (it never saw these labels), else the trained model's. Written to
    reports/job-<id>/ at once; a check that cannot run says why in its report and never
    fails the job (the model is judged by its own gate)."""
    if not hp.label_check:
        return None
    from training.label_issues import (
        backbone_features,
        find_issues,
        label_issues_png,
        out_of_fold_probs,
    )

    d = data.decoded
    pool = np.union1d(data.split.train, data.split.val)
    given, why_not = _given_out_of_fold(oof, pool, len(d.classes))
    t0 = time.perf_counter()
    try:
        images = data.images_of(pool)  # a lazy view over the shards when streamed
        if given is not None:
            assert given.probs is not None  # _given_out_of_fold checked it
            probs, source = given.probs, given.source
        else:
            if backbone_state is not None:
                model = build_model(hp.backbone, len(d.classes), hp.dropout)
                load_backbone_weights(model, backbone_state)
                of = f"the starting weights ({hp.weights})"
            else:
                model = trained.module()
                of = "the trained model (no starting weights named)"
            features = backbone_features(model, images)
            probs = out_of_fold_probs(features, d.labels[pool], seed=hp.seed)
            source = (
                "out-of-fold probabilities of a LogisticRegression cross-validated on "
                f"frozen-backbone features of {of}"
            )
            if why_not:
                source += f" (not the search's fold models: {why_not})"
        report = find_issues(
            d.labels[pool], probs, [d.paths[i] for i in pool], d.classes, source=source
        )
        report["seconds"] = round(time.perf_counter() - t0, 2)
        png = label_issues_png(report, images)
    except Exception as e:  # noqa: BLE001 - a diagnostic: said, never fatal
        report, png = {"error": one_line(e), "issues": []}, None
        say(f"label check failed: {one_line(e)}")
    else:
        by = "the search's fold models" if given is not None else "a linear head"
        say(
            f"label check: {report['issues_found']} likely label issue(s) among "
            f"{report['images_checked']} train + val images ({by}, {report['seconds']} s)"
        )
    put_report(store, job.id, LABEL_ISSUES_FILE, report)
    if png is not None:
        put_report(store, job.id, LABEL_ISSUES_PNG, png)
    return LabelCheck(report, png)


def _given_out_of_fold(
    oof: OutOfFold | None, pool: np.ndarray, n_classes: int
) -> tuple[OutOfFold | None, str | None]:
    """``oof`` when it scores exactly the job's train + val images (``pool``), else None
    and why not (None: no ``oof`` was handed in, a train job)."""
    if oof is None:
        return None, None
    if oof.missing or oof.index is None or oof.probs is None:
        return None, oof.missing or "none were made"
    if not np.array_equal(np.asarray(oof.index), pool):
        return None, (
            f"they score {len(oof.index)} images, not this job's {len(pool)} train + val images"
        )
    if np.shape(oof.probs) != (len(pool), n_classes):
        return None, f"their shape {np.shape(oof.probs)} is not ({len(pool)}, {n_classes})"
    return oof, None


def version_files(
    job: TrainingJob,
    hp: Hyperparameters,
    data: PreparedData,
    trained: TrainedModel,
    evaluation: Evaluation,
    history: list[dict[str, Any]],
    preflight: dict[str, Any] | None = None,
    tuning: dict[str, Any] | None = None,
    labels: LabelCheck | None = None,
) -> dict[str, bytes]:
    """The files of the version folder (services/store/artifacts.py names them)."""

    def as_json(obj: Any) -> bytes:
        return json.dumps(obj, indent=2).encode()

    m = evaluation.metrics
    files = {
        MODEL_FILE: evaluation.package or trained.package,
        "metrics.json": as_json(
            {
                "test": m,
                "gate": evaluation.gate.to_dict(),
                "training": trained.summary,
                "training_time_s": trained.training_time_s,
                "split": data.split.sizes(),
                "skipped_images": [{"path": p, "reason": r} for p, r in data.decoded.bad],
                "hyperparameters": hp.effective(),
                "history": history,
                "onnx": evaluation.onnx.report if evaluation.onnx else None,
                "calibration": evaluation.calibration,
            }
        ),
        "curves.png": curves_png(history, f"job {job.id}: {job.model_name}"),
        "confusion_matrix.png": confusion_matrix_png(
            m["confusion_matrix"], data.decoded.classes, f"{job.model_name}: test split"
        ),
        "health.json": as_json(data.health),
        "errors.json": as_json(evaluation.errors),
    }
    if evaluation.calibration is not None:
        files[RELIABILITY_FILE] = reliability_png(
            evaluation.calibration, f"{job.model_name}: test split, 15 bins"
        )
    if evaluation.onnx is not None and evaluation.onnx.model is not None:
        files[ONNX_FILE] = evaluation.onnx.model
    worst = worst_examples_png(evaluation.errors, data.test_set()[0])
    if worst is not None:
        files["errors.png"] = worst
    if preflight is not None:
        files["preflight.json"] = as_json(preflight)
    if tuning is not None:
        files["tuning.json"] = as_json(tuning)
    d, test = data.decoded, data.split.test
    files[DATA_PROFILE_FILE] = as_json(
        drift.data_profile(
            d.classes, d.labels, test, d.paths, d.sha1, drift.image_hashes(data.images_of(test))
        )
    )
    if labels is not None:
        files[LABEL_ISSUES_FILE] = as_json(labels.report)
        if labels.png is not None:
            files[LABEL_ISSUES_PNG] = labels.png
    return files
