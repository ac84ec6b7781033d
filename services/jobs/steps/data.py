"""prepare_data: list (fetch a small S3 set), decode, split and the health report; drift from
production."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.config import Settings
from services.db import repo
from services.errors import StepFailed, one_line
from services.intake.spec import JobSpec
from services.jobs.steps.context import StepContext
from services.jobs.steps.report import Say, put_report
from services.store.artifacts import (
    DATA_PROFILE_FILE,
    HEALTH_FILE,
    version_prefix,
)
from services.store.fetch import dataset_index
from services.store.storage import Store, StoreError
from training import data as datasets
from training import drift
from training.data import DatasetIndex, DecodedDataset, Split
from training.health import health_report, would_fail
from training.hyperparams import Hyperparameters
from training.loop import TrainData
from training.shards import ShardImages, ShardSet


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


def _decoder(
    job_id: int,
    hp: Hyperparameters,
    settings: Settings,
    store: Store,
    say: Say,
    shards: list[ShardSet],
) -> Callable[[DatasetIndex], DecodedDataset]:
    """How the listing is decoded: in memory, or (over the memory budget or
    settings.stream_min_images) into decoded shards by Ray tasks, appended to ``shards``."""

    def from_shards(index: DatasetIndex) -> DecodedDataset:
        if not settings.streams(len(index), hp.image_size):
            return datasets.decode(index, hp.image_size, "skip")
        if len(index) < settings.stream_min_images:
            say(
                f"job {job_id}: {len(index)} images at {hp.image_size} px decode to "
                f"{len(index) * hp.image_size**2 * 3 / 2**20:.1f} MB, over the "
                f"{settings.decode_memory_mb} MB budget (COLECIONADOR_DECODE_MEMORY_MB): "
                "streamed from decoded shards"
            )
        from services.jobs.decoded_cache import shard_set

        got, _ = shard_set(index, hp.image_size, settings, store, say)
        shards.append(got)
        return got.decoded(index.classes)

    return from_shards


def _refuse_unfit(decoded: DecodedDataset, report: dict[str, Any], hp: Hyperparameters) -> None:
    """StepFailed when the data cannot make a job: unreadable images (unless skipped), too
    few per class, or a health finding the request fails on."""
    blockers = would_fail(decoded, report, hp)  # the rule preflight prints by
    if blockers and blockers[0].step == "dataset":
        raise StepFailed("dataset", blockers[0].reason)
    if blockers:
        raise StepFailed("health", "; ".join(b.reason for b in blockers))


def prepare_data(spec: JobSpec, ctx: StepContext) -> PreparedData:
    """List (and copy a small S3 set into the cache), decode and split; the health report
    is written before any check can fail the job, so a job failed for its data says what
    is wrong with it. A large set (settings.stream_min_images) is decoded into shards by
    Ray tasks, reading an S3 set's objects from the bucket (services/store/fetch.py)."""
    hp, settings, store, say = spec.hyperparameters, ctx.settings, ctx.store, ctx.say
    try:
        index = dataset_index(spec.dataset_uri, settings, hp.image_size)
    except (FileNotFoundError, ValueError) as e:
        raise StepFailed("dataset", one_line(e)) from None
    except Exception as e:  # noqa: BLE001 - a store error of any kind
        raise StepFailed("dataset", one_line(e)) from e
    shards: list[ShardSet] = []
    try:
        decoded, split, report = inspect_dataset(
            index, hp, _decoder(ctx.job_id, hp, settings, store, say, shards)
        )
    except (ValueError, StoreError) as e:  # StoreError: the bucket could not be read
        raise StepFailed("dataset", one_line(e)) from None
    shift = drift_from_production(spec.model_name, decoded, ctx)
    if shift is not None:
        report["drift"] = shift
        report["findings"] = report["findings"] + shift["findings"]
    put_report(store, ctx.job_id, HEALTH_FILE, report)
    for f in report["findings"]:
        say(f"health: {f['message']}")
    _refuse_unfit(decoded, report, hp)
    assert split is not None  # every class has min_per_class images
    if decoded.bad:
        say(f"skipped {len(decoded.bad)} unreadable image(s)")
    say(
        f"job {ctx.job_id}: {len(decoded)} images, {len(decoded.classes)} classes, "
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
    model_name: str, decoded: DecodedDataset, ctx: StepContext
) -> dict[str, Any] | None:
    """The health report's ``drift`` section: this batch against the data of the version
    of the same model in production (training/drift.py); None when there is none, or it
    has no data_profile.json (versions from before it was kept)."""
    with ctx.sessions() as s:
        version = repo.version_for_alias(s, model_name, "production")
    if version is None:
        return None
    try:
        key = version_prefix(model_name, version) + DATA_PROFILE_FILE
        previous = json.loads(ctx.store.get_bytes(key))
    except Exception as e:  # noqa: BLE001 - absent, or unreadable: no comparison
        ctx.say(f"drift: no data profile of {model_name} v{version} ({one_line(e)})")
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
        ctx.say(f"drift: cannot compare with {model_name} v{version}: {one_line(e)}")
        return None
    return {"production_version": version, **out}
