"""`train.py --more_steps N`: continue a finished run for N more optimizer steps.

The run resumes from the checkpoint at its final step, with the optimizer state, the data
position and the RNG state as they were. Its cosine schedule had decayed to (almost) zero by
then, and stretching it over the new total would jump the learning rate back up mid-curve, so
the extra steps get a schedule of their own: a new segment that warms up linearly from zero to
learning_rate over warmup_steps (at most a tenth of N), then decays with a cosine to zero at
the new last step. Lower the peak with --learning_rate when the first run already converged.

The continuation is recorded in resume_metadata.json ("continuation": from_step, more_steps,
max_steps), so a crash and the same command again resume the same segment instead of adding N
once more; once that segment completes, the same command continues by N again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from trainkit.core.errors import ConfigError
from trainkit.core.status import read_json, write_json_atomic
from trainkit.train.resume import METADATA_FILE, read_metadata

FINAL_DIR = "final"
SCHEDULE = "new segment: linear warmup from 0 to learning_rate, then cosine to 0 at the new max_steps"


@dataclass(frozen=True)
class Continuation:
    from_step: int
    more_steps: int
    warmup_steps: int

    @property
    def max_steps(self) -> int:
        return self.from_step + self.more_steps

    def as_dict(self) -> dict:
        return {"from_step": self.from_step, "more_steps": self.more_steps, "max_steps": self.max_steps,
                "warmup_steps": self.warmup_steps, "lr_schedule": SCHEDULE}

    def factor(self, step: int) -> float:
        """The learning-rate multiplier LambdaLR applies after `step` scheduler steps."""
        done = step - self.from_step
        if done < 0:
            return 0.0
        if done < self.warmup_steps:
            return (done + 1) / (self.warmup_steps + 1)
        span = max(1, self.more_steps - self.warmup_steps)
        progress = min(1.0, (done - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def plan(output_dir: Path, more_steps: int, warmup_steps: int) -> Continuation:
    """The segment to train: from the finished run's final step, or the one a crashed continuation began."""
    if more_steps < 1:
        raise ConfigError(f"more_steps must be at least 1, not {more_steps}", "e.g. --more_steps 500")
    final = read_json(output_dir / FINAL_DIR / "trainer_state.json")
    metadata = read_metadata(output_dir) or {}
    started = metadata.get("continuation") or {}
    if final is None:
        raise ConfigError(f"--more_steps continues a finished run, and {output_dir} has no final/ adapter yet",
                          "re-run without --more_steps to resume it, or raise max_steps instead")
    step = int(final.get("global_step", 0))
    warmup = max(0, min(warmup_steps, more_steps // 10))
    if started.get("from_step") == step and started.get("more_steps") == more_steps:
        return Continuation(step, more_steps, int(started.get("warmup_steps", warmup)))
    return Continuation(step, more_steps, warmup)


def record(output_dir: Path, continuation: Continuation) -> None:
    metadata = read_metadata(output_dir) or {}
    metadata["continuation"] = continuation.as_dict()
    write_json_atomic(output_dir / METADATA_FILE, metadata)


def start_segment(optimizer, scheduler, continuation: Continuation) -> None:
    """Set the learning rate of the first step of the segment, after a resume restored the old one."""
    lrs = [base * continuation.factor(scheduler.last_epoch) for base in scheduler.base_lrs]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs


def segment_scheduler(optimizer, continuation: Continuation):
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, continuation.factor)


def apply(config) -> Continuation | None:
    """With --more_steps: plan the segment and raise max_steps to its end (before the finished-run check)."""
    more = getattr(config.trainkit, "more_steps", 0)
    if not more:
        return None
    warmup = config.sft.warmup_steps or 0
    warmup = round(warmup * more) if 0 < warmup < 1 else int(warmup)
    continuation = plan(config.output_dir, more, warmup)
    config.sft.max_steps = continuation.max_steps
    return continuation


def begin(output_dir: Path, continuation: Continuation, newest, status) -> None:
    """Check the checkpoint the segment starts from, record it, and say what happens to the schedule."""
    from trainkit.core import protocol

    if newest is None or newest.step < continuation.from_step:
        have = f"the newest is {newest.path.name}" if newest else "there is none"
        raise ConfigError(f"--more_steps needs the checkpoint of the final step {continuation.from_step} "
                          f"(with its optimizer and scheduler state), and {have}",
                          "continue from that checkpoint by raising max_steps instead, or start a new run")
    record(output_dir, continuation)
    status.update(continuation=continuation.as_dict())
    status.event("continue", from_step=continuation.from_step, max_steps=continuation.max_steps,
                 lr_schedule=SCHEDULE)
    protocol.section("CONTINUE", f"steps {continuation.from_step} -> {continuation.max_steps} "
                                 f"(+{continuation.more_steps}); learning rate: {SCHEDULE} "
                                 f"(warmup {continuation.warmup_steps} steps)")
