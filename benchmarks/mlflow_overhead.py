"""What MLflow tracking adds (issue 28), as a ratio to the same work without it, against
a real ``mlflow server`` (tests/mlflowserver.py) on this host:

- per epoch, on the training path: the Train controller's EpochRecorder writing its row
  with and without the epoch's MLflow record (same transaction), SQLite and PostgreSQL;
- per epoch, off it: the driver's pump sending one epoch record (wall and CPU);
- per job: the same small real job (2 Ray Train workers) with and without tracking, in
  back-to-back pairs whose order alternates (this host drifts 10-20 % a minute, more than
  the effect), and the parts that are tracking's alone: the time the job's own thread
  spends on it (staging, the final flush) and the pump thread's CPU (importing mlflow, the
  requests), each over the job's wall time;
- importing mlflow in a fresh process (a job driver pays it once, in the pump's thread).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from services.config import Settings
from services.db import repo
from services.db.session import prepare_database, session_factory
from services.events import mlflow_outbox, mlflow_pump
from services.jobs.progress import EpochRecorder

ROW = {"epoch": 1, "phase": 1, "loss": 0.9, "accuracy": 0.6, "val_loss": 0.8,
       "val_accuracy": 0.7, "lr": 1e-3, "epoch_time_s": 2.0, "images_per_s": 90.0,
       "data_wait": 0.1}  # fmt: skip


def _job(settings: Settings, model: str) -> int:
    with session_factory(settings.db_url)() as s:
        job, _ = repo.create_job(
            s, batch_id=f"bench-{uuid.uuid4().hex[:8]}", dataset_uri="/x", model_name=model,
            hyperparameters={},
        )  # fmt: skip
        s.commit()
        return job.id


def epoch_row_ms(settings: Settings, epochs: int = 200) -> tuple[float, float]:
    """Median ms of one EpochRecorder.after_report without and with MLflow, in
    alternating blocks of 20 epochs."""
    prepare_database(settings)
    job_id = _job(settings, "bench")
    plain, tracked = (
        EpochRecorder(settings.db_url, job_id),
        EpochRecorder(settings.db_url, job_id, "bench"),
    )
    times: dict[bool, list[float]] = {False: [], True: []}
    for block in range(epochs // 20):
        recorder = tracked if block % 2 else plain
        for i in range(20):
            t0 = time.perf_counter()
            recorder.after_report(None, [{**ROW, "epoch": block * 20 + i + 1}], None)
            times[recorder is tracked].append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[False]), 1000 * statistics.median(times[True])


def send_ms(settings: Settings, n: int = 60) -> tuple[float, float]:
    """Wall and CPU ms per epoch record drained to the server (mlflow imported already)."""
    job_id = _job(settings, "bench-send")
    recorder = EpochRecorder(settings.db_url, job_id, "bench-send")
    recorder.after_report(None, [ROW], None)
    mlflow_outbox.drain(settings)  # the run and experiment exist: steady state
    for i in range(n):
        recorder.after_report(None, [{**ROW, "epoch": i + 2}], None)
    t0, c0 = time.perf_counter(), time.process_time()
    done = mlflow_outbox.drain(settings)
    assert done.sent == n, done
    return 1000 * (time.perf_counter() - t0) / n, 1000 * (time.process_time() - c0) / n


class _OnPath:
    """Seconds the job's own thread spends in tracking (staging and the final flush)."""

    def __init__(self) -> None:
        self.s = 0.0
        record, stop = mlflow_outbox.record, mlflow_pump.Pump.stop
        self.pumps: list[Any] = []

        def timed_record(*a: Any) -> None:
            t0 = time.perf_counter()
            record(*a)
            self.s += time.perf_counter() - t0

        def timed_stop(pump: Any) -> None:
            t0 = time.perf_counter()
            stop(pump)
            self.s += time.perf_counter() - t0
            self.pumps.append(pump)

        mlflow_outbox.record = timed_record  # the driver and steps call it by the module
        mlflow_pump.Pump.stop = timed_stop


