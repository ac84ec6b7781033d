"""The object store's layout (DESIGN.md, "Object store layout") and what a model version's
folder holds. Every key the services write is spelled here, nowhere else."""

from __future__ import annotations

MODEL_FILE = "model.pt"  # weights + what rebuilds the model (training.model.export_model)
ONNX_FILE = "model.onnx"  # the eval model in ONNX (training/export.py); absent if export failed
DATA_PROFILE_FILE = "data_profile.json"  # class counts + test-split hashes (drift, #17)
LABEL_ISSUES_FILE = "label_issues.json"  # label_check: the images to relabel first, ranked
LABEL_ISSUES_PNG = "label_issues.png"  # ... and the top ones as a picture (version + reports/)
RELIABILITY_FILE = "reliability.png"  # reliability diagram before/after temperature scaling
# what it classifies, how it was trained, how good it is, what to watch, who promoted it:
# rendered by services.registry.model_card.render_model_card, written last, at the commit
MODEL_CARD_FILE = "model_card.md"

METRICS_FILE = "metrics.json"  # test metrics, gate, training, split, hyperparameters, epochs
CURVES_PNG = "curves.png"  # the training curves
CONFUSION_PNG = "confusion_matrix.png"  # the test split's confusion matrix
HEALTH_FILE = "health.json"  # the data health report (also under reports/job-<id>/)
ERRORS_FILE = "errors.json"  # the test split's wrong answers
ERRORS_PNG = "errors.png"  # ... the worst of them as a picture
PREFLIGHT_FILE = "preflight.json"  # overfit-one-batch + LR range test (also under reports/)
LR_RANGE_PNG = "lr_range.png"  # the LR range test's curve (reports/job-<id>/, preflight's folder)
TUNING_FILE = "tuning.json"  # a tune job's search: the grid, the trials, the winner

# The files of models/<name>/v<version>/, in the order they are written; the optional ones
# (model.onnx, errors.png, preflight.json, tuning.json, label issues) exist when the job
# made them.
VERSION_FILES = (
    MODEL_FILE,
    METRICS_FILE,
    CURVES_PNG,
    CONFUSION_PNG,
    HEALTH_FILE,
    ERRORS_FILE,
    RELIABILITY_FILE,
    DATA_PROFILE_FILE,
    MODEL_CARD_FILE,
)
OPTIONAL_VERSION_FILES = (
    ONNX_FILE,
    ERRORS_PNG,
    PREFLIGHT_FILE,
    TUNING_FILE,
    LABEL_ISSUES_FILE,
    LABEL_ISSUES_PNG,
)


def version_prefix(model_name: str, version: int) -> str:
    """models/<name>/v<version>/: a model version's files."""
    return f"models/{model_name}/v{version}/"


def report_key(job_id: int, name: str) -> str:
    """reports/job-<id>/<name>: a job's reports (health, preflight), failed jobs too."""
    return f"reports/job-{job_id}/{name}"


def event_key(job_id: int) -> str:
    """events/job-<id>.json: the archive of a job's final event."""
    return f"events/job-{job_id}.json"


def checkpoints_prefix(job_id: int) -> str:
    """checkpoints/<job id>: Ray Train's run of a job (a checkpoint every epoch)."""
    return f"checkpoints/{job_id}"


CHECKPOINTS = "checkpoints"  # Ray Train's storage_path in the store (run name: the job id)
TUNING = "tuning"  # Ray Tune's storage_path in the store


DECODED = "cache/decoded"  # decoded uint8 shards, one set per data set version and size
DECODED_MANIFEST = "manifest.json"  # written last: a set without one is never reused


def decoded_prefix(fingerprint: str, image_size: int) -> str:
    """cache/decoded/<data set hash>-<size>: the decoded shards of one data set version,
    reused by every job, retry, trial and fold on it."""
    return f"{DECODED}/{fingerprint[:24]}-{image_size}"


def decoded_manifest_key(fingerprint: str, image_size: int) -> str:
    return f"{decoded_prefix(fingerprint, image_size)}/{DECODED_MANIFEST}"


PREDICTIONS = "predictions"  # bulk predictions (mode predict), one folder per job
PREDICTIONS_PARQUET = "predictions.parquet"  # path, top-k labels and probabilities, version
PREDICTIONS_CSV = "predictions.csv"  # the same rows, the top-k spread over columns
TO_LABEL_CSV = "to_label.csv"  # label_next: the images to label next, ranked (rank, margin, top-k)
TO_LABEL_PNG = "to_label.png"  # ... and the first of them as a contact sheet


def predictions_prefix(job_id: int) -> str:
    """predictions/job-<id>/: a predict job's output (parquet and CSV; with label_next,
    to_label.csv and .png)."""
    return f"{PREDICTIONS}/job-{job_id}/"


HARD_CASES = "hard_cases"  # production's hard cases, one pool per model (opt-in, bounded)
HARD_CASE_IMAGE = "image"  # + the image's own extension (.png, .jpg, ...): the bytes sent
HARD_CASE_RECORD = "prediction.json"  # model, version, top-k, confidence, time; written last


def hard_cases_prefix(model_name: str) -> str:
    """hard_cases/<name>/: the model's pool, one folder per kept image
    (services/registry/hard_cases.py), a data set URI for the bulk predict path."""
    return f"{HARD_CASES}/{model_name}/"


def hard_case_prefix(model_name: str, sample: str) -> str:
    """hard_cases/<name>/<UTC time>-<id>/: one kept image and its prediction.json."""
    return f"{hard_cases_prefix(model_name)}{sample}/"
