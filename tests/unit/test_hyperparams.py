import json

import pytest
from pydantic import ValidationError

from services.intake.request import parse_request
from training.hyperparams import (
    Hyperparameters,
    load_hyperparameters,
    parse_assignment,
    validation_message,
)


def test_defaults_are_the_design_table():
    hp = Hyperparameters()
    assert (hp.backbone, hp.image_size, hp.batch_size) == ("mobilenet_v2", 224, 32)
    assert (hp.phase1_epochs, hp.phase1_lr, hp.phase2_epochs, hp.phase2_lr) == (10, 1e-3, 20, 1e-5)
    assert (hp.unfreeze_last, hp.optimizer, hp.schedule, hp.factor) == (50, "adam", "plateau", 0.1)
    assert (hp.plateau_patience, hp.early_stopping_patience, hp.dropout) == (2, 5, 0.2)
    assert (hp.val_frac, hp.test_frac, hp.min_per_class, hp.on_bad_image) == (0.1, 0.1, 10, "fail")
    assert (hp.gate_accuracy, hp.gate_precision, hp.gate_recall) == (0.90, 0.88, 0.88)
    assert hp.weights is None and hp.amp == "auto" and hp.seed == 0


def test_effective_holds_every_name_with_json_values():
    eff = Hyperparameters(phase1_lr=3e-4).effective()
    assert set(eff) == set(Hyperparameters.model_fields)
    assert eff["phase1_lr"] == 3e-4 and eff["milestones"] == [5, 10]


