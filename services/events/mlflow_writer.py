"""What each MLflow record (services/events/mlflow_outbox.py) does on the MLflow server,
through MLflow's own client (``MlflowClient`` of mlflow-skinny, the ``mlflow`` extra),
imported on first use so the service runs without it.

Every call is idempotent, since a record may be sent twice (a drainer that died after
MLflow answered): a run is found again by its ``colecionador.run_key`` tag before one is
created, metrics carry the timestamp they were staged with (MLflow keeps one point per
key, step, timestamp and value), params are written with the same values, a registered
version is found by its ``colecionador.version`` tag. Errors are sorted for the outbox:
``Refused`` (a 4xx: never sent again), ``Unreachable`` (away, slow, 5xx: try later).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from services.config import Settings
from services.errors import one_line
from services.statuses import TrialStatus

RUN_KEY = "colecionador.run_key"
VERSION_TAG = "colecionador.version"
BATCH = 100  # MLflow's limit of params (and tags) per log_batch


class Refused(Exception):
    """MLflow answered with a 4xx: this record can never be written as it is."""


class Unreachable(Exception):
    """The server is away, timed out or answered 5xx: the record waits for a later drain."""


def _sorted(e: Exception) -> Exception:
    """``e`` as Refused or Unreachable when it came from MLflow or HTTP, else ``e``."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(e, MlflowException):
        status = e.get_http_status_code()  # type: ignore[no-untyped-call]  # mlflow's is untyped
    elif isinstance(e, requests.HTTPError) and e.response is not None:
        status = e.response.status_code
    elif isinstance(e, (requests.RequestException, ConnectionError, TimeoutError)):
        status = 503
    else:
        return e
    if 400 <= status < 500 and status not in (408, 429):
        return Refused(one_line(e))
    return Unreachable(one_line(e))


def _quoted(value: str) -> str:
    """A string literal of MLflow's search filters."""
    quote = "'" if "'" not in value else '"'
    if quote in value:
        raise Refused(f"{value!r} cannot be named in an MLflow search filter")
    return f"{quote}{value}{quote}"


