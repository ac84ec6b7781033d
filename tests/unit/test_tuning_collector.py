"""The search's collector (tuning.search) without a Tune run: a trial's end is told only
after a snapshot holds it, and a restored run finds its trials and its listeners."""

from __future__ import annotations

import cloudpickle

from tuning import search


class FakeTrial:
    def __init__(self, trial_id: str, lr: float):
        self.trial_id, self.config = trial_id, {"phase1_lr": lr}


def report(epoch: int, done: bool = False) -> dict:
    return {"epoch": epoch, "val_loss": 1.0 / epoch, "trial_done": done, "other": 1}


def test_an_end_is_told_once_a_snapshot_holds_it_and_a_restore_brings_the_trials_back():
    told: list[str] = []
    search.HOOKS["run-a"] = search.Hooks(listener=lambda t: told.append(t.trial_id))
    try:
        c = search._make_collector("run-a", ["phase1_lr"])
        a, b = FakeTrial("a", 1e-3), FakeTrial("b", 1e-2)
        trials = [a, b]
        for t in trials:
            c.on_trial_start(0, trials, t)
        c.on_trial_result(0, trials, a, report(1))
        c.on_trial_result(0, trials, a, report(2, done=True))
        c.on_trial_result(0, trials, b, report(1))
        c.on_trial_complete(0, trials, a)
        c.on_step_end(0, trials)
        assert told == []  # ended, but no snapshot holds it yet
        state = c.get_state()  # Tune writes a snapshot
        assert told == []
        c.on_step_end(1, trials)
        assert told == ["a"]
        assert c.trials["a"].status == "completed" and c.trials["a"].history[-1]["epoch"] == 2
        assert "other" not in c.trials["a"].history[0]

        # the driver dies; the restored Tuner unpickles its collector (tuner.pkl) and
        # hands it the snapshot's state
        restored = cloudpickle.loads(cloudpickle.dumps(c))
        assert search.HOOKS["run-a"].collector is restored
        restored.set_state(state)
        assert restored.trials["a"].status == "completed"
        assert restored.trials["b"].history == []  # it starts again from its first epoch
        restored.on_trial_result(0, trials, b, report(1))
        restored.on_trial_result(0, trials, b, report(2, done=True))
        restored.on_trial_complete(0, trials, b)
        restored.on_experiment_end(trials)  # whatever is left is told at the end
        assert told == ["a", "b"]
        assert [h["epoch"] for h in restored.trials["b"].history] == [1, 2]
    finally:
        search.HOOKS.pop("run-a", None)


def test_a_trial_started_again_reports_from_its_first_epoch():
    c = search._make_collector("run-b", ["phase1_lr"])
    a = FakeTrial("a", 1e-3)
    for epoch in (1, 2, 1, 2, 3):
        c.on_trial_result(0, [a], a, report(epoch))
    assert [h["epoch"] for h in c.trials["a"].history] == [1, 2, 3]


class FakeCheckpoint:
    def __init__(self, path: str):
        self.path = path


def test_the_out_of_fold_checkpoint_is_kept_through_a_snapshot_and_a_restore(tmp_path):
    import numpy as np

    from tuning.cv import save_out_of_fold

    c = search._make_collector("run-c", ["phase1_lr"])
    a, b = FakeTrial("a", 1e-3), FakeTrial("b", 1e-2)
    trials = [a, b]
    for t in trials:
        c.on_trial_start(0, trials, t)
    c.on_trial_result(0, trials, a, report(1, done=True))
    folder = tmp_path / "checkpoint_000000"
    folder.mkdir()
    index, probs = np.array([0, 2, 5]), np.eye(3)[[1, 0, 2]] * 0.9 + 0.1 / 3
    save_out_of_fold(str(folder), index, probs)
    c.on_checkpoint(0, trials, a, FakeCheckpoint(str(folder)))
    c.on_trial_complete(0, trials, a)
    c.on_trial_result(0, trials, b, report(1))
    c.on_checkpoint(0, trials, b, FakeCheckpoint(str(tmp_path / "b")))  # then the driver died
    state = c.get_state()
    assert state["trials"]["a"]["oof_checkpoint"] == str(folder)

    restored = cloudpickle.loads(cloudpickle.dumps(c))
    restored.set_state(state)
    assert restored.trials["a"].oof_checkpoint == str(folder)
    assert restored.trials["b"].oof_checkpoint is None  # it trains again from the start
    got_index, got_probs = search.load_out_of_fold(restored.trials["a"])
    assert got_index.dtype == np.int64 and got_index.tolist() == [0, 2, 5]
    assert got_probs.dtype == np.float32 and np.allclose(got_probs, probs)
    assert search.load_out_of_fold(restored.trials["b"]) is None
    search.HOOKS.pop("run-c", None)