def test_unknown_name_is_an_error_not_ignored():
    with pytest.raises(ValidationError) as e:
        Hyperparameters(phase1_epoch=3)
    assert "phase1_epoch: unknown hyperparameter" in validation_message(e.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"batch_size": 0},
        {"phase1_lr": -1},
        {"optimizer": "lion"},
        {"schedule": "linear"},
        {"dropout": 1.5},
        {"phase1_epochs": 0, "phase2_epochs": 0},
        {"val_frac": 0.5, "test_frac": 0.45},
        {"loss": "hinge"},
        {"image_size": "big"},
    ],
)
def test_ill_typed_or_out_of_range_values_are_rejected(bad):
    with pytest.raises(ValidationError):
        Hyperparameters(**bad)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("phase1_lr=3e-4", ("phase1_lr", 3e-4)),
        ("hflip=false", ("hflip", False)),
        ("weights=none", ("weights", None)),
        ("milestones=[3,6]", ("milestones", [3, 6])),
        ("milestones=3,6", ("milestones", [3, 6])),
        ("backbone=resnet18", ("backbone", "resnet18")),
        ("loss=pkg.mod:fn", ("loss", "pkg.mod:fn")),
    ],
)
def test_parse_assignment(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("augment=none", ("augment", "none")),
        ("schedule=none", ("schedule", "none")),
        ("schedule=None", ("schedule", "none")),
        ("class_weights=none", ("class_weights", None)),
        ("grad_clip=none", ("grad_clip", None)),
        ("val_max=none", ("val_max", None)),
        ("weights=null", ("weights", None)),
        ("backbone=none", ("backbone", "none")),
        ("fail_on=label_conflicts", ("fail_on", ["label_conflicts"])),
        ("fail_on=leakage,label_conflicts", ("fail_on", ["leakage", "label_conflicts"])),
        ("milestones=4", ("milestones", [4])),
    ],
)
def test_the_word_none_is_the_string_where_the_field_allows_it_else_none(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("field", ["augment", "schedule"])
def test_none_for_augment_and_schedule_from_set_config_and_message(field, tmp_path):
    """`--set augment=none`, a config file's `augment: none` or `augment: null`, and a
    message's "augment": null all mean the string "none" (the README's spelling)."""
    key, value = parse_assignment(f"{field}=none")
    assert getattr(Hyperparameters(**{key: value}), field) == "none"
    assert getattr(Hyperparameters(**{field: None}), field) == "none"
    r = parse_request(
        (
            '{"batch_id": "b", "dataset_uri": "s3://d/b/", "hyperparameters": '
            f'{{"{field}": null}}}}'
        ).encode()
    )
    assert getattr(r.hyperparameters, field) == "none"
    with pytest.raises(ValidationError):
        Hyperparameters(**{field: "nothing"})


def test_parse_assignment_rejects_unknown_and_malformed():
    with pytest.raises(ValueError, match="unknown hyperparameter 'lr'"):
        parse_assignment("lr=0.1")
    with pytest.raises(ValueError, match="key=value"):
        parse_assignment("phase1_lr")


def test_message_accepts_camel_case_and_requires_two_fields():
    r = parse_request(
        b'{"batchId": "b1", "dataset_uri": "s3://d/b1/", "totalImages": 9000,'
        b' "hyperparameters": {"phase1_epochs": 3}}'
    )
    assert (r.batch_id, r.total_images, r.mode) == ("b1", 9000, "train")
    assert r.hyperparameters.phase1_epochs == 3
    with pytest.raises(ValueError, match="dataset_uri"):
        parse_request({"batch_id": "b1"})
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        parse_request({"batch_id": "b", "dataset_uri": "x", "hyperparameters": {"lr": 1}})
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        parse_request(
            {
                "batch_id": "b",
                "dataset_uri": "x",
                "mode": "tune",
                "tuning": {"grid": {"lr": [1, 2]}},
            }
        )
    with pytest.raises(ValueError):
        parse_request(b"not json")


@pytest.mark.parametrize(
    "values,field",
    [
        ({"phase1_epochs": 10**6}, "phase1_epochs"),
        ({"phase2_epochs": 1001}, "phase2_epochs"),
        ({"batch_size": 10**6}, "batch_size"),
        ({"callbacks": ["CSVLogger"] * 21}, "callbacks"),
        ({"callbacks": [{"name": "CSVLogger", "filename": "x" * 5000}]}, "callbacks"),
        ({"loss": "a.b:" + "c" * 400}, "loss"),
        ({"seed": -1}, "seed"),
        ({"milestones": list(range(1, 200))}, "milestones"),
        ({"grad_accum": 10**5}, "grad_accum"),
    ],
)
def test_bounds_on_what_one_request_may_ask(values, field):
    with pytest.raises(ValidationError) as e:
        Hyperparameters(**values)
    assert validation_message(e.value).startswith(f"{field}: ")


def test_config_file_then_set_overrides(tmp_path):
    (tmp_path / "c.json").write_text(
        json.dumps({"hyperparameters": {"phase1_lr": 0.01, "batch_size": 16}})
    )
    (tmp_path / "c.toml").write_text("phase1_epochs = 3\nhflip = false\n")
    (tmp_path / "c.yaml").write_text("backbone: resnet18\n")
    hp = load_hyperparameters(str(tmp_path / "c.json"), ["batch_size=8"])
    assert (hp.phase1_lr, hp.batch_size) == (0.01, 8)
    hp = load_hyperparameters(str(tmp_path / "c.toml"), [])
    assert (hp.phase1_epochs, hp.hflip) == (3, False)
    assert load_hyperparameters(str(tmp_path / "c.yaml"), []).backbone == "resnet18"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="cannot parse") as e:
        load_hyperparameters(str(tmp_path / "bad.json"), [])
    assert "\n" not in str(e.value)
    (tmp_path / "bad.yaml").write_text("a: [1,\n b: {\n")
    with pytest.raises(ValueError, match="cannot parse") as e:
        load_hyperparameters(str(tmp_path / "bad.yaml"), [])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown hyperparameter 'lr'"):
        load_hyperparameters(None, ["lr=0.1"])
    with pytest.raises(ValueError, match="batch_size"):
        load_hyperparameters(None, ["batch_size=many"])
