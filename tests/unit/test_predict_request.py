"""A predict request at the edge (services/intake): the model reference's format, the fields
only a predict request has, and where its dataset and out locations may point; each
rejection names its field. The CLI's ``predict`` exits 2 before anything is written."""

from __future__ import annotations

import pytest

from services.cli import main
from services.config import Settings
from services.intake.admission import Rejection, admit
from services.intake.model_ref import ModelRef


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("digits", ModelRef("digits", alias="production")),
        ("digits@staging", ModelRef("digits", alias="staging")),
        ("digits@v12", ModelRef("digits", version=12)),
        ("my.model-2@vintage", ModelRef("my.model-2", alias="vintage")),
    ],
)
def test_a_reference_names_an_alias_or_a_version(text, ref):
    assert ModelRef.parse(text) == ref
    assert ModelRef.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "text", ["", "..", "a/b", "digits@", "digits@v0", "digits@Prod", "a@b@c", "d@v99999999999"]
)
def test_a_malformed_reference_is_refused(text):
    with pytest.raises(ValueError, match="expected NAME, NAME@ALIAS or NAME@vN"):
        ModelRef.parse(text)


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path / "home", dataset_roots=f"{tmp_path}/data,s3://d/in")


def _predict(tmp_path, **kw):
    return {
        "batch_id": "p-1",
        "dataset_uri": f"{tmp_path}/data/lote",
        "mode": "predict",
        "model": "digits@v2",
        **kw,
    }


def test_a_predict_request_is_admitted_with_its_model_as_the_jobs(tmp_path, settings):
    out = f"{settings.store}/predictions/mine"
    request = admit(_predict(tmp_path, out_uri=out, topK=3), settings)
    assert not isinstance(request, Rejection)
    assert (request.mode, request.model, request.model_name) == ("predict", "digits@v2", "digits")
    assert (request.out_uri, request.top_k) == (out, 3)
    plain = admit(_predict(tmp_path, model="digits"), settings)
    assert plain.model == "digits@production" and plain.to_json()["model"] == "digits@production"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": None}, "model"),
        ({"model": "../x"}, "model"),
        ({"out_uri": "/etc"}, "out_uri"),
        ({"out_uri": "s3://d/in/../../elsewhere/"}, "out_uri"),
        ({"dataset_uri": "/etc"}, "dataset_uri"),
        ({"top_k": 0}, "top_k"),
        ({"model_name": "other"}, "model_name"),
        ({"tuning": {"grid": {"phase1_lr": [0.1, 0.2]}}}, "tuning"),
    ],
)
def test_a_hostile_or_incomplete_predict_request_is_refused_naming_the_field(
    tmp_path, settings, change, field
):
    rejected = admit(_predict(tmp_path, **change), settings)
    assert isinstance(rejected, Rejection), rejected
    assert rejected.field == field, rejected.reason


@pytest.mark.parametrize("extra", [{"model": "digits"}, {"out_uri": "s3://d/in/x"}, {"top_k": 2}])
def test_predict_fields_belong_to_predict_requests(tmp_path, settings, extra):
    body = {"batch_id": "t-1", "dataset_uri": f"{tmp_path}/data/x", **extra}
    rejected = admit(body, settings)
    assert isinstance(rejected, Rejection) and rejected.field == next(iter(extra))


def test_the_cli_exits_2_for_a_model_that_names_no_version(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--model", "nothing@v3", "--dataset", str(tmp_path / "imgs")])
    assert exit_.value.code == 2
    assert "--model: model 'nothing' has no version 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--model", "x@", "--dataset", str(tmp_path / "imgs")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: model:" in err and "expected NAME, NAME@ALIAS or NAME@vN" in err


def test_a_ray_job_predict_request_is_checked_like_the_queues(tmp_path, capsys):
    from services.jobs.entrypoint import main as job_main

    with pytest.raises(SystemExit) as exit_:
        job_main(["--dataset", str(tmp_path), "--model", "digits@v1", "--out", "/etc"])
    assert exit_.value.code == 2
    assert "dataset_uri:" in capsys.readouterr().err  # the first field outside a root
    with pytest.raises(SystemExit) as exit_:
        job_main(["--dataset", "s3://nowhere/x/", "--out", "s3://nowhere/y/"])
    assert exit_.value.code == 2
    assert "model: a predict request names its model" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "kept"), [(0, 0), (1, 1), (30, 30), (1000, 1000)])
def test_label_next_is_a_count_of_images_zero_for_none(tmp_path, settings, value, kept):
    request = admit(_predict(tmp_path, label_next=value), settings)
    assert not isinstance(request, Rejection), request.reason
    assert request.label_next == kept and request.to_json()["label_next"] == kept
    camel = admit(_predict(tmp_path, labelNext=value), settings)
    assert not isinstance(camel, Rejection) and camel.label_next == kept


@pytest.mark.parametrize(
    "value", [-1, 1001, 2**31, 2**63, True, False, "30", 30.0, 1e308, float("nan"), [30], {}]
)
def test_a_hostile_label_next_is_refused_naming_the_field(tmp_path, settings, value):
    rejected = admit(_predict(tmp_path, label_next=value), settings)
    assert isinstance(rejected, Rejection), rejected
    assert rejected.field == "label_next", rejected.reason


def test_label_next_belongs_to_predict_requests(tmp_path, settings):
    body = {"batch_id": "t-1", "dataset_uri": f"{tmp_path}/data/x", "label_next": 30}
    rejected = admit(body, settings)
    assert isinstance(rejected, Rejection) and rejected.field == "label_next"
    assert "only a predict request" in rejected.reason


def test_the_cli_exits_2_for_a_label_next_out_of_bounds(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    for bad in ("-3", "5000", "ten"):
        with pytest.raises(SystemExit) as exit_:
            main(
                [
                    "predict",
                    "--model",
                    "m@v1",
                    "--dataset",
                    str(tmp_path / "imgs"),
                    "--label-next",
                    bad,
                ]
            )
        assert exit_.value.code == 2
        assert "label" in capsys.readouterr().err


def test_a_ray_jobs_label_next_is_checked_like_the_queues(tmp_path, capsys):
    from services.jobs.entrypoint import main as job_main

    with pytest.raises(SystemExit) as exit_:
        job_main(["--dataset", "s3://nowhere/x/", "--label-next", "5"])  # no --model
    assert exit_.value.code == 2
    assert "model: a predict request names its model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        job_main(["--dataset", "s3://nowhere/x/", "--model", "m@v1", "--label-next", "-1"])
    assert exit_.value.code == 2
    assert "label_next:" in capsys.readouterr().err
