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
def test_the_serve_config_is_one_serve_takes(
    rendered: Rendered, overlay: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Ray Serve's own schema takes it, and Serve's own build of a config application
    (what its controller runs: import, the builder with the args, build_app) gives the
    deployments the config names; the predict applications go by the names the API
    looks up, and the settings come from the pods, never from the config."""
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app
    from ray.serve.schema import ServeDeploySchema

    from services.registry import apps, serving

    monkeypatch.setenv("COLECIONADOR_HOME", str(tmp_path))
    config = ServeDeploySchema.model_validate(serve_config(rendered[overlay]))
    assert config.proxy_location == "EveryNode" and config.http_options.port == 8000
    built = {}
    for app in config.applications:
        builder = import_attr(app.import_path)
        application = call_user_app_builder_with_args_if_necessary(builder, app.args)
        built[app.name] = build_app(application, name=app.name)
        built[app.name].validate_single_fastapi_ingress()
        names = {d.name for d in built[app.name].deployments}
        assert {d.name for d in app.deployments} <= names, app.name
        assert app.runtime_env == {}
        if builder is serving.build_predict:
            model = serving.PredictArgs.model_validate(app.args).model_name
            assert (app.name, app.route_prefix) == (apps.app_name(model), None)
            assert names == {apps.DEPLOYMENT_NAME}
        else:
            assert (app.import_path, app.route_prefix) == ("services.api.deployment:build_api", "/")
    assert "api" in built and any(name.startswith(apps.APP_PREFIX) for name in built)


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
