"""The names a model's predict application goes by on Ray Serve: what the API's predict
route looks up and what ``colecionador serve`` deploys (services/registry/serving.py)."""

DEPLOYMENT_NAME = "ModelServer"
APP_PREFIX = "predict-"


def app_name(model_name: str) -> str:
    """The Serve application that serves ``model_name``."""
    return APP_PREFIX + model_name
