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
