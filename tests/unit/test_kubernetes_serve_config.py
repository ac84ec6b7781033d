"""The Serve config of deploy/kubernetes/'s RayService (serveConfigV2) against Ray
Serve's own schema, and the builders its import paths name (services.api.deployment,
services.registry.serving)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubernetes import (
    OVERLAYS,
    Objects,
    Rendered,
    one,
    render_all,
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render_all(tmp_path_factory.mktemp("deploy"))


def serve_config(objs: Objects) -> dict[str, Any]:
    return yaml.safe_load(one(objs, "RayService")["spec"]["serveConfigV2"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_serve_config_is_one_serve_takes(rendered: Rendered, overlay: str):
    """Ray Serve's own schema takes it; each import path is a builder of the project
    whose args it takes; the names are the ones the API looks up."""
    import importlib

    from ray.serve.schema import ServeDeploySchema

    from services.api import deployment
    from services.registry import apps, serving

    config = ServeDeploySchema.model_validate(serve_config(rendered[overlay]))
    assert config.proxy_location == "EveryNode" and config.http_options.port == 8000
    builders = {
        "services.api.deployment:build_api": (deployment.ApiArgs, deployment.DEPLOYMENT_NAME),
        "services.registry.serving:build_predict": (serving.PredictArgs, apps.DEPLOYMENT_NAME),
    }
    seen = set()
    for app in config.applications:
        module, _, attr = app.import_path.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), app.import_path
        args_model, deployment_name = builders[app.import_path]
        args = args_model.model_validate(app.args)
        assert [d.name for d in app.deployments] == [deployment_name]
        if args_model is serving.PredictArgs:
            assert (app.name, app.route_prefix) == (apps.app_name(args.model_name), None)
        else:
            assert (app.name, app.route_prefix) == ("api", "/")
        assert app.runtime_env == {}  # settings come from the pods, never from here
        seen.add(app.import_path)
    assert seen == set(builders)


def test_the_builders_build_applications_without_a_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    from pydantic import ValidationError
    from ray.serve import Application

    from services.api.deployment import build_api
    from services.registry.serving import build_predict

    monkeypatch.setenv("COLECIONADOR_HOME", str(tmp_path))
    assert isinstance(build_api({}), Application)
    assert isinstance(build_predict({"model_name": "digits", "version": 3}), Application)
    for bad in (
        {"model_name": "digits", "replicas": 2},  # deployment options go in `deployments`
        {"model_name": ".."},
        {"model_name": "a/b"},
        {"model_name": "digits", "alias": "Prod!"},
        {"model_name": "digits", "version": 0},
        {},
    ):
        with pytest.raises(ValidationError):
            build_predict(bad)
    with pytest.raises(ValidationError):
        build_api({"cancel_wait_s": 0})
