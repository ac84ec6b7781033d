"""MLflow records as they are staged (services/events/mlflow_outbox.py), how the writer
sorts MLflow's errors, what the job page says, and that a tracking URI with a password
stays on the node. Pure: no server (tests/integration/test_mlflow.py has the real one)."""

from __future__ import annotations

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from services.api.quality_sections import mlflow_line
from services.config import Settings
from services.events import mlflow_outbox, mlflow_pump
from services.events.mlflow_writer import Refused, Unreachable, Writer, _quoted, _sorted
from services.jobs.ray_jobs import settings_env


def test_metric_values_keep_numbers_and_say_what_is_not_finite():
    row = {"epoch": 3, "loss": 0.5, "n": 7, "early": True, "name": "x", "lrs": [1.0]}
    row.update(nan=float("nan"), up=float("inf"))
    out = mlflow_outbox.metric_values(row, skip=("epoch",))
    assert out == {"loss": 0.5, "n": 7.0, "nan": "nan", "up": "inf"}


def test_params_are_text_json_for_what_is_not_a_string():
    out = mlflow_outbox.param_values(
        {"backbone": "resnet18", "weights": None, "milestones": [3, 6], "amp": True, "lr": 1e-3}
    )
    assert out == {
        "backbone": "resnet18",
        "weights": "null",
        "milestones": "[3, 6]",
        "amp": "true",
        "lr": "0.001",
    }


@pytest.mark.parametrize(
    ("uri", "source"),
    [
        ("s3://b/p/models/m/v3/model.pt", "s3://b/p/models/m/v3"),
        ("file:///home/x/store/models/m/v3/model.pt", None),
        ("/home/x/store/models/m/v3/model.pt", None),
    ],
)
def test_the_registered_source_is_the_version_folder_when_mlflow_can_reach_it(uri, source):
    assert mlflow_outbox.registry_source(uri) == source


@pytest.mark.parametrize(
    ("error", "sorted_as"),
    [
        (MlflowException("bad", INVALID_PARAMETER_VALUE), Refused),
        (MlflowException("gone", RESOURCE_DOES_NOT_EXIST), Refused),
        (MlflowException("API request failed: connection refused", INTERNAL_ERROR), Unreachable),
        (MlflowException("busy", TEMPORARILY_UNAVAILABLE), Unreachable),
        (requests.ConnectionError("refused"), Unreachable),
        (requests.Timeout("slow"), Unreachable),
    ],
)
def test_mlflow_errors_are_refusals_or_a_server_away(error, sorted_as):
    assert type(_sorted(error)) is sorted_as


def test_http_errors_by_status_and_ours_left_alone():
    for status, sorted_as in ((403, Refused), (429, Unreachable), (502, Unreachable)):
        response = requests.Response()
        response.status_code = status
        assert type(_sorted(requests.HTTPError(response=response))) is sorted_as
    mine = KeyError("store")
    assert _sorted(mine) is mine  # ours: counted by the outbox, not taken as the server's


def test_an_unknown_record_is_refused_before_any_request():
    writer = Writer(Settings(mlflow_tracking_uri="http://127.0.0.1:1"))
    with pytest.raises(Refused):
        writer.write("bogus", "m", {})
    assert writer._client is None


def test_filter_literals_are_quoted_or_refused():
    assert _quoted("job-12") == "'job-12'"
    assert _quoted("it's") == '"it\'s"'
    with pytest.raises(Refused):
        _quoted("both ' and \"")


def test_the_job_page_line():
    assert mlflow_line(None) == ""
    assert mlflow_line({"records": 0, "pending": 0, "refused": 0, "error": None}) == ""
    pending = {"records": 9, "pending": 3, "refused": 0, "error": "unreachable: refused"}
    assert mlflow_line(pending) == (
        '<p id="mlflow">MLflow: 3 records pending (last error: unreachable: refused)</p>'
    )
    one = {"records": 9, "pending": 1, "refused": 0, "error": None}
    assert "MLflow: 1 record pending<" in mlflow_line(one)
    done = {"records": 9, "pending": 0, "refused": 1, "error": "refused: <bad alias>"}
    assert mlflow_line(done) == (
        '<p id="mlflow">MLflow: every record written, 1 refused '
        "(last error: refused: &lt;bad alias&gt;)</p>"
    )


def test_a_tracking_uri_with_a_password_stays_on_the_node():
    plain = Settings(mlflow_tracking_uri="http://mlflow:5000")
    assert settings_env(plain)["COLECIONADOR_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "mlflow:5000" not in repr(plain)  # a SecretStr: never printed
    secret = Settings(mlflow_tracking_uri="https://ana:pw@mlflow.example")
    assert "COLECIONADOR_MLFLOW_TRACKING_URI" not in settings_env(secret)
    assert settings_env(secret)["COLECIONADOR_MLFLOW_TIMEOUT_S"] == "5"
    assert not mlflow_outbox.enabled(Settings()) and mlflow_pump.start_pump(Settings(), "m") is None
