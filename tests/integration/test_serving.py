"""Serving (#16 items 2 and 3) on real Ray Serve, on the session's token-auth cluster, with
PostgreSQL and the S3 server: two tiny models trained on the demo's digits (v1 approved,
so production by itself; v2 rejected by the gate), the API app and the model's predict
application. Predict returns the label the evaluation step computed for the same image;
moving the alias switches the answering version with every request answered meanwhile;
promoting over the gate needs a reason and leaves an audit row; reads follow the
read-token rule."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from pydantic import SecretStr
from ray import serve

from services.api import api_application
from services.config import Settings
from services.db import repo
from services.db.session import session_factory
from services.demo import write_digits
from services.intake.records import create_job
from services.intake.request import TrainingRequest
from services.jobs.driver import run_job
from services.registry.serving import deploy_model
from services.store.storage import open_store
from tests.conftest import (
    AMQP_URL,
    SESSION,
    TINY,
    cli_env,
    fresh_database,
    give_node,
    wait_until,
)
from tests.raycluster import free_port
from training.hyperparams import Hyperparameters

pytestmark = pytest.mark.integration

WRITE, READ = "w-" + uuid.uuid4().hex, "r-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {WRITE}"}
ANA = {"Authorization": f"Bearer ana-{WRITE}"}  # named writers: who moved an alias
BOB = {"Authorization": f"Bearer bob-{WRITE}"}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def served(ray_cluster, s3_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("serving-home")
    model = f"digits-{SESSION}"
    with fresh_database(f"colecionador_serving_{SESSION}") as db_url:
        settings = Settings(
            home=home,
            database_url=db_url,
            broker_url=AMQP_URL,
            workers=2,
            publish_events=False,
            store_url=f"s3://{s3_server.bucket_name('serving')}/colecionador",
            s3_endpoint=s3_server.endpoint,
            s3_access_key=s3_server.access_key,
            s3_secret_key=SecretStr(s3_server.secret_key),
            api_token=SecretStr(WRITE),
            api_writers=SecretStr(f"ana=ana-{WRITE},bob=bob-{WRITE}"),
            dataset_roots=str(home),
        )
        give_node(ray_cluster, settings, COLECIONADOR_API_READ_TOKEN=READ)  # as every node has
        data = write_digits(home, range(0, 3))  # the demo's digits, three classes
        for folder in data.iterdir():  # 40 of each: a few seconds a job
            for extra in sorted(folder.glob("*.png"))[40:]:
                extra.unlink()

        def train(batch: str, **hp) -> int:
            job, _ = create_job(
                settings,
                TrainingRequest(
                    batch_id=f"{batch}-{SESSION}",
                    dataset_uri=str(data),
                    model_name=model,
                    hyperparameters=Hyperparameters(**{**TINY, **hp}),
                ),
            )
            outcome = run_job(job.id, settings, say=lambda _m: None)
            assert outcome.status == "success", outcome.error
            return outcome.version

        assert train("serve-v1") == 1  # approved: production by itself
        _add_calibrated_v2(settings, model, data)

        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        try:
            serve.run(api_application(settings), name="serving-api", route_prefix="/")
            deploy_model(settings, model, reload_s=0.3)
            wait_until(lambda: _answers(f"{url}/healthz"), 60, "the API on Serve")
            with httpx.Client(base_url=url, timeout=60) as client:
                yield SimpleNamespace(
                    url=url,
                    port=port,
                    client=client,
                    settings=settings,
                    model=model,
                    data=data,
                    cluster=ray_cluster,
                )
        finally:
            serve.shutdown()  # only Serve: the session's cluster stays up


def _add_calibrated_v2(settings: Settings, model: str, data) -> None:
    """v2, rejected by the gate: v1's weights with four times v1's fitted temperature (as
    a calibration would store it), recorded as another job's version. Same labels, flatter
    probabilities: which version answered shows in the numbers too."""
    import io

    import torch

    store = open_store(settings)
    package = torch.load(
        io.BytesIO(store.get_bytes(f"models/{model}/v1/model.pt")), weights_only=True
    )
    package["temperature"] = 4.0 * package.get("temperature", 1.0)
    buf = io.BytesIO()
    torch.save(package, buf)
    uri = store.put_bytes(f"models/{model}/v2/model.pt", buf.getvalue())
    job, _ = create_job(
        settings,
        TrainingRequest(batch_id=f"serve-v2-{SESSION}", dataset_uri=str(data), model_name=model),
    )
    with session_factory(settings.db_url)() as s:
        repo.finish_job(s, job.id, "success", commit=False, accuracy=0.5)
        mv = repo.reserve_version(
            s,
            model,
            job_id=job.id,
            accuracy=0.5,
            precision=0.5,
            recall=0.5,
            f1=0.5,
            status="rejected",
            gate={"status": "rejected", "rules": []},
            model_path=uri,
        )
        assert mv.version == 2
        s.commit()


def _errors_report(served, version: int) -> dict:
    store = open_store(served.settings)
    return json.loads(store.get_bytes(f"models/{served.model}/v{version}/errors.json"))


def test_predict_returns_the_label_the_evaluation_computed(served):
    report = _errors_report(served, 1)
    worst = report["worst"][:8]
    assert worst, f"the tiny model made no test errors: {report}"
    files = [("images", (w["path"], (served.data / w["path"]).read_bytes())) for w in worst]
    r = served.client.post(f"/models/{served.model}/predict?k=3", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 1 and body["alias"] == "production"
    assert len(body["predictions"]) == len(worst)
    for w, top in zip(worst, body["predictions"]):
        assert len(top) == 3
        assert top[0]["label"] == w["predicted"], (w, top)
        assert top[0]["probability"] == pytest.approx(w["confidence"], abs=1e-4)
        assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)  # 3 classes
    one = base64.b64encode((served.data / worst[0]["path"]).read_bytes()).decode()
    r = served.client.post(f"/models/{served.model}/predict", json={"image": one, "top_k": 1})
    assert r.status_code == 200 and r.json()["predictions"][0][0]["label"] == worst[0]["predicted"]


def test_many_requests_at_once_are_all_answered(served):
    path = next(iter(sorted(served.data.rglob("*.png"))))
    payload = {"images": [base64.b64encode(path.read_bytes()).decode()] * 4}

    def call(_i: int) -> tuple[int, list]:
        r = served.client.post(f"/models/{served.model}/predict", json=payload)
        return r.status_code, r.json().get("predictions")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(32)))
    assert {status for status, _ in answers} == {200}
    first = answers[0][1]
    assert all(preds == first for _, preds in answers)  # batched or not, the same answer


def test_alias_moves_switch_the_version_and_the_override_needs_a_reason(served):
    c, model = served.client, served.model
    image = base64.b64encode(next(iter(sorted(served.data.rglob("*.png")))).read_bytes()).decode()

    seen: dict[int, float] = {}

    def version() -> int:
        r = c.post(f"/models/{model}/predict", json={"image": image, "top_k": 1})
        assert r.status_code == 200, r.text  # no downtime while the alias moves
        body = r.json()
        seen[body["version"]] = body["predictions"][0][0]["probability"]
        return body["version"]

    r = c.post(f"/models/{model}/versions/2/promote", json={}, headers=ANA)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "reason"]
    assert version() == 1
    with session_factory(served.settings.db_url)() as s:
        assert [m.to_version for m in repo.alias_moves(s, model)] == [1]  # the gate's only

    r = c.post(
        f"/models/{model}/versions/2/promote",
        json={"reason": "v1 misreads a customer's scans"},
        headers=ANA,
    )
    assert r.status_code == 200 and r.json()["overrode_gate"] is True
    wait_until(lambda: version() == 2, 30, "v2 answering")
    assert seen[2] < seen[1]  # v2's temperature: the same top label, less sure
    history = c.get(f"/models/{model}/aliases").json()["history"]
    assert history[0] | {"moved_at": None} == {
        "model_name": model,
        "alias": "production",
        "from_version": 1,
        "to_version": 2,
        "moved_by": "ana",
        "reason": "v1 misreads a customer's scans",
        "overrode_gate": True,
        "moved_at": None,
    }
    assert c.post(f"/models/{model}/versions/2/promote", json={}, headers=AUTH).status_code == 409
    r = c.post(f"/models/{model}/versions/1/promote", json={}, headers=BOB)
    assert r.status_code == 200 and r.json()["overrode_gate"] is False
    wait_until(lambda: version() == 1, 30, "v1 answering again")
    page = c.get("/").text
    assert 'id="alias-history"' in page and "v1 misreads a customer&#x27;s scans" in page


def test_bad_input_and_unserved_models(served):
    c, model = served.client, served.model
    good = base64.b64encode(next(iter(sorted(served.data.rglob("*.png")))).read_bytes()).decode()
    bad = base64.b64encode(b"not an image").decode()
    r = c.post(f"/models/{model}/predict", json={"images": [good, bad]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "images", 1]
    r = c.post(f"/models/{model}/predict", json={"images": ["%%%"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "images", 0]
    r = c.post(f"/models/{model}/predict", json={})
    assert r.status_code == 422
    r = c.post("/models/not-served/predict", json={"image": good})
    assert r.status_code == 404 and "not served" in r.json()["detail"]


def test_colecionador_serve_pins_a_version_and_reads_follow_the_read_token_rule(served):
    """`colecionador serve --predict NAME@2` on the cluster, with a read token: the
    model's application answers with v2 whatever production says; predict needs the
    read (or write) token. Last in the module: it replaces the model's application."""
    name = f"ro-{uuid.uuid4().hex[:6]}"
    env = cli_env(served.settings, served.cluster, WRITE, READ)
    cli = Path(sys.executable).with_name("colecionador")
    argv = [str(cli), "serve", "--port", str(served.port), "--name", name]
    argv += ["--route-prefix", f"/{name}", "--predict", f"{served.model}@2", "--reload-s", "1"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"model {served.model}: POST" in done.stdout and "v2 (pinned)" in done.stdout
        base = f"{served.url}/{name}"
        image = base64.b64encode(next(iter(sorted(served.data.rglob("*.png")))).read_bytes())
        body = {"image": image.decode()}
        path = f"{base}/models/{served.model}/predict"
        assert httpx.post(path, json=body, timeout=30).status_code == 401
        bad = httpx.post(path, json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
        assert bad.status_code == 403
        for token in (READ, WRITE):
            ok = httpx.post(
                path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            assert ok.status_code == 200, ok.text
            assert (ok.json()["version"], ok.json()["alias"]) == (2, None)
    finally:
        serve.delete(name)


def test_hard_cases_are_kept_in_the_store_as_a_pool_to_predict_from(served):
    """A predict app with hard_cases (every answer sampled, a pool of 2): each answered
    image goes to the S3 store with its answer, off the request path; the pool keeps its
    bound, and the bulk predict path lists it as a data set."""
    from services.jobs.predict_step import list_images
    from services.registry.hard_case_rules import HardCases
    from services.registry.serving import predict_application
    from services.store.artifacts import hard_cases_prefix

    settings, model = served.settings, served.model
    store, prefix = open_store(settings), hard_cases_prefix(served.model)
    rules = HardCases(sample=1.0, max_count=2)
    app = predict_application(settings, model, version=1, reload_s=60, hard_cases=rules)
    handle = serve.run(app, name=f"hard-cases-{SESSION}", route_prefix=None)
    try:
        paths = sorted(served.data.rglob("*.png"))[:3]
        answers = [handle.predict.remote([p.read_bytes()], 2).result() for p in paths]
        assert all(a["version"] == 1 and len(a["predictions"][0]) == 2 for a in answers)
        counts = handle.hard_cases.remote(30.0).result()  # waits for the writer thread
        assert counts["flushed"] and counts["kept"] == 3 and counts["pruned:bounds"] == 1
        keys = store.list(prefix)
        folders = sorted({k[len(prefix) :].split("/")[0] for k in keys})
        assert len(folders) == 2 and len(keys) == 4  # the newest two: image + record each
        newest = json.loads(store.get_bytes(f"{prefix}{folders[-1]}/prediction.json"))
        assert newest["predictions"] == answers[-1]["predictions"][0]
        assert (newest["model_name"], newest["version"], newest["reason"]) == (model, 1, "sampled")
        assert newest["confidence"] == answers[-1]["predictions"][0][0]["probability"]
        assert store.get_bytes(f"{prefix}{folders[-1]}/image.png") == paths[-1].read_bytes()
        listed, _source = list_images(store.uri(prefix), settings)  # the pool as a data set
        assert [rel for rel, _size, _etag in listed] == [f"{f}/image.png" for f in folders]
    finally:
        serve.delete(f"hard-cases-{SESSION}")
        store.delete_prefix(prefix)
