"""Bad command lines exit 2 with one line saying why, before anything is written."""

import json

import pytest

from services.cli import hyperparameters_from_args, main


@pytest.mark.parametrize("argv,message", [
    (["train", "--dataset", "{data}", "--set", "lr=0.1"], "unknown hyperparameter 'lr'"),
    (["train", "--dataset", "{data}", "--set", "batch_size=many"], "batch_size"),
    (["train", "--dataset", "{data}", "--set", "phase1_epochs"], "expected key=value"),
    (["train", "--dataset", "{data}", "--set", "optimizer=lion"], "optimizer"),
    (["train", "--dataset", "{missing}"], "dataset not found"),
    (["train", "--dataset", "{data}", "--config", "{missing}"], "config file not found"),
    (["train", "--dataset", "{data}", "--workers", "0"], "--workers must be at least 1"),
    (["train"], "--dataset"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_exit_2_and_write_nothing(argv, message, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    argv = [a.format(data=data, missing=tmp_path / "missing") for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.db"))


def test_config_file_then_set_overrides(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"hyperparameters": {"phase1_lr": 0.01,
                                                                     "batch_size": 16}}))
    (tmp_path / "c.toml").write_text("phase1_epochs = 3\nhflip = false\n")
    (tmp_path / "c.yaml").write_text("backbone: resnet18\n")
    hp = hyperparameters_from_args(str(tmp_path / "c.json"), ["batch_size=8"])
    assert (hp.phase1_lr, hp.batch_size) == (0.01, 8)
    hp = hyperparameters_from_args(str(tmp_path / "c.toml"), [])
    assert (hp.phase1_epochs, hp.hflip) == (3, False)
    assert hyperparameters_from_args(str(tmp_path / "c.yaml"), []).backbone == "resnet18"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="cannot parse"):
        hyperparameters_from_args(str(tmp_path / "bad.json"), [])
