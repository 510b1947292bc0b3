"""Turn SIGTERM/SIGINT/SIGHUP into "save a checkpoint at the end of this step, then exit 75".

No library installs a handler: SIGTERM kills at once and SIGINT raises
KeyboardInterrupt wherever Python happens to be, mid-save included. Once training has
begun (`deferred`, set at the trainer's on_train_begin) the handler only raises a flag;
`TrainkitCallback.on_step_end` turns it into should_save + should_training_stop (setting
those from the handler is racy: on_step_begin resets them). Before that there is nothing to
save, and the phase may be long (the preflight, a model load, W&B, a Hub that never
answers): the handler raises StopBeforeStart at once. A second signal means "now": one line
says what was skipped and the process exits 75 without saving; the next start skips whatever
half-written checkpoint that leaves.
"""

from __future__ import annotations

import os
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopBeforeStart(BaseException):
    """A stop request before the first step: nothing to save, so the start ends now (exit 75).

    A BaseException, as KeyboardInterrupt is: no `except Exception` in a library may swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class EvaluationStopped(Exception):
    """A stop request during an evaluation: its figures are abandoned, the last finished step is saved (exit 75)."""


NOW_EXIT = 75  # a second stop request: interrupted, without the save


class StopRequest:
    def __init__(self):
        self.signum: int | None = None
        self.from_other_rank = False
        self.announced = False
        self.deferred = False  # training has begun: a stop waits for the step's end and its checkpoint

    @property
    def requested(self) -> bool:
        return self.signum is not None or self.from_other_rank

    @property
    def name(self) -> str:
        if self.signum:
            return signal.Signals(self.signum).name
        return "a stop request from another rank" if self.from_other_rank else ""

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            # Only os.write is safe here: print() could meet its own lock, held mid-line.
            os.write(1, (f"❌ ERROR: stopped at once by a second {signal.Signals(signum).name}: the checkpoint of "
                         "this step was not saved; re-run the same command to resume from the newest complete "
                         "checkpoint\n").encode())
            os._exit(NOW_EXIT)
        self.signum = signum
        if not self.deferred:
            raise StopBeforeStart(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def agree_across_ranks(local: bool) -> bool:
    """Under DDP every rank must stop at the same step, or the others hang in all_reduce."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return local
    import torch

    flag = torch.tensor([1 if local else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
