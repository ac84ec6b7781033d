"""Production's hard cases: which answered images a predict application keeps, and which
kept ones go (pure rules; services/registry/hard_cases.py does the writing).

Opt-in per application (``HardCases``; off by default): an image whose top-1 probability
(calibrated: model.pt's temperature applied) is under ``below``, and a ``sample`` share of
all answered images, are kept in the store with the answer they got, under
``hard_cases/<model>/`` (services/store/artifacts.py): a pool of images a folder of
which "what to label next" and the bulk predict path read as a data set URI. The pool is
bounded: samples older than ``retention_days`` go, then the oldest until it holds at most
``max_count`` samples and ``max_mb`` megabytes (pruned down to ``LOW_WATER`` of them, so
that a full pool is listed once per tenth of its size, not once per sample).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Reason = Literal["low_confidence", "sampled"]
LOW_WATER = 0.9  # a prune leaves the pool at this share of its bounds
STAMP = "%Y%m%dT%H%M%S%fZ"  # a sample's folder name starts with its UTC time


class HardCases(BaseModel):
    """What a predict application keeps of its answers (``PredictArgs.hard_cases``,
    ``colecionador serve``/``up`` ``--hard-cases-*``). Off unless ``below`` or
    ``sample`` is set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    below: float | None = Field(None, gt=0, le=1)  # keep when the top-1 probability is under
    sample: float = Field(0.0, ge=0, le=1)  # and this share of every answered image
    max_count: int = Field(10_000, ge=1)  # samples in the pool at most
    max_mb: float = Field(1024.0, gt=0)  # megabytes in the pool at most (images + records)
    retention_days: float = Field(30.0, gt=0)  # older samples are pruned
    queue: int = Field(256, ge=1)  # samples waiting to be written; beyond: dropped, counted

    @property
    def enabled(self) -> bool:
        return self.below is not None or self.sample > 0

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 2**20)


def keep_reason(confidence: float, config: HardCases, draw: float) -> Reason | None:
    """Why an answered image is kept (``draw``: uniform in [0, 1), the sampling's), or
    None: under the threshold first, else sampled."""
    if config.below is not None and confidence < config.below:
        return "low_confidence"
    if draw < config.sample:
        return "sampled"
    return None


def sample_name(when: datetime, uid: str) -> str:
    """A sample's folder under the pool: its UTC time (sortable), then a random id."""
    return f"{when.astimezone(UTC).strftime(STAMP)}-{uid}"


def sample_time(name: str) -> datetime | None:
    """The time in a sample's folder name, or None when it is not one of ours."""
    try:
        return datetime.strptime(name.split("-", 1)[0], STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class Sample:
    """One kept sample as the store lists it: its folder name, time and bytes."""

    name: str
    when: datetime
    size: int


def samples_of(objects: Iterable[tuple[str, int]]) -> list[Sample]:
    """The pool's samples, oldest first, from its objects (path under the pool, bytes);
    objects outside a sample folder of ours are not the pool's and never pruned."""
    sizes: dict[str, int] = {}
    for path, size in objects:
        folder, sep, _rest = path.partition("/")
        if sep and sample_time(folder) is not None:
            sizes[folder] = sizes.get(folder, 0) + max(size, 0)
    return sorted(
        (Sample(n, t, s) for n, s in sizes.items() if (t := sample_time(n)) is not None),
        key=lambda s: (s.when, s.name),
    )


def to_prune(
    samples: list[Sample],
    config: HardCases,
    now: datetime,
    fill: float = LOW_WATER,
    incoming: int = 0,
) -> list[Sample]:
    """The samples to delete, oldest first: every one past the retention, then the oldest
    until at most ``fill`` of ``max_count`` and of ``max_bytes`` are left, and room for
    one more sample of ``incoming`` bytes when it is not 0."""
    ordered = sorted(samples, key=lambda s: (s.when, s.name))
    cutoff = now - timedelta(days=config.retention_days)
    gone = [s for s in ordered if s.when < cutoff]
    left = [s for s in ordered if s.when >= cutoff]
    max_count, max_bytes = int(config.max_count * fill), config.max_bytes * fill
    if incoming:
        max_count = min(max_count, config.max_count - 1)
        max_bytes = min(max_bytes, config.max_bytes - incoming)
    count, size = len(left), sum(s.size for s in left)
    for s in left:
        if count <= max_count and size <= max_bytes:
            break
        gone.append(s)
        count, size = count - 1, size - s.size
    return gone
