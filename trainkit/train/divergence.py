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


class WeightsNotFinite(LossDiverged):
    """Trainable weights hold NaN/inf: nothing may be saved from them."""

    def __init__(self, step: int, names: list[str]):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        super().__init__(step, math.nan, f"trainable weights became non-finite ({shown})")
        self.names = names


def trainable(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def gradient_norm(model) -> float:
    """L2 norm of the trainable parameters' gradients, as the optimizer is about to see them."""
    import torch

    grads = [p.grad.detach() for p in trainable(model) if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    return float(torch.linalg.vector_norm(norms))


def non_finite_parameters(model) -> list[str]:
    """Names of trainable parameters holding a NaN or inf in this process; empty when all are finite.

    Under FSDP a parameter is a DTensor and this process holds one shard of it: the shard is what is checked
    (DTensor refuses .tolist()), and the callers agree on the verdict across ranks.
    """
    import torch

    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        return []
    local = [p.to_local() if hasattr(p, "to_local") else p for _, p in named]
    finite = torch.stack([torch.isfinite(p.detach()).all() for p in local]).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]
