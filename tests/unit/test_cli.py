"""Bad command lines exit 2 with one line saying why, before anything is written."""

import json

import pytest

from services.cli import main


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


def test_preflight_command_reports_health_and_suggests_an_lr(make_dataset, tmp_path, capsys):
    root = make_dataset(per_class=12, size=16)
    argv = ["preflight", "--dataset", str(root), "--out", str(tmp_path / "lr.png"),
            "--json", str(tmp_path / "pre.json")]
    for kv in ("backbone=mobilenet_v3_small", "image_size=16", "batch_size=8",
               "min_per_class=5"):
        argv += ["--set", kv]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "36 images, 3 classes, imbalance 1.0" in out and "overfit one batch of 8" in out
    assert "suggested phase1_lr" in out and (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "pre.json").read_text())
    assert report["overfit"]["passed"] and report["health"]["per_class"]["class_0"] == 12

