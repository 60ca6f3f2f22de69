"""The lr schedule of the recipe (dmha_modules/recipe/training.py)."""

import math

import pytest
import torch

from dmha_modules.recipe.training import WarmupCosineLR


def reference_rate(step, lr, epochs, warmup_epochs, final_ratio, steps_per_epoch):
    """Linear warm-up to ``lr`` over the warm-up steps, then half a cosine from ``lr`` to
    ``final_ratio * lr`` at the end of the run (written from the definition)."""
    warmup = warmup_epochs * steps_per_epoch
    if step <= warmup:
        return lr * step / warmup
    total = epochs * steps_per_epoch
    t = min(step - warmup, total - warmup) / (total - warmup)
    return final_ratio * lr + (1 - final_ratio) * lr * (1 + math.cos(math.pi * t)) / 2


def optimizer():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=123.0)


def test_rates_follow_warm_up_then_cosine():
    schedule = WarmupCosineLR(lr=3e-4, epochs=5, warmup_epochs=1, final_ratio=0.01)
    schedule.steps_per_epoch = 10
    opt = optimizer()
    for step in range(1, 61):
        schedule(opt)
        expected = reference_rate(step, 3e-4, 5, 1, 0.01, 10)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9)
    # Peak at the end of the warm-up, the floor from the planned end on.
    assert reference_rate(10, 3e-4, 5, 1, 0.01, 10) == pytest.approx(3e-4)
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-6)


def test_resumed_schedule_goes_on_where_it_stopped(tmp_path):
    first = WarmupCosineLR(lr=1e-3, epochs=4)
    first.steps_per_epoch = 7
    opt = optimizer()
    for _ in range(12):
        first(opt)
    first.save(tmp_path / "schedule.ckpt")
    resumed = WarmupCosineLR(lr=1e-3, epochs=4)
    resumed.load(tmp_path / "schedule.ckpt")
    resumed.steps_per_epoch = 7
    other = optimizer()
    first(opt)
    resumed(other)
    assert other.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert opt.param_groups[0]["lr"] == pytest.approx(reference_rate(13, 1e-3, 4, 1, 0.01, 7))


def test_schedule_needs_the_epoch_length():
    with pytest.raises(RuntimeError, match="steps_per_epoch"):
        WarmupCosineLR(lr=1e-3, epochs=4)(optimizer())
