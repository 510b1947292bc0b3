"""Expected failures: each carries the ERROR text, what to do next, and its exit code."""

from __future__ import annotations

from trainkit.protocol import ExitCode


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
