"""The steps of a job, each a function that returns a small typed result:

    prepare_data -> PreparedData      list (fetch a small S3 set), decode, split, health report
    load_weights -> state dict        the backbone to start from, if any
    run_preflight -> Preflight        overfit one batch + LR range test, as a Ray task
    train -> TrainedModel             Ray Train's TorchTrainer over the two phases
    evaluate -> Evaluation            calibration, test-set metrics, error report, model.onnx,
                                      the gate
    version_files -> dict             what models/<name>/v<N>/ will hold (of JobResults)

A step that fails raises ``StepFailed(step, reason)``; the driver (services/jobs/driver.py)
records it. Nothing here decides a job's final status."""

from services.jobs.steps.cluster import driver_uses, on_the_cluster
from services.jobs.steps.data import (
    PreparedData,
    drift_from_production,
    inspect_dataset,
    prepare_data,
)
from services.jobs.steps.evaluate import PARITY_IMAGES, Evaluation, evaluate, with_temperature
from services.jobs.steps.labels import LabelCheck, check_labels
from services.jobs.steps.preflight import PREFLIGHT_IMAGES, Preflight, run_preflight
from services.jobs.steps.report import Say, put_report
from services.jobs.steps.train import TrainedModel, train
from services.jobs.steps.version import JobResults, version_files
from services.jobs.steps.weights import load_weights

__all__ = [
    "Evaluation",
    "JobResults",
    "LabelCheck",
    "PARITY_IMAGES",
    "PREFLIGHT_IMAGES",
    "Preflight",
    "PreparedData",
    "Say",
    "TrainedModel",
    "check_labels",
    "drift_from_production",
    "driver_uses",
    "evaluate",
    "inspect_dataset",
    "load_weights",
    "on_the_cluster",
    "prepare_data",
    "put_report",
    "run_preflight",
    "train",
    "version_files",
    "with_temperature",
]
