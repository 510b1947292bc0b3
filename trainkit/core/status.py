"""The run's machine-readable twin of its stdout: status.json and events.jsonl.

status.json is the current state, rewritten atomically (write, fsync, rename) so a
reader never sees half a file; events.jsonl is append-only history. Both are
described by docs/status.schema.json and docs/events.schema.json.
"""

from __future__ import annotations

import errno
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from trainkit.core.credentials import redact_strings

STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"
SCHEMA_VERSION = 1
# Fault injection (see trainkit/train/faults.py): every status.json/events.jsonl write fails with ENOSPC
# (1), or those from step N on (from_step:N), as a disk that fills mid-run.
STATUS_WRITE_FAULT = "TRAINKIT_FAULT_STATUS_WRITE_ERROR"
# What status.json records; `stalled` and `dead` are decided by the status command from the
# processes (trainkit.supervise.supervision), and `restarting` is written by the supervisor.
STATES = ("starting", "running", "restarting", "stalled", "dead", "completed", "interrupted", "failed",
          "crash_loop", "diverged")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def epoch_of(value) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp()
    except (TypeError, ValueError):
        return None


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_events(output_dir: Path) -> list[dict]:
    """Every JSON object in output_dir's events.jsonl, in order; a line being appended right now is skipped."""
    try:
        lines = (Path(output_dir) / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def last_event(output_dir: Path, kind: str) -> dict | None:
    """The newest events.jsonl line of this kind, or None."""
    return next((e for e in reversed(read_events(output_dir)) if e.get("event") == kind), None)


def is_main_process() -> bool:
    """Rank 0 under torchrun/accelerate, or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """Processes training together: torchrun's WORLD_SIZE, else what scripts/train.sh is about to launch."""
    for name in ("WORLD_SIZE", "TRAINKIT_WORLD_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


class RunStatus:
    """Owns status.json and events.jsonl for one output_dir."""

    def __init__(self, output_dir: Path, enabled: bool = True, run_started: float | None = None, **fields):
        """`run_started`: when the run began, for a relaunch the first launch's time (elapsed_seconds counts
        from it; launch_elapsed_seconds from this process's start)."""
        self.output_dir = output_dir
        self.enabled = enabled
        self.write_failed = False
        self.started = time.time()
        self.run_started = run_started or self.started
        self.data = {
            "schema_version": SCHEMA_VERSION,
            "state": "starting",
            "step": 0,
            "max_steps": None,
            "epoch": None,
            "loss": None,
            "learning_rate": None,
            "tokens_per_second": None,
            "elapsed_seconds": 0.0,
            "eta_seconds": None,
            "last_checkpoint": None,
            "resume_count": 0,
            "wandb_url": None,
            "exit_code": None,
            "message": None,
            "pid": os.getpid(),
            "output_dir": str(output_dir),
            "started_at": now_iso(),
            "run_started_at": iso(self.run_started),
            "updated_at": now_iso(),
            **fields,
        }

    def restart_run_clock(self) -> None:
        """This start trains the run from its beginning: the run's elapsed time starts now."""
        self.run_started = self.started
        self.data["run_started_at"] = iso(self.run_started)

    def update(self, **fields) -> None:
        self.data.update(fields)
        now = time.time()
        self.data["elapsed_seconds"] = round(now - self.run_started, 3)
        self.data["launch_elapsed_seconds"] = round(now - self.started, 3)
        self.data["updated_at"] = now_iso()
        if self.enabled:
            self._write(STATUS_FILE, lambda path: write_json_atomic(path, redact_strings(self.data)))

    def event(self, kind: str, **fields) -> None:
        if not self.enabled:
            return
        record = {"time": now_iso(), "event": kind, "step": self.data["step"], **fields}

        def append(path: Path) -> None:
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(redact_strings(record)) + "\n")

        self._write(EVENTS_FILE, append)

    def _write_fault(self) -> bool:
        """TRAINKIT_FAULT_STATUS_WRITE_ERROR: 1 fails every write, from_step:N those from step N on."""
        value = os.environ.get(STATUS_WRITE_FAULT, "")
        if value.startswith("from_step:"):
            return (self.data.get("step") or 0) >= int(value.split(":", 1)[1])
        return bool(value)

    def _write(self, name: str, write) -> None:
        """Telemetry must never stop training: a full disk or an I/O error here is one WARNING.

        Checkpoint writes are what a run depends on, and they fail loudly on their own;
        the next update tries again, so status.json catches up once space is freed.
        """
        path = self.output_dir / name
        try:
            if self._write_fault():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write(path)
        except OSError as exc:
            if self.write_failed:
                return
            self.write_failed = True
            from trainkit.core import protocol

            protocol.warning(f"cannot write {name} ({exc.strerror or exc}): training continues without "
                             "status updates", f"free space or fix {self.output_dir}; status.json catches up "
                             "at the next successful write")