def job_pairs(home: Path, uri: str, repeats: int, epochs: int) -> list[dict[str, float]]:
    from services.intake.records import create_job
    from services.intake.request import TrainingRequest
    from services.jobs.driver import run_job
    from tests.conftest import TINY, write_dataset
    from training.hyperparams import Hyperparameters

    data = write_dataset(home / "data", classes=3, per_class=40, size=32)
    hp = {**TINY, "phase1_epochs": epochs, "phase2_epochs": epochs}
    on_path, out = _OnPath(), []
    for i in range(2 * repeats):
        tracked = (i % 2 == 0) == (i // 2 % 2 == 0)  # with/without, order alternating
        settings = Settings(
            home=home, database_url=f"sqlite:///{home / 'jobs.db'}", publish_events=False,
            dataset_roots=str(home), mlflow_tracking_uri=uri if tracked else None,
        )  # fmt: skip
        req = TrainingRequest(
            batch_id=f"bench-{uuid.uuid4().hex[:8]}", dataset_uri=str(data),
            model_name="bench-job", hyperparameters=Hyperparameters(**hp),
        )  # fmt: skip
        job, _ = create_job(settings, req)
        before, t0 = on_path.s, time.perf_counter()
        outcome = run_job(job.id, settings, say=lambda m: None)
        wall = time.perf_counter() - t0
        assert outcome.status == "success", outcome.error
        with session_factory(settings.db_url)() as s:
            epochs_s = [r["epoch_time_s"] for r in repo.epoch_rows(s, job.id)]
        row = {"tracked": tracked, "wall": wall, "on_path": on_path.s - before}
        row["epoch_s"] = statistics.median(epochs_s)  # the training epoch, as recorded
        if tracked:
            row["pump_cpu"] = on_path.pumps[-1].cpu_s or 0.0
        out.append(row)
    return out


def import_cpu_s(runs: int = 3) -> float:
    code = "import time; from mlflow import MlflowClient; print(time.process_time())"
    got = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout)
        for _ in range(runs)
    ]  # fmt: skip
    return statistics.median(got)


def main(argv: list[str] | None = None) -> None:
    from tests.conftest import PG_ADMIN_URL, fresh_database
    from tests.mlflowserver import MlflowServer

    p = argparse.ArgumentParser(prog="python -m benchmarks.mlflow_overhead", description=__doc__)
    p.add_argument("--repeats", type=int, default=2, help="job pairs (0: none)")
    p.add_argument("--epochs", type=int, default=3, help="epochs a phase, per job")
    args = p.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="colecionador-bench-mlflow-"))
    with MlflowServer(home / "mlflow") as server:
        sqlite = Settings(home=home, database_url=f"sqlite:///{home / 'epochs.db'}",
                          mlflow_tracking_uri=server.uri)  # fmt: skip
        rows = {"SQLite": epoch_row_ms(sqlite)}
        try:
            with fresh_database(f"colecionador_bench_{uuid.uuid4().hex[:8]}") as url:
                pg = Settings(home=home, database_url=url, mlflow_tracking_uri=server.uri)
                rows["PostgreSQL"] = epoch_row_ms(pg)
        except Exception as e:  # noqa: BLE001 - no PostgreSQL here: SQLite only
            print(f"(PostgreSQL at {PG_ADMIN_URL.rsplit('@', 1)[-1]} skipped: {e})")
        sent = send_ms(sqlite)
        jobs = job_pairs(home, server.uri, args.repeats, args.epochs) if args.repeats else []
    imported = import_cpu_s()
    _print(rows, sent, jobs, imported, args.epochs)


def _print(rows: dict, sent: tuple, jobs: list, imported: float, epochs: int) -> None:
    print("\nMLflow tracking overhead (a real mlflow server on this host)")
    # the epoch a record rides on: the jobs' own (their epoch_time_s), else a 1 s one
    epoch_s = statistics.median([j["epoch_s"] for j in jobs]) if jobs else 1.0
    for name, (plain, tracked) in rows.items():
        extra = tracked - plain
        print(
            f"  per epoch, {name} row: {plain:.2f} ms -> {tracked:.2f} ms (+{extra:.2f} ms, "
            f"{100 * extra / 1000 / epoch_s:.3f} % of a {epoch_s:.1f} s epoch)"
        )
    print(f"  per epoch record sent by the pump (off the path): {sent[0]:.1f} ms wall, "
          f"{sent[1]:.1f} ms CPU ({100 * sent[1] / 1000 / epoch_s:.2f} % of an epoch)")  # fmt: skip
    if not jobs:
        print(f"  importing mlflow, once per driver process: {imported:.2f} s CPU")
        return
    walls = {t: [j["wall"] for j in jobs if j["tracked"] is t] for t in (False, True)}
    ratios = [w1 / w0 for w0, w1 in zip(walls[False], walls[True])]
    tracked = [j for j in jobs if j["tracked"]]
    on_path = statistics.median([j["on_path"] / j["wall"] for j in tracked])
    pump = statistics.median([j["pump_cpu"] / j["wall"] for j in tracked])
    print(
        f"  per job ({len(ratios)} pairs, {2 * epochs} epochs): wall "
        f"{statistics.median(walls[False]):.1f} s -> {statistics.median(walls[True]):.1f} s, "
        f"ratio {statistics.median(ratios):.3f} (pairs "
        + ", ".join(f"{r:.3f}" for r in ratios)
        + ")"
    )
    print(
        f"    tracking's own share of the job: {100 * on_path:.2f} % on the job's thread "
        f"(staging, the final flush), {100 * pump:.2f} % the pump's CPU (requests)"
    )
    wall = statistics.median(walls[True])
    print(
        f"    importing mlflow, once per driver process: {imported:.2f} s CPU "
        f"({100 * imported / wall:.1f} % of this {wall:.0f} s job, in the pump's thread)"
    )


if __name__ == "__main__":
    main()
