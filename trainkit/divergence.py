"""When a loss means the run has diverged: NaN/inf always, a spike when asked for."""

from __future__ import annotations

import math

# Micro-batches before the running average is trusted: early losses fall fast and vary.
SPIKE_WARMUP = 20
SPIKE_SMOOTHING = 0.1


class LossDiverged(Exception):
    def __init__(self, step: int, loss: float, detail: str):
        super().__init__(f"{detail} at step {step}")
        self.step = step
        self.loss = loss
        self.detail = detail


class DivergenceGuard:
    """Watches every micro-batch loss; `spike_factor` > 0 also stops on loss > factor × running average."""

    def __init__(self, spike_factor: float = 0.0):
        self.spike_factor = spike_factor
        self.average: float | None = None
        self.seen = 0

    def observe(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise LossDiverged(step, loss, f"loss became {loss}")
        if self.spike_factor > 0 and self.average and self.seen >= SPIKE_WARMUP:
            if loss > self.spike_factor * self.average:
                raise LossDiverged(
                    step, loss, f"loss {loss:.4g} is {loss / self.average:.1f}x its running average {self.average:.4g}"
                )
        self.average = loss if self.average is None else (1 - SPIKE_SMOOTHING) * self.average + SPIKE_SMOOTHING * loss
        self.seen += 1