class Writer:
    """One MLflow client and what it has learnt (experiment and run ids), per process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._client: Any = None
        self._store: Any = None
        self._experiments: dict[str, str] = {}
        self._runs: dict[str, str] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            uri = self.settings.mlflow_uri
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    def write(self, kind: str, model_name: str, body: dict[str, Any]) -> None:
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            raise Refused(f"no such MLflow record: {kind!r}")
        # MLflow reads these per request: one bounded try each, the outbox retries
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.settings.mlflow_timeout_s)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        try:
            handler(model_name, body)
        except (Refused, Unreachable):
            raise
        except Exception as e:
            raise _sorted(e) from e

    # ------------------------------------------------------------ runs
    def _experiment(self, name: str) -> str:
        if name not in self._experiments:
            from mlflow.exceptions import MlflowException

            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    self._experiments[name] = self.client.create_experiment(name)
                    return self._experiments[name]
                except MlflowException as e:  # made meanwhile by another writer
                    if e.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    found = self.client.get_experiment_by_name(name)
            self._experiments[name] = found.experiment_id
        return self._experiments[name]

    def run_id(self, model_name: str, key: str, **create: Any) -> str:
        """The id of the run tagged ``key``, created (with ``create``: tags, run_name,
        parent) when there is none."""
        if key in self._runs:
            return self._runs[key]
        experiment = self._experiment(model_name)
        found = self.client.search_runs(
            [experiment], f"tags.`{RUN_KEY}` = {_quoted(key)}", max_results=1
        )
        if found:
            run_id = str(found[0].info.run_id)
        else:
            tags = {RUN_KEY: key, **create.get("tags", {})}
            if create.get("parent"):
                tags["mlflow.parentRunId"] = self.run_id(model_name, create["parent"])
            run = self.client.create_run(
                experiment, run_name=create.get("run_name") or key, tags=tags
            )
            run_id = str(run.info.run_id)
        if len(self._runs) > 10_000:
            self._runs.clear()
        self._runs[key] = run_id
        return run_id

    def _job_run(self, model_name: str, body: dict[str, Any]) -> str:
        tags = {"colecionador.job_id": str(body.get("job_id"))}
        return self.run_id(model_name, body["run_key"], tags=tags)

    def _log(self, run_id: str, **batch: Any) -> None:
        from mlflow.entities import Metric, Param, RunTag

        metrics = [Metric(k, float(v), t, step) for k, v, t, step in batch.get("metrics", [])]
        params = [Param(k, v[:6000]) for k, v in batch.get("params", {}).items()]
        tags = [RunTag(k, str(v)[:8000]) for k, v in batch.get("tags", {}).items()]
        for i in range(0, len(metrics), 1000):  # MLflow's limit of metrics per batch
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])
        for chunk in (params, tags):
            for i in range(0, len(chunk), BATCH):
                kind = "params" if chunk is params else "tags"
                self.client.log_batch(run_id, **{kind: chunk[i : i + BATCH]})

    def _run(self, model_name: str, body: dict[str, Any]) -> None:
        run_id = self.run_id(model_name, body["run_key"], tags=body["tags"])
        self._log(run_id, tags=body["tags"])

    def _params(self, model_name: str, body: dict[str, Any]) -> None:
        self._log(self._job_run(model_name, body), params=body["params"])

    def _epoch(self, model_name: str, body: dict[str, Any]) -> None:
        at, step = body["at_ms"], body["step"]
        points = [(k, v, at, step) for k, v in body["metrics"].items()]
        self._log(self._job_run(model_name, body), metrics=points)

    def _trials(self, model_name: str, body: dict[str, Any]) -> None:
        parent, at = body["run_key"], body["at_ms"]
        self._job_run(model_name, body)
        for t in body["trials"]:
            run_id = self.run_id(
                model_name,
                t["run_key"],
                parent=parent,
                run_name=f"{parent} trial {t['index']}",
                tags={"colecionador.job_id": str(body["job_id"])},
            )
            points = [(k, v, at, h["step"]) for h in t["history"] for k, v in h["metrics"].items()]
            tags = {"colecionador.trial": t["index"], "colecionador.trial_status": t["status"]}
            if t.get("rank") is not None:
                tags["colecionador.rank"] = t["rank"]
            tags["colecionador.tuning_run"] = body["tuning_run"]
            self._log(run_id, metrics=points, params=t["config"], tags=tags)
            status = {TrialStatus.COMPLETED: "FINISHED", TrialStatus.STOPPED_EARLY: "KILLED"}.get(
                t["status"]
            )
            self.client.set_terminated(run_id, status or "FAILED", end_time=at)

    def _end(self, model_name: str, body: dict[str, Any]) -> None:
        run_id = self._job_run(model_name, body)
        tags = {"colecionador.status": body["job_status"]}
        if body.get("error"):
            tags["colecionador.error"] = body["error"]
        self._log(run_id, tags=tags)
        self.client.set_terminated(run_id, body["status"], end_time=body["at_ms"])

    # ------------------------------------------------------------ the version
    def _version(self, model_name: str, body: dict[str, Any]) -> None:
        run_id = self._job_run(model_name, body)
        at = body["at_ms"]
        self._log(
            run_id,
            metrics=[(k, v, at, 0) for k, v in body["metrics"].items()],
            tags={
                VERSION_TAG: body["version"],
                "colecionador.verdict": body["status"],
                "colecionador.model_uri": body["model_uri"],
            },
        )
        files = self._files(body["artifacts"])
        with tempfile.TemporaryDirectory(prefix="colecionador-mlflow-") as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            if files:
                self.client.log_artifacts(run_id, tmp)

    def _files(self, keys: dict[str, str]) -> dict[str, bytes]:
        """The version's files from the store (an error here is ours, not MLflow's)."""
        from services.store.storage import open_store

        if self._store is None:
            self._store = open_store(self.settings)
        try:
            return {name: self._store.get_bytes(key) for name, key in keys.items()}
        except Exception as e:  # noqa: BLE001 - counted by the outbox, then refused
            raise RuntimeError(f"store: {one_line(e)}") from e

    def registered(self, model_name: str, body: dict[str, Any]) -> str:
        """The MLflow version number of our ``body["version"]``, registered when it is not
        (source: the version folder in the store, or the job run's artifacts)."""
        from mlflow.exceptions import MlflowException

        ours = str(body["version"])
        found = self.client.search_model_versions(
            f"name = {_quoted(model_name)} and tags.`{VERSION_TAG}` = '{ours}'"
        )
        if found:
            return str(found[0].version)
        try:
            self.client.create_registered_model(
                model_name, description="colecionador: versions approved by the gate"
            )
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        run_id = self._job_run(model_name, body) if body.get("run_key") else None
        source = body.get("source") or (f"runs:/{run_id}/" if run_id else body["model_uri"])
        mv = self.client.create_model_version(
            model_name,
            source,
            run_id=run_id,
            tags={
                VERSION_TAG: ours,
                "colecionador.job_id": str(body.get("job_id")),
                "colecionador.model_uri": body["model_uri"],
                "colecionador.verdict": body.get("status") or "",
            },
            description=f"colecionador {model_name} v{ours}",
            await_creation_for=self.settings.mlflow_timeout_s,
        )
        return str(mv.version)

    def _register(self, model_name: str, body: dict[str, Any]) -> None:
        self.registered(model_name, body)

    def _alias(self, model_name: str, body: dict[str, Any]) -> None:
        version = self.registered(model_name, body)
        self.client.set_registered_model_alias(model_name, body["alias"], version)


_writers: dict[str, Writer] = {}
_lock = threading.Lock()


def writer_for(settings: Settings) -> Writer:
    """This process's Writer for the settings' server and database."""
    key = f"{settings.mlflow_uri}|{settings.db_url}|{settings.store}"
    with _lock:
        if key not in _writers:
            _writers[key] = Writer(settings)
        return _writers[key]
