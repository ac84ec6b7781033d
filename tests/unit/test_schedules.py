import math

import pytest
import torch

from training.hyperparams import Hyperparameters
from training.schedules import EpochSchedule

pytestmark = pytest.mark.filterwarnings("ignore:Detected call of")

LR0 = 0.1


def lrs(epochs=10, val_losses=None, **hp):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    s = EpochSchedule(opt, Hyperparameters(**hp), epochs, LR0)
    out = []
    for t in range(epochs):
        out.append(s.lr)
        s.step(val_losses[t] if val_losses else 1.0)
    return out


def close(a, b):
    assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_step():
    close(lrs(schedule="step", step_size=3, gamma=0.5), [LR0 * 0.5 ** (t // 3) for t in range(10)])


def test_multistep():
    close(
        lrs(schedule="multistep", milestones=[2, 5], gamma=0.1),
        [LR0 * 0.1 ** sum(t >= m for m in (2, 5)) for t in range(10)],
    )


def test_exponential():
    close(lrs(schedule="exponential", gamma=0.8), [LR0 * 0.8**t for t in range(10)])


def test_cosine():
    lo, T = 0.001, 10
    close(
        lrs(schedule="cosine", lr_min=lo, t_max=T),
        [lo + 0.5 * (LR0 - lo) * (1 + math.cos(math.pi * t / T)) for t in range(10)],
    )


def test_cyclical_triangular():
    lo, m = 0.01, 3
    expected = [
        lo + (LR0 - lo) * max(0.0, 1 - abs(t / m - 2 * math.floor(t / (2 * m)) - 1))
        for t in range(10)
    ]
    close(lrs(schedule="cyclical", lr_min=lo, cycle_half=m), expected)


def test_onecycle_peaks_at_lr0_and_anneals():
    seq = lrs(schedule="onecycle", epochs=10)
    assert max(seq) == pytest.approx(LR0) and seq[0] < LR0 / 10 and seq[-1] < seq[0]


def test_none_is_constant():
    assert lrs(schedule="none") == [LR0] * 10


def test_plateau_reduces_after_patience():
    seq = lrs(
        schedule="plateau",
        factor=0.1,
        plateau_patience=2,
        val_losses=[1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
    )
    # best at t=1; t=2,3 are the patience; the reduction shows from t=5
    close(seq, [LR0] * 5 + [LR0 * 0.1] * 3 + [LR0 * 0.01] * 2)


def test_warmup_then_schedule_from_lr0():
    seq = lrs(schedule="exponential", gamma=0.5, warmup_epochs=3)
    close(seq[:3], [LR0 * (t + 1) / 4 for t in range(3)])
    close(seq[3:], [LR0 * 0.5**t for t in range(7)])


def test_state_dict_round_trip_continues_the_sequence():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    hp = Hyperparameters(schedule="cosine", lr_min=0.0, t_max=8, warmup_epochs=2)
    a = EpochSchedule(opt, hp, 10, LR0)
    for _ in range(4):
        a.step()
    state, lr = a.state_dict(), a.lr
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    b = EpochSchedule(opt2, hp, 10, LR0)
    opt2.param_groups[0]["lr"] = lr
    b.load_state_dict(state)
    a.step()
    b.step()
    assert a.lr == pytest.approx(b.lr)
