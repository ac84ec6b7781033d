"""Where a request may point: the operator's roots, symlinks resolved, no `..` in keys."""

import pytest

from services.config import Settings
from services.intake.request import TrainingRequest
from services.intake.trust import check_request, under


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "data" / "lote-1").mkdir(parents=True)
    (tmp_path / "data" / "escape").symlink_to("/etc")
    return Settings(
        home=tmp_path / "home",
        store_url="s3://models/colecionador",
        dataset_roots=f"{tmp_path / 'data'},s3://datasets/in",
    )


@pytest.mark.parametrize(
    "where,allowed",
    [
        ("{data}/lote-1", True),
        ("file://{data}/lote-1", True),
        ("{data}", True),
        ("/etc", False),
        ("/", False),
        ("{data}/../", False),
        ("{data}/escape", False),
        ("{data}-other", False),
        ("s3://datasets/in/lote-1/", True),
        ("s3://datasets/in", True),
        ("s3://datasets/inside/", False),
        ("s3://datasets/in/../secret/", False),
        ("s3://other/in/lote-1/", False),
        ("http://example/x", False),
    ],
)
def test_under_the_roots(settings, tmp_path, where, allowed):
    where = where.format(data=tmp_path / "data")
    assert under(where, settings.data_roots()) is allowed


def test_weights_may_be_a_name_a_stored_model_or_under_a_root(settings, tmp_path):
    def request(weights):
        return TrainingRequest(
            batch_id="b", dataset_uri="s3://datasets/in/x/", hyperparameters={"weights": weights}
        )

    for ok in (
        "imagenet",
        "IMAGENET1K_V2",
        "s3://models/colecionador/models/m/v1/model.pt",
        f"{tmp_path}/data/w.pt",
    ):
        check_request(request(ok), settings)
    with pytest.raises(ValueError, match="^hyperparameters.weights: '/etc/passwd' is not"):
        check_request(request("/etc/passwd"), settings)
    # what the job would read as a file is held to the roots: a bare file name too
    for file in ("w.pt", "Foo", "imagenet.pt"):
        with pytest.raises(ValueError, match=f"^hyperparameters.weights: '{file}' is not"):
            check_request(request(file), settings)
    with pytest.raises(ValueError, match="^dataset_uri: '/etc' is not under an allowed root"):
        check_request(TrainingRequest(batch_id="b", dataset_uri="/etc"), settings)


@pytest.mark.parametrize(
    "hp,field",
    [
        ({"loss": "os:system"}, "hyperparameters.loss"),
        ({"loss": "mypkg.losses:x; import os"}, "hyperparameters.loss"),
        ({"callbacks": ["subprocess:Popen"]}, "hyperparameters.callbacks.0.name"),
        (
            {"callbacks": [{"name": "LambdaCallback", "on_epoch_end": "os:_exit"}]},
            "hyperparameters.callbacks.0.on_epoch_end",
        ),
        (
            {"callbacks": [{"name": "LearningRateScheduler", "schedule": "shutil:rmtree"}]},
            "hyperparameters.callbacks.0.schedule",
        ),
        (
            {"callbacks": [{"name": "mypkg.evil.sub:Cb"}, {"name": "mypkgx:Cb"}]},
            "hyperparameters.callbacks.1.name",
        ),
        (
            {"callbacks": [{"name": "CSVLogger", "path": "/work/colecionador.db"}]},
            "hyperparameters.callbacks.0.path",
        ),
        (
            {"callbacks": [{"name": "CSVLogger", "filename": "../../model.pt"}]},
            "hyperparameters.callbacks.0.filename",
        ),
        (
            {"callbacks": [{"name": "TensorBoard", "log_dir": "/etc"}]},
            "hyperparameters.callbacks.0.log_dir",
        ),
    ],
)
def test_code_and_files_outside_the_allowlist_are_refused(settings, hp, field):
    settings.plugin_modules = "mypkg.*"
    request = TrainingRequest(batch_id="b", dataset_uri="s3://datasets/in/x/", hyperparameters=hp)
    with pytest.raises(ValueError, match=f"^{field}: "):
        check_request(request, settings)


def test_allowed_plugins_and_built_ins_pass_and_the_default_allows_none(settings):
    hp = {
        "loss": "mypkg.losses:smooth_ce",
        "callbacks": [
            "CSVLogger",
            {"name": "mypkg:Cb"},
            {"name": "CSVLogger", "filename": "h.csv"},
            {"name": "LambdaCallback", "on_epoch_end": "mypkg.hooks:log"},
        ],
    }
    request = TrainingRequest(batch_id="b", dataset_uri="s3://datasets/in/x/", hyperparameters=hp)
    settings.plugin_modules = "mypkg.*"
    check_request(request, settings)
    settings.plugin_modules = None
    with pytest.raises(ValueError, match="none: built-ins only.*COLECIONADOR_PLUGIN_MODULES"):
        check_request(request, settings)


def test_a_tuning_grid_cannot_smuggle_code(settings):
    request = TrainingRequest(
        batch_id="b",
        dataset_uri="s3://datasets/in/x/",
        mode="tune",
        tuning={"grid": {"loss": ["cross_entropy", "os:system"]}},
    )
    with pytest.raises(ValueError, match="^tuning.loss.1: 'os:system'"):
        check_request(request, settings)


@pytest.mark.parametrize(
    "space", [{"loss": ["cross_entropy", "os:system"]}, {"loss": "choice:cross_entropy,os:system"}]
)
def test_a_tuning_space_cannot_smuggle_code_in_a_list_or_a_choice(settings, space):
    request = TrainingRequest(
        batch_id="b",
        dataset_uri="s3://datasets/in/x/",
        mode="tune",
        tuning={"space": space, "numSamples": 2, "search": "random"},
    )
    with pytest.raises(ValueError, match="^tuning.loss.1: 'os:system'"):
        check_request(request, settings)
