"""What trainkit adds to every training step: tagged progress, status.json, stop requests."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from trainkit.core import protocol
from trainkit.core.notify import failed_urls_to_warn
from trainkit.core.signals import StopRequest, agree_across_ranks
from trainkit.core.status import RunStatus, now_iso
from trainkit.preflight.device_figures import device_figures
from trainkit.train.faults import Faults, InjectedCrash, poison_weights
from trainkit.train.notifications import announce
from trainkit.train.throughput import ThroughputWatch


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def memory_figures() -> dict:
    """Host RSS and, where there is one, accelerator memory, in bytes."""
    import psutil
    import torch

    figures = {"rss_bytes": psutil.Process().memory_info().rss}
    if torch.cuda.is_available():
        figures["device_allocated_bytes"] = torch.cuda.memory_allocated()
        figures["device_peak_bytes"] = torch.cuda.max_memory_allocated()
    elif torch.backends.mps.is_available():
        figures["device_allocated_bytes"] = torch.mps.current_allocated_memory()
    return figures


class TrainkitCallback(TrainerCallback):
    def __init__(self, status: RunStatus, stop: StopRequest, tag: str, faults: Faults, warn, verbose: bool = True,
                 estimate_after: int = 0):
        self.status = status
        self.warn = warn
        self.stop = stop
        self.tag = tag
        self.faults = faults
        self.verbose = verbose
        self.estimate_after = estimate_after
        self.t0 = None
        self.first_step = 0
        self.last_tokens = None
        self.throughput = ThroughputWatch()
        self.notify_warned: set[str] = set()
        self.interval_dirty = True  # the first interval of a start holds the startup

    def on_train_begin(self, args, state, control, **kwargs):
        # From here a stop waits for the end of the step and its checkpoint (trainkit.core.signals).
        self.stop.deferred = True
        self.t0 = time.time()
        self.first_step = state.global_step
        url = wandb_url()
        if url and self.verbose:
            protocol.section(self.tag, f"W&B run: {url}")
        self.status.update(state="running", step=state.global_step, max_steps=state.max_steps, wandb_url=url)
        self.status.event("train_begin", max_steps=state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.first_step + 1:
            import os

            import psutil

            # From process start (imports included) to the first optimizer step: what a user waits for.
            self.status.update(first_step_seconds=round(time.time() - psutil.Process().create_time(), 2))
            if int(os.environ.get("TRAINKIT_ATTEMPT", "1") or 1) <= 1:  # a relaunch already said `restarting`
                announce("started", self.status, f"training started: step {state.global_step}/{state.max_steps}"
                         + (f" (resumed from {self.first_step})" if self.first_step else ""))
        if self.estimate_after and state.global_step - self.first_step == self.estimate_after:
            self.print_estimate(state)
        if self.faults.step_delay:
            time.sleep(self.faults.step_delay)
        if self.faults.nan_weights_at_step == state.global_step:
            poison_weights(kwargs["model"])
        self.status.update(step=state.global_step, last_progress_at=now_iso())  # the stall watchdog's clock
        if self.faults.crash_now(state.global_step):
            raise InjectedCrash(f"injected crash at step {state.global_step}")
        self.faults.hang_if_due(state.global_step)
        if agree_across_ranks(self.stop.requested):
            # A rank that was not signalled itself must still end as interrupted, not completed.
            self.stop.from_other_rank = not self.stop.requested
            if not self.stop.announced:
                self.warn(f"received {self.stop.name}: saving a checkpoint at step {state.global_step}, then exiting")
                self.stop.announced = True
            control.should_save = True
            control.should_training_stop = True
        if state.global_step >= state.max_steps:
            # Trainer saves only on save_steps multiples; a checkpoint at the last step is what
            # lets a later, larger max_steps continue instead of redoing the tail.
            control.should_save = True
        return control

    def seconds_per_step(self, state, now: float) -> float | None:
        """Measured since this start (a resume's first steps count, the run before it does not)."""
        done = state.global_step - self.first_step
        return (now - self.t0) / done if done > 0 and self.t0 is not None else None

    def print_estimate(self, state) -> None:
        """One line a person can plan by: throughput measured on this machine, not a guess from the config."""
        now = time.time()
        per_step = self.seconds_per_step(state, now)
        left = max(state.max_steps - state.global_step, 0)
        remaining = per_step * left
        finish = time.strftime("%Y-%m-%d %H:%M", time.localtime(now + remaining))
        self.status.event("estimate", step=state.global_step, seconds_per_step=round(per_step, 3),
                          remaining_seconds=round(remaining, 1))
        if self.verbose:
            protocol.section(
                self.tag,
                f"time estimate after {state.global_step - self.first_step} steps: {per_step:.2f} s/step, "
                f"{format_duration(remaining)} to go for the remaining {left} steps (done around {finish})",
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "eval_loss" in logs:
            # The eval event itself, with the tool-call figures, comes from trainkit.train.eval_callback.
            self.status.update(eval_loss=logs["eval_loss"])
        if "loss" not in logs:
            return
        now = time.time()
        elapsed = now - (self.t0 or now)
        per_step = self.seconds_per_step(state, now)
        eta = (state.max_steps - state.global_step) * per_step if per_step is not None else None
        tokens_per_second = None
        interval_start = self.last_tokens[1] if self.last_tokens is not None else (self.t0 or now)
        if "num_tokens" in logs:
            if self.last_tokens is not None and now > self.last_tokens[1]:
                tokens_per_second = (logs["num_tokens"] - self.last_tokens[0]) / (now - self.last_tokens[1])
            elif elapsed > 0:
                tokens_per_second = logs["num_tokens"] / elapsed
            self.last_tokens = (logs["num_tokens"], now)
        slower = self.throughput.observe(tokens_per_second, since=interval_start, now=now,
                                         clean=not self.interval_dirty)
        self.interval_dirty = False
        if slower:
            self.status.event("slow", tokens_per_second=round(tokens_per_second, 1),
                              baseline_tokens_per_second=round(self.throughput.baseline, 1))
            announce("slow", self.status, f"{slower}: the machine is throttling or busy")
            self.warn(f"{slower}: the machine is throttling or busy",
                      "on a Mac: power adapter, lid open, Low Power Mode off, heavy apps closed (the thermal watch "
                      "says when it is heat); on a pod: nvidia-smi for clocks and other processes")
        self.status.update(
            step=state.global_step,
            max_steps=state.max_steps,
            epoch=round(state.epoch or 0.0, 4),
            loss=logs["loss"],
            learning_rate=logs.get("learning_rate"),
            tokens_per_second=round(tokens_per_second, 1) if tokens_per_second else None,
            eta_seconds=round(eta, 1) if eta is not None else None,
            memory=memory_figures(),
            gpu=device_figures(),
        )
        self.status.event("log", loss=logs["loss"], learning_rate=logs.get("learning_rate"))
        for failed in failed_urls_to_warn(self.status.output_dir, self.notify_warned) if self.status.enabled else []:
            self.warn(f"a notification to {failed['url']} failed ({failed['result']}); training goes on",
                      "check TRAINKIT_NOTIFY_URL (scripts/notify_test.py sends a test event); every delivery is in "
                      "events.jsonl as a notify event")
        if self.verbose:
            tps = f"{tokens_per_second:,.0f} tok/s" if tokens_per_second else "? tok/s"
            protocol.section(
                self.tag,
                f"step {state.global_step}/{state.max_steps} | loss {logs['loss']:.4f} | "
                f"lr {logs.get('learning_rate', 0):.2e} | {tps} | ETA {format_duration(eta)}",
            )

    def on_evaluate(self, args, state, control, **kwargs):
        self.interval_dirty = True  # its time is not training throughput

    def on_save(self, args, state, control, **kwargs):
        self.interval_dirty = True
        path = f"{args.output_dir}/checkpoint-{state.global_step}"
        self.status.update(last_checkpoint=path)
        self.status.event("checkpoint", path=path)
        if self.verbose:
            protocol.section(self.tag, f"checkpoint saved: {path}")


def wandb_url() -> str | None:
    import sys

    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    return getattr(run, "url", None) if run else None
