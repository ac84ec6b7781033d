"""Bad command lines exit 2 with one line saying why, before anything is written."""

import json

import pytest

from services.cli import main


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--dataset", "{data}", "--set", "lr=0.1"], "unknown hyperparameter 'lr'"),
        (["train", "--dataset", "{data}", "--set", "batch_size=many"], "batch_size"),
        (["train", "--dataset", "{data}", "--set", "phase1_epochs"], "expected key=value"),
        (["train", "--dataset", "{data}", "--set", "optimizer=lion"], "optimizer"),
        (
            ["train", "--dataset", "{data}", "--set", "loss=os:system"],
            "hyperparameters.loss: 'os:system' is outside the allowed plugin modules",
        ),
        (
            ["preflight", "--dataset", "{data}", "--set", 'callbacks=["subprocess:Popen"]'],
            "COLECIONADOR_PLUGIN_MODULES",
        ),
        (["train", "--dataset", "{missing}"], "dataset not found"),
        (["train", "--dataset", "{data}", "--config", "{missing}"], "config file not found"),
        (["train", "--dataset", "{data}", "--workers", "0"], "--workers must be at least 1"),
        (["train"], "--dataset"),
        (["frobnicate"], "invalid choice"),
    ],
)
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
    argv = [
        "preflight",
        "--dataset",
        str(root),
        "--out",
        str(tmp_path / "lr.png"),
        "--json",
        str(tmp_path / "pre.json"),
    ]
    for kv in ("backbone=mobilenet_v3_small", "image_size=16", "batch_size=8", "min_per_class=5"):
        argv += ["--set", kv]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "36 images, 3 classes, imbalance 1.0" in out and "overfit one batch of 8" in out
    assert "suggested phase1_lr" in out and (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "pre.json").read_text())
    assert report["overfit"]["passed"] and report["health"]["per_class"]["class_0"] == 12


SMALL = [
    "--set",
    "backbone=mobilenet_v3_small",
    "--set",
    "image_size=16",
    "--set",
    "batch_size=8",
    "--set",
    "min_per_class=5",
]


def test_preflight_prints_every_finding_and_which_would_fail_a_job(make_dataset, tmp_path, capsys):
    """A class of 3 images, an unreadable file and the same picture under two classes:
    all three are printed, both paths and classes of the conflict too, and the exit
    code says a job would fail; the overfit / LR test is skipped, no traceback."""
    import shutil

    root = make_dataset(per_class=[12, 12, 3], size=16, corrupt=1)
    shutil.copy(root / "class_0" / "001.png", root / "class_1" / "also_001.png")
    assert main(["preflight", "--dataset", str(root), *SMALL]) == 1
    out = capsys.readouterr().out
    assert "health: classes with fewer than 5 images: class_2 (3)" in out
    assert "health: 1 unreadable file(s): class_0/broken_0.png" in out
    assert (
        "label conflict: class_0/001.png (class_0) ~ class_1/also_001.png (class_1), same bytes"
    ) in out
    assert "would fail a job: classes with fewer than 5" in out
    assert "would fail a job: 1 unreadable" in out
    assert "would fail a job: 1 picture(s) filed under two classes" not in out
    assert "overfit one batch and the LR range test skipped" in out
    assert "a job with these settings would fail" in out


def test_preflight_fails_on_label_conflicts_only_when_fail_on_says_so(
    make_dataset, tmp_path, capsys
):
    import shutil

    root = make_dataset(per_class=12, size=16)
    shutil.copy(root / "class_0" / "001.png", root / "class_1" / "also_001.png")
    argv = ["preflight", "--dataset", str(root), *SMALL, "--set", "on_bad_image=skip"]
    assert main(argv + ["--set", "fail_on=label_conflicts"]) == 1
    out = capsys.readouterr().out
    assert "would fail a job: 1 picture(s) filed under two classes" in out
    assert "overfit one batch of 8" in out  # the rest still runs


def test_preflight_writes_the_lr_curve_under_the_home_not_the_working_folder(
    make_dataset, tmp_path, capsys, monkeypatch
):
    root = make_dataset(per_class=12, size=16)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["preflight", "--dataset", str(root), *SMALL]) == 0
    out = capsys.readouterr().out
    assert list(cwd.iterdir()) == []
    [folder] = (tmp_path / "home" / "reports").glob("preflight-*")
    assert (folder / "lr_range.png").read_bytes()[:4] == b"\x89PNG"
    assert f"(curve: {folder / 'lr_range.png'})" in out
    assert json.loads((folder / "preflight.json").read_text())["would_fail"] == []
    assert "a job with these settings would start" in out
