"""The divergence guard's verdicts on a stream of micro-batch losses."""

from __future__ import annotations

import math

import pytest

from trainkit.divergence import SPIKE_WARMUP, DivergenceGuard, LossDiverged


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
