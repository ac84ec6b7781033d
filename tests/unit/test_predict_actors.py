"""A predict job asks for no more actors than its listing has batches: an idle actor's
start (torch imported, the model loaded) only takes CPU from the busy one's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
import ray

from services.config import Settings
from services.jobs import predict_step


def test_no_more_actors_than_batches_workers_or_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 3.0})
    job = cast(Any, SimpleNamespace(use_gpu=False, workers=lambda default: 4))
    batch = predict_step.BATCH_SIZE
    assert predict_step._actors(job, Settings(), 231) == 1  # the demo's pool: one batch
    assert predict_step._actors(job, Settings(), batch + 1) == 2
    assert predict_step._actors(job, Settings(), 100 * batch) == 3  # the cluster's CPUs
    assert predict_step._actors(job, Settings(), 0) == 1
