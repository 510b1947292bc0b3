"""Fault injection for the resilience tests: real failures at a chosen step.

    TRAINKIT_FAULT_CRASH_AT_STEP=5   raise at the end of step 5, before its checkpoint (exit 70);
                                     0 raises before the data is loaded, before the first step
    TRAINKIT_FAULT_NAN_AT_STEP=3     make step 3's loss NaN (divergence guard, exit 3)
    TRAINKIT_FAULT_INF_GRAD_AT_STEP=3  set one gradient of step 3 to inf after backward, the loss
                                     staying finite (gradient check, exit 3)
    TRAINKIT_FAULT_NAN_WEIGHTS_AT_STEP=4  after step 4's update, one trainable weight becomes NaN
                                     (the save check refuses to write it, exit 3)
    TRAINKIT_FAULT_STEP_DELAY=0.2    sleep after every step, so a test can signal mid-run
    TRAINKIT_FAULT_HANG_AT_STEP=3    hang for good at the end of step 3, signals ignored (a stuck collective)
    TRAINKIT_FAULT_HANG_BEFORE_FIRST_STEP=1  wait for good where the model loads, before the first step (a slow
                                     load, a Hub that never answers): signals are heard, as there
    TRAINKIT_FAULT_IGNORE_STOP=1     a trainer deaf to stop requests (SIGTERM/SIGINT/SIGHUP ignored): the
                                     supervisor's stop grace ends it with SIGKILL
    TRAINKIT_FAULT_SIGNAL_IN_EVAL=SIGTERM  this process gets the signal while it evaluates (between two
                                     batches of the first evaluation): a stop that arrives mid-evaluation
    TRAINKIT_FAULT_KILL_IN_SAVE_AT_STEP=4  SIGKILL this process while it writes checkpoint-4, after the
                                     weights and optimizer, before its RNG state (a rank lost mid-save)
    TRAINKIT_FAULT_ENOSPC_AT_SAVE=6  the save of checkpoint-6 fails with ENOSPC after writing part of it (the
                                     adapter and optimizer, not yet its RNG and trainer state): a disk that fills
    TRAINKIT_FAULT_OOM_AT_STEP=4     step 4 raises the platform's out-of-memory error (torch.OutOfMemoryError with
                                     CUDA's, MPS's or the CPU allocator's text; MLX's Metal allocation failure)
    TRAINKIT_FAULT_DISK_FREE_BYTES=N the free space the run sees before each save (trainkit.train.out_of_room)
    TRAINKIT_FAULT_ONCE=/tmp/marker  the crash or hang fires only while this file is absent, and creates it
    TRAINKIT_FAULT_RANK=1            under torchrun, inject the faults above on this rank only
    TRAINKIT_FAULT_STATUS_WRITE_ERROR=1  every status.json/events.jsonl write fails with ENOSPC (trainkit.core.status);
                                     from_step:N only those from step N on

Unset in production; the code paths they reach are the production ones.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


class InjectedCrash(RuntimeError):
    pass


def _env_number(name: str, kind):
    value = os.environ.get(name)
    return kind(value) if value else None


@dataclass(frozen=True)
class Faults:
    crash_at_step: int | None = None
    nan_at_step: int | None = None
    inf_grad_at_step: int | None = None
    nan_weights_at_step: int | None = None
    step_delay: float | None = None
    once_marker: str | None = None
    hang_at_step: int | None = None
    kill_in_save_at_step: int | None = None
    enospc_at_save: int | None = None
    hang_before_first_step: bool = False
    signal_in_eval: str | None = None
    ignore_stop: bool = False
    oom_at_step: int | None = None

    @classmethod
    def from_env(cls) -> Faults:
        rank = os.environ.get("TRAINKIT_FAULT_RANK")
        if rank and rank != os.environ.get("RANK", "0"):
            return cls()
        return cls(
            crash_at_step=_env_number("TRAINKIT_FAULT_CRASH_AT_STEP", int),
            nan_at_step=_env_number("TRAINKIT_FAULT_NAN_AT_STEP", int),
            inf_grad_at_step=_env_number("TRAINKIT_FAULT_INF_GRAD_AT_STEP", int),
            nan_weights_at_step=_env_number("TRAINKIT_FAULT_NAN_WEIGHTS_AT_STEP", int),
            step_delay=_env_number("TRAINKIT_FAULT_STEP_DELAY", float),
            once_marker=os.environ.get("TRAINKIT_FAULT_ONCE") or None,
            hang_at_step=_env_number("TRAINKIT_FAULT_HANG_AT_STEP", int),
            kill_in_save_at_step=_env_number("TRAINKIT_FAULT_KILL_IN_SAVE_AT_STEP", int),
            enospc_at_save=_env_number("TRAINKIT_FAULT_ENOSPC_AT_SAVE", int),
            hang_before_first_step=bool(os.environ.get("TRAINKIT_FAULT_HANG_BEFORE_FIRST_STEP")),
            signal_in_eval=os.environ.get("TRAINKIT_FAULT_SIGNAL_IN_EVAL") or None,
            ignore_stop=bool(os.environ.get("TRAINKIT_FAULT_IGNORE_STOP")),
            oom_at_step=_env_number("TRAINKIT_FAULT_OOM_AT_STEP", int),
        )

    def crash_now(self, step: int) -> bool:
        return self.crash_at_step == step and self._fire_once()

    def hang_if_due(self, step: int) -> None:
        if self.hang_at_step != step or not self._fire_once():
            return
        import signal
        import time

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        while True:
            time.sleep(60)

    def hang_before_first_step_if_set(self) -> None:
        if not self.hang_before_first_step:
            return
        import time

        while True:
            time.sleep(1)

    def signal_if_evaluating(self) -> None:
        name = self.signal_in_eval
        if name and self._fire_once():
            import signal

            object.__setattr__(self, "signal_in_eval", None)  # once per process, as a person's Ctrl-C
            os.kill(os.getpid(), getattr(signal, name))

    def ignore_stop_if_set(self) -> None:
        if not self.ignore_stop:
            return
        import signal

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)

    def kill_if_saving_at(self, step: int) -> None:
        if self.kill_in_save_at_step == step and self._fire_once():
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    def fail_save_if_due(self, step: int, next_file) -> None:
        """Part of checkpoint-STEP is written: writing NEXT_FILE finds the disk full."""
        if self.enospc_at_save == step and self._fire_once():
            import errno

            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(next_file))

    def oom_if_due(self, step: int, device: str) -> None:
        """The error the platform raises when step STEP's activations do not fit."""
        if self.oom_at_step != step or not self._fire_once():
            return
        if device == "mlx":
            raise RuntimeError("[metal::malloc] Unable to allocate 8589934592 bytes.")
        import torch

        text = {"cuda": "CUDA out of memory. Tried to allocate 8.00 GiB. GPU 0 has a total capacity of 79.19 GiB",
                "mps": "MPS backend out of memory (MPS allocated: 17.80 GB, other allocations: 1.20 GB, max allowed: "
                       "18.13 GB). Tried to allocate 2.00 GB on private pool."}
        raise torch.OutOfMemoryError(text.get(device, "DefaultCPUAllocator: can't allocate memory: you tried to "
                                                      "allocate 8589934592 bytes."))

    def _fire_once(self) -> bool:
        if self.once_marker:
            marker = Path(self.once_marker)
            if marker.exists():
                return False
            marker.touch()
        return True


def poison_gradient(model) -> None:
    """One element of the first trainable gradient becomes inf, as a bf16 overflow would leave it."""
    for param in model.parameters():
        if param.requires_grad and param.grad is not None:
            param.grad.view(-1)[0] = float("inf")
            return


def poison_weights(model) -> None:
    """One element of the first trainable weight becomes NaN, as an update from NaN gradients would leave it
    (a torch model, or backend: mlx's mlx-lm model)."""
    if type(model).__module__.startswith("mlx_lm."):
        import mlx.core as mx
        from mlx.utils import tree_flatten

        name, value = tree_flatten(model.trainable_parameters())[0]
        flat = value.reshape(-1)
        poisoned = mx.concatenate([mx.array([math.nan], dtype=value.dtype), flat[1:]]).reshape(value.shape)
        model.load_weights([(name, poisoned)], strict=False)
        return
    import torch

    for param in model.parameters():
        if param.requires_grad:
            with torch.no_grad():
                param.view(-1)[0] = float("nan")
            return
