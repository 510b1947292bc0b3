"""The divergence guard's verdicts on a stream of micro-batch losses."""

from __future__ import annotations

import math

import pytest

from trainkit.train.divergence import SPIKE_WARMUP, DivergenceGuard, LossDiverged


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_always_stops_the_run(bad):
    guard = DivergenceGuard()
    guard.observe(1, 2.5)
    with pytest.raises(LossDiverged, match=f"loss became {bad} at step 2"):
        guard.observe(2, bad)


def test_spikes_are_ignored_unless_a_factor_is_set():
    guard = DivergenceGuard()
    for step in range(1, 40):
        guard.observe(step, 2.0)
    guard.observe(40, 1000.0)


def test_a_loss_far_above_its_running_average_stops_the_run_when_asked():
    guard = DivergenceGuard(spike_factor=3.0)
    for step in range(1, SPIKE_WARMUP + 1):
        guard.observe(step, 2.0)
    guard.observe(SPIKE_WARMUP + 1, 5.9)
    with pytest.raises(LossDiverged, match=r"loss 20 is \d+\.\dx its running average"):
        guard.observe(SPIKE_WARMUP + 2, 20.0)


def test_early_losses_never_count_as_spikes():
    guard = DivergenceGuard(spike_factor=1.5)
    for step, loss in enumerate([1.0] + [9.0] * (SPIKE_WARMUP - 1), start=1):
        guard.observe(step, loss)


def nan_model():
    import torch

    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    return model


def test_non_finite_trainable_weights_are_named():
    from trainkit.train.divergence import non_finite_parameters

    assert non_finite_parameters(nan_model()) == ["weight"]
    frozen = nan_model()
    frozen.weight.requires_grad_(False)
    assert non_finite_parameters(frozen) == []


def test_an_infinite_gradient_stops_the_step_before_the_optimizer_applies_it():
    from types import SimpleNamespace

    import torch

    from trainkit.train.trainer import FiniteGradientCheck

    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    check = FiniteGradientCheck()
    state = SimpleNamespace(global_step=6)
    check.on_pre_optimizer_step(None, state, None, model=model)
    model.weight.grad[0, 0] = math.inf
    with pytest.raises(LossDiverged, match=r"gradients became non-finite \(norm inf\)") as err:
        check.on_pre_optimizer_step(None, state, None, model=model)
    assert err.value.step == 7


def test_the_last_good_state_is_not_saved_when_the_weights_are_not_finite(tmp_path):
    from types import SimpleNamespace

    from trainkit.train.trainer import save_last_good

    def must_not_save(*args, **kwargs):
        raise AssertionError("a checkpoint with NaN weights was written")

    trainer = SimpleNamespace(state=SimpleNamespace(global_step=3), args=SimpleNamespace(output_dir=str(tmp_path)),
                              model=nan_model(), _save_checkpoint=must_not_save)
    assert save_last_good(trainer) == (None, "the weights are no longer finite, so no checkpoint was saved")
    assert not (tmp_path / "checkpoint-3").exists()
