"""Named starting points for scripts/suggest_config.py: what a person means by "beginner" or "fast".

A preset holds two kinds of value. `intent` steers the suggestion (how many epochs, how large an
effective batch, how often to checkpoint, how bold a learning rate); `keys` are config values the
preset fixes outright. Keys layer over the suggestion and under the user:

    command line (--set KEY=VALUE) > config file (--config) > preset keys > suggestion > TRL defaults
"""

from __future__ import annotations

from dataclasses import dataclass, field

ATTENTION_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    epochs: float
    effective_batch: int
    checkpoints_per_run: int  # how many times a run saves, spread over max_steps
    lr_scale: float  # times the suggested learning rate
    keys: dict = field(default_factory=dict)


PRESETS = {
    "beginner": Preset(
        "beginner",
        "a first run: two epochs, a cautious learning rate, frequent checkpoints, a loss-spike stop",
        epochs=2, effective_batch=16, checkpoints_per_run=10, lr_scale=0.5,
        keys={"loss_spike_factor": 3.0, "save_total_limit": 5},
    ),
    "balanced": Preset(
        "balanced",
        "the usual: three epochs, all seven projections adapted, rank 16",
        epochs=3, effective_batch=16, checkpoints_per_run=6, lr_scale=1.0,
    ),
    "fast": Preset(
        "fast",
        "a quick pass: one epoch, rank 8 on the attention projections only",
        epochs=1, effective_batch=32, checkpoints_per_run=3, lr_scale=1.0,
        keys={"lora_r": 8, "lora_alpha": 16, "lora_target_modules": ATTENTION_TARGETS},
    ),
}
DEFAULT_PRESET = "balanced"


def get(name: str | None) -> Preset:
    return PRESETS[name or DEFAULT_PRESET]
