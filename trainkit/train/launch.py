"""train.py's first act: claim the output dir (the lock) and say so in status.json.

Before any heavy import, train.py finds its output_dir from the command line or the YAML,
takes the lock (trainkit.core.lock.RunLock) and writes status.json `starting` with its pid, the
pid's start time, the launch id and the attempt. From then on status.json describes this
process; the launch watch and the status command tell it from an older run's by those.
A start refused because another trainer holds the lock writes nothing, and so does an input
error in an output dir this start created. In an existing one, a start refused before it touched the
run (before the resume metadata records a start) puts status.json back as the last real run left it
and adds a `refused` event: the refusal is the command's own output and exit code, not the run's state.

    TRAINKIT_LAUNCH_ID   set once per scripts/train.sh launch; kept by the supervisor's relaunches
    TRAINKIT_ATTEMPT     the supervisor's attempt number within the launch (1, 2, …)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from trainkit.core import lock
from trainkit.core.errors import TrainkitError
from trainkit.core.protocol import ExitCode
from trainkit.core.status import STATUS_FILE, RunStatus, epoch_of, is_main_process, read_json

ATTEMPT_ENV = "TRAINKIT_ATTEMPT"


class OutputDirLocked(TrainkitError):
    """Another live process trains this output dir."""


def argv_value(argv: list[str], flag: str) -> str | None:
    """The last value given for `flag` (as `--flag V` or `--flag=V`), as the parser will see it."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def early_value(argv: list[str], key: str) -> str | None:
    """KEY from the command line, else from the YAML, before the config is parsed; None when neither names it."""
    value = argv_value(argv, f"--{key}")
    if value is None:
        config = argv_value(argv, "--config")
        if config and Path(config).is_file():
            try:
                import yaml

                values = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
            except (OSError, ValueError, ImportError, yaml.YAMLError):
                values = None
            if isinstance(values, dict) and isinstance(values.get(key), str):
                value = values[key]
    return value


def early_output_dir(argv: list[str]) -> Path | None:
    """output_dir from the command line, else from the YAML; None when neither names one."""
    value = early_value(argv, "output_dir")
    return Path(value) if value else None


class Claim:
    """The lock and the status this process holds for one output dir."""

    def __init__(self):
        self.run_lock: lock.RunLock | None = None
        self.status: RunStatus | None = None
        self.previous_resumes = 0
        self.created = False
        self.previous_bytes: bytes | None = None  # status.json as the last run left it
        self.touched_run = False  # set once this start records itself in the run's resume metadata

    @property
    def output_dir(self) -> Path | None:
        return self.status.output_dir if self.status else None

    def take(self, output_dir: Path) -> RunStatus:
        """Lock `output_dir` (rank 0) and write `starting`; raises OutputDirLocked when another trainer has it."""
        output_dir = Path(output_dir)
        if self.status and self.output_dir.resolve() == output_dir.resolve():
            return self.status
        main = is_main_process()
        self.created = not output_dir.exists()
        if main:
            try:
                taken = lock.RunLock.acquire(output_dir, role="trainer", session=os.environ.get("TRAINKIT_SESSION", ""),
                                             log=os.environ.get("TRAINKIT_LOG_FILE", ""))
            except lock.LockHeld as held:
                raise OutputDirLocked(*lock.refusal(output_dir, held.info)) from None
            except OSError as exc:
                # Say it the way the preflight does (trainkit.preflight.storage): the same dir, the same words.
                from trainkit.core.report import Report
                from trainkit.preflight.storage import check_writable_dir

                report = Report("PREFLIGHT")
                if not check_writable_dir(output_dir, "output_dir", report):
                    raise TrainkitError(report.errors[0].message, report.errors[0].hint) from None
                raise TrainkitError(f"cannot create the lock in {output_dir}: {exc.strerror or exc}",
                                    "check that output_dir is writable, or pick another --output_dir") from None
            self.release()
            self.run_lock = taken
        try:
            self.previous_bytes = (output_dir / STATUS_FILE).read_bytes()
        except OSError:
            self.previous_bytes = None
        previous = read_json(output_dir / STATUS_FILE) or {}
        if previous.get("launch_id") is not None and isinstance(previous.get("resume_count"), int):
            self.previous_resumes = previous["resume_count"]
        # A relaunch shows where the run is, not a reset: the last known step and length, and the run's clock.
        carried = {k: previous[k] for k in ("step", "max_steps") if isinstance(previous.get(k), int)}
        self.status = RunStatus(
            output_dir, enabled=main, run_started=epoch_of(previous.get("run_started_at")), **carried,
            pid_start=lock.process_start_time(os.getpid()),
            launch_id=os.environ.get(lock.LAUNCH_ID_ENV) or f"manual-{uuid.uuid4().hex[:12]}",
            attempt=int(os.environ.get(ATTEMPT_ENV, "1") or 1),
            resume_count=self.previous_resumes,
            last_progress_at=None,
        )
        self.status.previous = previous  # what an older run recorded: an already-complete start keeps its figures
        self.status.update(state="starting")
        return self.status

    def undo_if_fresh(self, exit_code: int) -> bool:
        """After an input error (exit 1) in an output dir this start created, before it touched the run (a
        full disk or an out-of-memory step mid-run is that run's verdict), leave nothing behind."""
        if exit_code != ExitCode.ERROR or not self.created or self.status is None or self.touched_run:
            return False
        out = self.output_dir
        self.release()
        if not is_main_process():
            return True
        for name in (STATUS_FILE, lock.LOCK_FILE):
            (out / name).unlink(missing_ok=True)
        try:
            out.rmdir()
        except OSError:
            pass
        return True

    def undo_refused(self, exit_code: int, message: str, event: str = "refused") -> bool:
        """After an input error (exit 1), or a stop (75), before this start touched the run: status.json as it
        was, plus a `refused` (or EVENT) event. True when it did so (the caller then records nothing else)."""
        if exit_code not in (ExitCode.ERROR, ExitCode.INTERRUPTED) or self.touched_run or self.status is None \
                or self.created:
            return False
        if not is_main_process():
            return True
        path = self.output_dir / STATUS_FILE
        try:
            if self.previous_bytes is None:
                path.unlink(missing_ok=True)
            else:
                tmp = path.with_name(path.name + ".restore")
                tmp.write_bytes(self.previous_bytes)
                os.replace(tmp, path)
        except OSError:
            return False
        self.status.event(event, message=message, launch_id=self.status.data.get("launch_id"))
        return True

    def release(self) -> None:
        if self.run_lock:
            self.run_lock.release()
            self.run_lock = None
