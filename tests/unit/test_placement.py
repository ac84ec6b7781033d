"""Placement on purpose: what each Ray resource request of the service asks for, from
the operator's settings (the two-node tests check where things then run)."""

from __future__ import annotations

import json

from services.config import HEAD_NODE, Settings
from services.jobs.ray_jobs import settings_env


def test_train_workers_ask_for_the_operators_node_type_beside_their_cpu_or_gpu(tmp_path):
    plain = Settings(home=tmp_path)
    assert plain.resources_per_worker(use_gpu=False) is None  # Ray's own default
    typed = Settings(home=tmp_path, worker_resources={"gpu_node": 1})
    assert typed.resources_per_worker(use_gpu=False) == {"CPU": 1.0, "gpu_node": 1}
    assert typed.resources_per_worker(use_gpu=True) == {"GPU": 1.0, "gpu_node": 1}


def test_the_api_runs_on_the_head_and_predict_where_the_operator_says(tmp_path):
    from services.api.deployment import api_deployment
    from services.registry.serving import predict_application

    settings = Settings(home=tmp_path, predict_resources={"gpu_node": 0.01})
    api = api_deployment(settings)
    assert api.ray_actor_options["resources"] == {HEAD_NODE: 0.001}
    app = predict_application(settings, "m")
    assert app._bound_deployment.ray_actor_options["resources"] == {"gpu_node": 0.01}
    anywhere = api_deployment(Settings(home=tmp_path, api_resources={}))
    assert not anywhere.ray_actor_options.get("resources")


def test_resource_settings_travel_as_json_and_read_back(tmp_path, monkeypatch):
    env = settings_env(Settings(home=tmp_path, worker_resources={"gpu_node": 2}))
    assert json.loads(env["COLECIONADOR_WORKER_RESOURCES"]) == {"gpu_node": 2}
    monkeypatch.setenv("COLECIONADOR_WORKER_RESOURCES", env["COLECIONADOR_WORKER_RESOURCES"])
    assert Settings(home=tmp_path).worker_resources == {"gpu_node": 2}


def test_a_resource_request_of_nothing_is_refused(tmp_path):
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="Ray resource name and a number > 0"):
        Settings(home=tmp_path, worker_resources={"gpu_node": 0})
