"""Checkpoint by wall-clock time as well as by steps, so a preemption loses at most that much GPU time.

    callback = TimedSaveCallback(minutes=15)   # save_every_minutes in the config; 0 turns it off

save_steps alone bounds the loss in steps, whose length depends on the model, the batch and the
machine: 500 steps are ~35 minutes of an H100 at the default config. LoRA checkpoints are small, so
saving every 15 minutes costs seconds.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

from trainkit.core.signals import agree_across_ranks


class TimedSaveCallback(TrainerCallback):
    """Sets should_save at the first step end at least `minutes` after the last save (or the start)."""

    def __init__(self, minutes: float, clock=time.monotonic):
        self.seconds = minutes * 60
        self.clock = clock
        self.last_save = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_save = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds <= 0 or self.last_save is None:
            return control
        # Every rank must take the same decision, or the ranks that save wait for the others forever.
        if agree_across_ranks(self.clock() - self.last_save >= self.seconds):
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last_save = self.clock()
