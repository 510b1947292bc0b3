"""Turn SIGTERM/SIGINT/SIGHUP into "save a checkpoint at the end of this step, then exit 75".

No library installs a handler: SIGTERM kills at once and SIGINT raises
KeyboardInterrupt wherever Python happens to be, mid-save included. The handler
only raises a flag; `TrainkitCallback.on_step_end` turns it into should_save +
should_training_stop (setting those from the handler is racy: on_step_begin resets
them). A second signal means "now": the default action runs, and the next start
skips whatever half-written checkpoint that leaves.
"""

from __future__ import annotations

import os
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopRequest:
    def __init__(self):
        self.signum: int | None = None
        self.from_other_rank = False
        self.announced = False

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
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum


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
