"""Ray's answers by status, not by text: a job is gone only when the job server answers
404. A real HTTP server on loopback answers as the job server would (the SDK's version
check, then each job's answer), so the SDK's own request and error paths run."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.config import Settings
from services.jobs.ray_jobs import JobServerError, RayJobs, job_missing

# submission id -> (status code, body) the server answers for GET /api/jobs/<id>
ANSWERS = {
    "colecionador-job-404-deadbeef": (500, "internal error while reading job 404 (port 8404)"),
    "gone": (404, "Job gone does not exist"),
    "teapot": (418, "Job teapot does not exist, said the proxy with a 404 in its text"),
}


SUBMITTED: list[dict] = []  # the bodies of the submissions the server was sent


class JobServer(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, code: int, body: str | dict) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/api/version":
            return self._answer(200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "x"})
        sid = self.path.removeprefix("/api/jobs/")
        self._answer(*ANSWERS.get(sid, (404, "not found")))

    def do_POST(self) -> None:  # submit, or stop
        if self.path.rstrip("/") == "/api/jobs":
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            SUBMITTED.append(body)
            return self._answer(200, {"submission_id": body["submission_id"], "job_id": "01"})
        sid = self.path.removeprefix("/api/jobs/").removesuffix("/stop")
        self._answer(*ANSWERS.get(sid, (404, "not found")))


@pytest.fixture(scope="module")
def job_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), JobServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_404_status_means_gone_and_nothing_else_does(job_server, tmp_path):
    jobs = RayJobs(Settings(home=tmp_path), address=job_server)
    assert jobs.status("gone") == (None, None)
    assert jobs.stop_and_wait("gone", wait_s=1) is None
    for sid in ("colecionador-job-404-deadbeef", "teapot"):  # "404" and "does not exist" in text
        with pytest.raises(JobServerError) as e:
            jobs.status(sid)
        assert e.value.status == ANSWERS[sid][0] and not job_missing(e.value)
        with pytest.raises(JobServerError):  # a cancel does not report a stop it did not make
            jobs.stop_and_wait(sid, wait_s=1)


def test_only_the_job_servers_own_404_is_missing():
    assert job_missing(JobServerError(404, "whatever"))
    assert not job_missing(RuntimeError("Request failed with status code 404: gone."))
    assert not job_missing(JobServerError(502, "Job x does not exist"))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://app:s3cret@db/colecionador",
        "postgresql+psycopg2://app@db/colecionador?password=s3cret",
        "postgresql+psycopg2://app@db/colecionador?sslmode=require&sslpassword=s3cret",
        "amqp://app@broker/vhost#s3cret",
        "amqp://app:s3cret@[::1/",  # not even a URL urllib reads
    ],
)
def test_a_url_with_credentials_in_any_part_never_travels_to_a_ray_job(tmp_path, url):
    from services.jobs.ray_jobs import settings_env

    env = settings_env(Settings(home=tmp_path, database_url=url, broker_url=url))
    assert "COLECIONADOR_DATABASE_URL" not in env and "COLECIONADOR_BROKER_URL" not in env
    assert not any("s3cret" in v for v in env.values())
    plain = settings_env(Settings(home=tmp_path, database_url="postgresql://app@db/c"))
    assert plain["COLECIONADOR_DATABASE_URL"] == "postgresql://app@db/c"


def test_a_driver_reserves_no_cpu_and_runs_where_the_settings_say(job_server, tmp_path):
    """The Ray job of a job attempt: entrypoint_num_cpus 0 (a driver never takes a CPU a
    Train worker waits for) and the operator's driver_resources (the head by default)."""
    from services.config import HEAD_NODE

    SUBMITTED.clear()
    jobs = RayJobs(Settings(home=tmp_path), address=job_server)
    sid = jobs.submit(7, "b-7")
    [body] = SUBMITTED
    assert body["submission_id"] == sid and body["entrypoint"].endswith("--job-id 7")
    assert body["entrypoint_num_cpus"] == 0
    assert body["entrypoint_resources"] == {HEAD_NODE: 0.001}
    elsewhere = RayJobs(Settings(home=tmp_path, driver_resources={"data_node": 1}), job_server)
    elsewhere.submit(8, "b-8")
    assert SUBMITTED[-1]["entrypoint_resources"] == {"data_node": 1}
