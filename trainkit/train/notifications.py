"""What train.py posts to TRAINKIT_NOTIFY_URL (trainkit.core.notify) and to W&B alerts, and when.

    announce("completed", status, "adapter saved to outputs/x/final", exit_code=0)

train.py sends what only it sees: `started` (the first step of a launch's first attempt), `eval` (the
headline tool-call figures), `slow` (trainkit.train.throughput), and the verdicts it ends with:
EXIT_EVENTS. The supervisor (scripts/supervise.sh through runctl) sends `restarting`, `stalled` and
`gave_up`, which train.py cannot see. Only the main process sends, so an event goes out once, not once
per rank. With W&B on, the same events become `wandb.alert`s (a level, and a wait between repeats).
"""

from __future__ import annotations

import sys

from trainkit.core import notify
from trainkit.core.status import RunStatus, is_main_process

EXIT_EVENTS = {0: "completed", 1: "input_error", 2: "crash_loop", 3: "diverged", 75: "interrupted"}
ALERT_LEVELS = {"crash_loop": "ERROR", "diverged": "ERROR", "input_error": "ERROR", "gave_up": "ERROR",
                "stalled": "WARN", "slow": "WARN", "disk_low": "WARN", "interrupted": "WARN", "restarting": "WARN"}
ALERT_WAIT_SECONDS = 300  # W&B drops a repeat of the same alert title within this


def announce(event: str, status: RunStatus | None, message: str, exit_code: int | None = None, **extra) -> None:
    if status is None or not status.enabled or not is_main_process():
        return
    snapshot = dict(status.data)
    notify.notify(event, status.output_dir, message=message, exit_code=exit_code, status=snapshot, **extra)
    wandb_alert(event, message, snapshot)


def announce_exit(code: int, status: RunStatus | None, message: str) -> None:
    event = EXIT_EVENTS.get(int(code))
    if event:
        announce(event, status, message, exit_code=int(code))


def wandb_alert(event: str, message: str, status: dict) -> None:
    """The event as a W&B alert on the live run, when W&B is on; never raises."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None or not notify.wanted(event, status):
        return
    try:
        run.alert(title=f"trainkit: {event}", text=message, level=ALERT_LEVELS.get(event, "INFO"),
                  wait_duration=ALERT_WAIT_SECONDS)
    except Exception:  # an offline run, an old wandb: the webhook and the log still say it
        pass
