"""What a second node costs: the same seed-sized job (``ray job submit``) on one node with
2 CPUs and on two nodes that share no filesystem (a 0-CPU head and a 2-CPU worker node,
tests/multinode.py), with the store in S3 on both, as a ratio of wall times in one run.

The difference is what a real cluster adds: the Train workers on another node (objects
sent to them), checkpoints and the version through S3 from there. Run:
``python -m benchmarks.two_nodes [--repeat N]`` (needs ``unshare -m``; a real S3 server,
SeaweedFS, is started here).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.conftest import OPERATOR_FLOOR, TINY, write_dataset
from tests.multinode import WorkerNode, node_settings, private_mounts_refused, submit
from tests.raycluster import LocalRayCluster
from tests.s3server import SeaweedS3

SECRET_FILE = "colecionador_s3_secret_key"
RECIPE = {**TINY, "phase1_epochs": 2, "phase2_epochs": 2}


def _timed_jobs(cluster: LocalRayCluster, s3: SeaweedS3, data: Path, runs: int) -> list[float]:
    times = []
    for n in range(runs):
        bucket = s3.bucket_name("bench2n")
        s3.client().create_bucket(Bucket=bucket)
        db = f"sqlite:///{tempfile.mkdtemp(prefix='bench2n-')}/jobs.db"  # named: the head's
        env = node_settings(s3, bucket, db, COLECIONADOR_DATASET_ROOTS=str(data.parent))
        env.update(OPERATOR_FLOOR)  # TINY's gates of 0: the floor is the operator's
        t0 = time.perf_counter()
        sid, out = submit(
            cluster, env, "--dataset", str(data), "--batch-id", f"b{n}", recipe=RECIPE
        )
        elapsed = time.perf_counter() - t0
        if f"Job '{sid}' succeeded" not in out:
            raise RuntimeError(out[-3000:])
        times.append(elapsed)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    why = private_mounts_refused()
    if why is not None:
        print(f"two nodes: skipped ({why})")
        return
    work = Path(tempfile.mkdtemp(prefix="bench2n-data-"))
    data = write_dataset(work / "data", classes=3, per_class=40, size=32)
    with SeaweedS3() as s3:
        secrets = work / "secrets"
        secrets.mkdir()
        (secrets / SECRET_FILE).write_text(s3.secret_key)
        one = LocalRayCluster(num_cpus=2, env={"COLECIONADOR_SECRETS_DIR": str(secrets)})
        try:
            single = _timed_jobs(one, s3, data, args.repeat)
        finally:
            one.stop(timeout=10)
        head = LocalRayCluster(num_cpus=0, env={"COLECIONADOR_SECRETS_DIR": str(secrets)})
        try:
            # the data set stays the head's: the worker node sees an empty folder there
            worker = WorkerNode(head, num_cpus=2, hide=[work], secrets={SECRET_FILE: s3.secret_key})
            try:
                double = _timed_jobs(head, s3, data, args.repeat)
            finally:
                worker.stop(timeout=5)
        finally:
            head.stop(timeout=10)
    a, b = statistics.median(single), statistics.median(double)
    print("\n== what a second node costs: a 120-image job, TINY 2+2 epochs, store in S3 ==")
    print(f"one node, 2 CPUs          {a:6.1f} s  (runs: {', '.join(f'{t:.1f}' for t in single)})")
    print(f"two nodes, 0 + 2 CPUs     {b:6.1f} s  (runs: {', '.join(f'{t:.1f}' for t in double)})")
    print(f"two nodes / one node      {b / a:6.2f}x")


if __name__ == "__main__":
    main()
