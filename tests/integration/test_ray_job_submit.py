"""`ray job submit ... -- python -m services.jobs ...` against the session's token-auth
cluster, as a user runs it from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from services.db import repo
from services.db.session import session_factory
from tests.conftest import TINY

pytestmark = pytest.mark.integration

RAY = str(Path(sys.executable).with_name("ray"))


def client_env(cluster, with_token: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    if with_token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(cluster.token_path))
    return env


def test_ray_job_submit_with_a_dataset_records_the_ray_job(
    ray_cluster, pg_url, make_dataset, tmp_path
):
    sid, batch = f"submit-{uuid.uuid4().hex[:8]}", f"cli-{uuid.uuid4().hex[:8]}"
    job_env = {
        "COLECIONADOR_HOME": str(tmp_path / "home"),
        "COLECIONADOR_DATABASE_URL": pg_url,
        "COLECIONADOR_PUBLISH_EVENTS": "false",
        "COLECIONADOR_DATASET_ROOTS": str(tmp_path),
    }  # the operator's roots
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    cmd = [
        RAY,
        "job",
        "submit",
        "--address",
        ray_cluster.dashboard_url,
        "--submission-id",
        sid,
        "--runtime-env-json",
        json.dumps({"env_vars": job_env}),
        "--",
        sys.executable,
        "-m",
        "services.jobs",
        "--dataset",
        str(make_dataset(per_class=12)),
        "--batch-id",
        batch,
        "--model-name",
        "submitted",
        *sets,
    ]
    done = subprocess.run(
        cmd, env=client_env(ray_cluster), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Job '{sid}' succeeded" in done.stdout
    assert '"status": "success"' in done.stdout and '"verdict": "approved"' in done.stdout
    with session_factory(pg_url)() as s:
        job = repo.get_job_by_batch(s, batch)
        assert (job.status, job.ray_job_id, job.model_name) == ("success", sid, "submitted")
        assert [v.version for v in repo.job_versions(s, job.id)] == [1]


def test_the_job_server_refuses_a_client_without_the_token(ray_cluster):
    done = subprocess.run(
        [RAY, "job", "list", "--address", ray_cluster.dashboard_url],
        env=client_env(ray_cluster, with_token=False),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "token" in (done.stdout + done.stderr).lower()
    ok = subprocess.run(
        [RAY, "job", "list", "--address", ray_cluster.dashboard_url],
        env=client_env(ray_cluster),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
