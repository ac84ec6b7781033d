"""Grids (tuning.grid): read like --set values, validated against the recipe, expanded."""

from __future__ import annotations

import pytest

from training.hyperparams import Hyperparameters
from tuning.grid import expand_grid, max_epochs, parse_grid, validate_grid
from tuning.space import to_tune


def test_grid_values_are_read_like_set_values():
    grid = parse_grid(
        [
            "phase1_lr=1e-3, 3e-4",
            "optimizer=adam,sgd",
            "hflip=true,false",
            "milestones=[3,6],[5,10]",
            "grad_clip=none,1.0",
        ]
    )
    assert grid == {
        "phase1_lr": [1e-3, 3e-4],
        "optimizer": ["adam", "sgd"],
        "hflip": [True, False],
        "milestones": [[3, 6], [5, 10]],
        "grad_clip": [None, 1.0],
    }
    assert len(expand_grid(grid)) == 2 * 2 * 2 * 2 * 2
    assert validate_grid(grid) == grid


@pytest.mark.parametrize(
    "args, message",
    [
        (["lr=1,2"], "unknown hyperparameter 'lr'"),
        (["phase1_lr"], "expects key=v1,v2"),
        (["phase1_lr=1e-3,"], "empty value"),
        (["phase1_lr=1e-3", "phase1_lr=1e-4"], "given twice"),
    ],
)
def test_bad_grid_text_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(args)


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"phase1_lr": [1e-3, -1]}, "phase1_lr=-1: phase1_lr: Input should be greater than 0"),
        ({"optimizer": ["adam", "rmsprop"]}, "optimizer='rmsprop'"),
        ({"batch_size": ["big"]}, "batch_size='big'"),
        ({"phase1_lr": []}, "no values"),
        ({"phase1_lr": [1e-3, 0.001]}, "given twice"),
        ({"lr": [1]}, "unknown hyperparameter 'lr'"),
        ({"seed": [1, 2]}, "seed cannot be tuned"),
        ({"test_frac": [0.1, 0.2]}, "test split stays held out"),
        ({"image_size": [32, 64]}, "image_size cannot be tuned"),
        ({"gate_accuracy": [0.5]}, "gate judges the final model"),
        ({"phase1_lr": "1e-3"}, "expected a list"),
    ],
)
def test_bad_grid_values_are_refused(grid, message):
    with pytest.raises(ValueError, match=message):
        validate_grid(grid)


def test_every_combination_is_checked_on_top_of_the_base():
    base = Hyperparameters(phase2_epochs=0)
    with pytest.raises(ValueError, match="phase1_epochs \\+ phase2_epochs must be at least 1"):
        validate_grid({"phase1_epochs": [0, 2]}, base)
    # the same grid is fine where phase 2 has epochs
    assert validate_grid({"phase1_epochs": [0, 2]}, Hyperparameters()) == {"phase1_epochs": [0, 2]}
    # values come back as the recipe reads them
    assert validate_grid({"phase1_lr": ["1e-3"], "hflip": ["false"]}) == {
        "phase1_lr": [0.001],
        "hflip": [False],
    }


def test_search_space_and_max_t():
    from ray import tune

    grid = {"phase1_lr": [1e-3, 1e-2], "phase2_epochs": [1, 4]}
    space = {k: to_tune(v, grid=True) for k, v in grid.items()}
    assert space == {k: tune.grid_search(v) for k, v in grid.items()}
    sampled = {k: to_tune(v, grid=False) for k, v in grid.items()}
    assert all(isinstance(v, tune.search.sample.Categorical) for v in sampled.values())
    assert sampled["phase2_epochs"].categories == [1, 4]
    assert max_epochs(grid, Hyperparameters(phase1_epochs=2)) == 6
    assert max_epochs({}, Hyperparameters(phase1_epochs=2, phase2_epochs=3)) == 5


def test_cli_tune_exits_2_on_a_bad_grid_and_writes_nothing(tmp_path, make_dataset, capsys):
    from services.cli import main

    root = make_dataset(per_class=12)
    for grid in (["lr=1,2"], ["phase1_lr=1e-3,-1"], ["seed=1,2"]):
        with pytest.raises(SystemExit) as e:
            main(["tune", "--dataset", str(root), "--grid", grid[0], "--k-folds", "3"])
        assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["tune", "--dataset", str(root), "--grid", "phase1_lr=1e-3", "--k-folds", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown hyperparameter 'lr'" in err and "k_folds" in err
    assert not (tmp_path / "home" / "colecionador.db").exists()
