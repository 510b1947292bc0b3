"""The agent protocol: tagged stdout lines and exit codes (docs/AGENT_PROTOCOL.md).

Every trainkit command speaks this grammar so an agent can decide from stdout and
the exit code alone. scripts/lib/protocol.sh prints the same bytes for the same
message; tests/test_protocol.py holds the two to that.

    from trainkit.core import protocol
    protocol.section("TRAINING-CPU", "step 3/20")
    protocol.warning("no W&B key found", "export WANDB_API_KEY=... to log online")
    protocol.error("config not found: x.yaml", "pass --config configs/smoke.yaml")
"""

from __future__ import annotations

import enum
import os
import sys
from typing import TextIO

from trainkit.core.credentials import redact


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # environment, config or data is wrong: fix and re-run
    CRASH_LOOP = 2  # resumed crash_loop_limit (3) times without progress: a human must look
    DIVERGED = 3  # loss went NaN/inf: lower the learning rate or inspect the data
    CRASHED = 70  # unexpected exception mid-training: the supervisor resumes
    INTERRUPTED = 75  # SIGTERM/SIGINT/SIGHUP after saving a checkpoint: re-run to resume


GREEN, YELLOW, RED, RESET = "\033[32m", "\033[33m", "\033[31m", "\033[0m"
HINT_PREFIX = "  ↳ "
ERROR_PREFIX = "❌ ERROR: "


def colour_enabled(stream: TextIO | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _emit(text: str, colour: str | None = None, hint: str | None = None) -> None:
    out = sys.stdout
    text, hint = redact(text), hint and redact(hint)
    if colour and colour_enabled(out):
        text = f"{colour}{text}{RESET}"
    lines = [text]
    if hint:
        lines.append(HINT_PREFIX + hint)
    try:
        out.write("\n".join(lines) + "\n")
        out.flush()
    except BrokenPipeError:
        # Whoever read our stdout is gone (a closed terminal, a killed tee): the run itself
        # must go on, and status.json / events.jsonl still tell its story.
        sys.stdout = open(os.devnull, "w")


def section(tag: str, message: str = "") -> None:
    _emit(f"[{tag}] {message}".rstrip())


def success(message: str) -> None:
    _emit(f"✅ SUCCESS: {message}", GREEN)


def warning(message: str, hint: str | None = None) -> None:
    _emit(f"⚠️ WARNING: {message}", YELLOW, hint)


def error(message: str, hint: str | None = None) -> None:
    _emit(f"{ERROR_PREFIX}{message}", RED, hint)


def resume(step: int) -> None:
    _emit(f"⚠️ RESUME: Found checkpoint at step {step}. Resuming training.", YELLOW)


INTERRUPTED_BY_CTRL_C = 130  # the shell's status for a command ended by SIGINT


def run_command(main) -> int:
    """A script's main() with Ctrl-C as one ERROR line and exit 130, never a KeyboardInterrupt traceback (and
    never a SUCCESS as the last verdict of an interrupted command)."""
    try:
        return main()
    except KeyboardInterrupt:
        error("interrupted (Ctrl-C) before it finished: its checks and results are incomplete",
              "re-run the same command")
        return INTERRUPTED_BY_CTRL_C
