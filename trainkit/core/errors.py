"""Expected failures: each carries the ERROR text, what to do next, and its exit code; and the crash log
that keeps the traceback of an unexpected one off the screen."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

from trainkit.core.credentials import redact
from trainkit.core.protocol import ExitCode
from trainkit.core.status import now_iso


class TrainkitError(Exception):
    """A failure we foresaw: printed as one ERROR line plus a hint, never a traceback."""

    exit_code = ExitCode.ERROR
    state = "failed"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(TrainkitError):
    """The config file or a command-line override is wrong."""


class DataError(TrainkitError):
    """A data file is missing, empty or unreadable."""


class CrashLoop(TrainkitError):
    exit_code = ExitCode.CRASH_LOOP
    state = "crash_loop"


class Diverged(TrainkitError):
    exit_code = ExitCode.DIVERGED
    state = "diverged"


def log_traceback(path: Path, context: str) -> bool:
    """Append the exception being handled, credentials redacted, to the run's log file; False when the log
    cannot be written (a full disk): the caller's verdict must still reach the screen."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(redact(f"\n=== {now_iso()} pid {os.getpid()}: {context}\n{traceback.format_exc()}"))
    except OSError:
        return False
    return True
