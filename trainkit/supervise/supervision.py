"""What a run is doing now, from status.json and from processes; and what its supervisor does next.

status.json says what the trainer last wrote; whether that is still true comes from the
processes: the lock's holder (trainkit.core.lock) and the trainer's pid (with its start time,
so a reused pid does not count). One function, `assess`, turns both into the run's state
and the exit code the status command ends with; the supervisor's and the launch watch's
decisions are here too, so that each rule lives in one place. Stdlib only.

    state        exit   meaning
    starting     0      train.py is up, before its first step
    running      0      training
    restarting   0      the supervisor waits before relaunching train.py (attempt, seconds left)
    completed    0      the adapter is in output_dir/final
    stalled      4      the trainer lives but made no step for stall_timeout_seconds
    dead         75     no live trainer and no live supervisor, and no verdict was written
    interrupted  75     stopped after saving a checkpoint: re-run to resume
    failed       its exit_code (70 crashed, 1 input error)
    crash_loop   2      resumed crash_loop_limit times without progress
    diverged     3      loss or gradients went NaN/inf
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from trainkit.core import lock
from trainkit.core.protocol import ExitCode
from trainkit.core.status import STATUS_FILE, read_json

STALLED_EXIT = 4
DEAD_EXIT = int(ExitCode.INTERRUPTED)
EXIT_OF_STATE = {
    "starting": 0, "running": 0, "restarting": 0, "completed": 0,
    "stalled": STALLED_EXIT, "dead": DEAD_EXIT, "interrupted": int(ExitCode.INTERRUPTED),
    "crash_loop": int(ExitCode.CRASH_LOOP), "diverged": int(ExitCode.DIVERGED),
}
LIVE_STATES = ("starting", "running")
# train.py's exit codes that are a verdict: the supervisor stops on them instead of relaunching.
FINAL_CODES = (ExitCode.OK, ExitCode.ERROR, ExitCode.CRASH_LOOP, ExitCode.DIVERGED, ExitCode.INTERRUPTED)
STATE_OF_FINAL_CODE = {int(ExitCode.ERROR): "failed", int(ExitCode.CRASH_LOOP): "crash_loop",
                       int(ExitCode.DIVERGED): "diverged", int(ExitCode.INTERRUPTED): "interrupted"}


def timestamp(value) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp()
    except (TypeError, ValueError):
        return None


def read_exit_record(output_dir: Path, node: int = 0) -> dict | None:
    """The supervisor's verdict file: its exit code, the launch it ended, and the file's mtime."""
    path = lock.exit_path(output_dir, node)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        mtime = path.stat().st_mtime
    except OSError:
        return None
    if not lines or not lines[0].strip().lstrip("-").isdigit():
        return None
    fields = lock.parse_info("\n".join(lines[1:]))
    return {"code": int(lines[0]), "launch_id": fields.get("launch_id", ""), "mtime": mtime}


def write_exit_record(output_dir: Path, code: int, launch_id: str, stopped_by: str = "", node: int = 0) -> None:
    """The supervisor's last word. When it ends during its own backoff (status.json still says
    `restarting`, which only it writes), status.json gets the verdict too; on a node other than 0
    status.json is left alone (in a shared output dir it is the run's, which node 0 reports)."""
    from trainkit.core.status import now_iso, write_json_atomic, write_text_atomic

    write_text_atomic(lock.exit_path(output_dir, node), f"{code}\nlaunch_id={launch_id}\n")
    if node:
        return
    path = output_dir / STATUS_FILE
    status = read_json(path)
    if isinstance(status, dict) and status.get("state") == "restarting":
        if code == ExitCode.INTERRUPTED:
            by = f"SIG{stopped_by}" if stopped_by else "a stop request"
            status.update(state="interrupted", message=f"interrupted by {by} while waiting to relaunch train.py")
        elif code == ExitCode.OK:
            # A node whose processes hold no rank 0 under torchrun: only the supervisor wrote here.
            status.update(state="completed", message="every process of this node completed (the supervisor's record)")
        else:
            status.update(state="failed", message=f"the supervisor gave up (exit {code})")
        status.update(exit_code=code, updated_at=now_iso())
        write_json_atomic(path, status)


@dataclass
class Observation:
    """Everything `assess` decides from, read once."""

    output_dir: Path
    status: dict | None = None
    problem: str = ""
    holder: dict | None = None  # the lock's live holder
    supervisor_alive: bool = False
    trainer_alive: bool = False
    exit_record: dict | None = None
    status_mtime: float | None = None
    now: float = field(default_factory=time.time)


def observe(output_dir: Path | str, now: float | None = None) -> Observation:
    output_dir = Path(output_dir)
    seen = Observation(output_dir, now=now if now is not None else time.time())
    path = output_dir / STATUS_FILE
    if path.exists():
        seen.status = read_json(path)
        if seen.status is None:
            seen.problem = "status.json is unreadable (not valid JSON)"
        elif not isinstance(seen.status, dict):
            seen.status, seen.problem = None, "status.json is not a JSON object"
        else:
            seen.status_mtime = path.stat().st_mtime
    seen.holder = lock.owner(output_dir)
    if seen.holder is not None and seen.holder.get("role") != "trainer":
        seen.supervisor_alive = lock.pid_alive(seen.holder.get("pid"), seen.holder.get("pid_start"))
    if seen.status:
        seen.trainer_alive = lock.pid_alive(seen.status.get("pid"), seen.status.get("pid_start"))
    seen.exit_record = read_exit_record(output_dir)
    return seen


def stall_seconds(status: dict, now: float) -> float | None:
    """How long a live trainer has gone without a step, when that is past its allowance; else None."""
    if status.get("state") not in LIVE_STATES:
        return None
    last = timestamp(status.get("last_progress_at"))
    if last is None:
        # No step yet in this attempt: model loading, data, compilation get their own allowance.
        limit, since = status.get("first_step_timeout_seconds"), timestamp(status.get("started_at"))
    else:
        limit, since = status.get("stall_timeout_seconds"), last
    if not isinstance(limit, (int, float)) or limit <= 0 or since is None:
        return None
    waited = now - since
    return waited if waited > limit else None


@dataclass
class Assessment:
    state: str | None  # None: no run found
    exit_code: int
    recorded_state: str | None = None
    reason: str = ""  # why state differs from what status.json says
    stalled_for: float | None = None
    restart_in: float | None = None


def assess(seen: Observation) -> Assessment:
    status, exit_record = seen.status, seen.exit_record
    recorded = status.get("state") if status else None
    alive = seen.holder is not None  # a live supervisor, or a trainer holding the lock itself
    # A launch refused before it touched the run leaves status.json as the last run left it (trainkit.train.launch):
    # that run's state stands. Only with no run state at all is the launch's exit 1 the verdict.
    refused = not alive and exit_record is not None and exit_record["code"] == ExitCode.ERROR and status is None
    if seen.problem:
        return Assessment("unreadable", int(ExitCode.ERROR), recorded)
    if refused:
        return Assessment("failed", int(ExitCode.ERROR), recorded,
                          reason="train.py refused to start the run (exit 1)")
    if status is None:
        if alive:
            return Assessment("starting", 0, None, reason="launching")
        return Assessment(None, int(ExitCode.ERROR))

    def dead() -> Assessment:
        code = DEAD_EXIT
        newer = exit_record is not None and exit_record["mtime"] >= (seen.status_mtime or 0)
        if newer and exit_record["code"] in STATE_OF_FINAL_CODE:
            # train.py ended with a verdict it could not write (a full disk): the supervisor's record stands.
            code = exit_record["code"]
            return Assessment(STATE_OF_FINAL_CODE[code], code, recorded,
                              reason=f"status.json could not be updated (it still says {recorded}); the supervisor "
                                     f"recorded exit {code}: the log's last ERROR says why")
        if exit_record and exit_record["code"] > 0:
            code = exit_record["code"]
        return Assessment("dead", code, recorded,
                          reason=f"status.json says {recorded} but no trainer or supervisor is alive")

    if recorded in LIVE_STATES:
        if seen.trainer_alive:
            stalled = stall_seconds(status, seen.now)
            if stalled is not None:
                return Assessment("stalled", STALLED_EXIT, recorded, stalled_for=stalled,
                                  reason=f"no step for {int(stalled)} s")
            return Assessment(recorded, 0, recorded)
        if seen.supervisor_alive:
            return Assessment("restarting", 0, recorded, reason="the trainer is gone; the supervisor relaunches it")
        return dead()
    if recorded == "restarting":
        if seen.supervisor_alive:
            at = timestamp(status.get("restart_at"))
            left = max(0.0, at - seen.now) if at is not None else None
            return Assessment("restarting", 0, recorded, restart_in=left)
        return dead()
    if recorded == "failed":
        code = status.get("exit_code")
        code = code if isinstance(code, int) and not isinstance(code, bool) and code > 0 else int(ExitCode.CRASHED)
        if code == ExitCode.CRASHED and seen.supervisor_alive:
            return Assessment("restarting", 0, recorded, reason="train.py crashed; the supervisor relaunches it")
        return Assessment("failed", code, recorded)
    if recorded in EXIT_OF_STATE:
        return Assessment(recorded, EXIT_OF_STATE[recorded], recorded)
    return Assessment("unknown", int(ExitCode.ERROR), recorded)


def undecided(output_dir: Path | str) -> bool:
    """Whether the run can still change on its own: a process holds its lock or its trainer lives."""
    seen = observe(output_dir)
    return seen.holder is not None or seen.trainer_alive


# The supervisor.

def supervisor_next(code: int, failures: int, max_restarts: int, progressed: bool) -> tuple[str, int]:
    """After train.py exited `code`: ("stop", final code) or ("relaunch", failures so far).

    `failures` counts relaunches in a row without progress; an attempt that made progress
    starts the count again, so a week-long run with a crash a day is not abandoned."""
    if code in FINAL_CODES:
        return "stop", code
    failures = 1 if progressed else failures + 1
    if failures > max_restarts:
        return "give_up", int(ExitCode.CRASHED)
    return "relaunch", failures


def read_rank_exits(folder: Path | str) -> dict[int, int]:
    """The exit codes the ranks of one attempt left in the supervisor's folder (trainkit.train.run.record_rank_exit)."""
    codes = {}
    for path in Path(folder).glob("rank-*"):
        rank, text = path.name.removeprefix("rank-"), path.read_text(encoding="utf-8").strip()
        if rank.isdigit() and text.lstrip("-").isdigit():
            codes[int(rank)] = int(text)
    return codes


def group_verdict(rank_codes: dict[int, int], nproc: int) -> int:
    """The exit code of a torchrun group, from what its ranks recorded; never torchrun's own status
    (it turns a worker's 75 or 70 into 1, which would read as an input error).

    A rank's decision about the whole run (1 input error, 2 crash loop, 3 diverged) wins, lowest
    rank first, also over another rank's crash in the same attempt: rank 0 calls the crash loop
    on a start in which rank 1 crashes again, and a relaunch would only repeat either verdict.
    Otherwise a rank that recorded nothing was killed, and a rank that crashed brings the group
    down with it (torchrun stops the others with SIGTERM, and they record 75): both are a crash,
    relaunched. A rank that finished (0) wins over the others' 75; every rank at 75 is a stop."""
    codes = [rank_codes[rank] for rank in sorted(rank_codes)]
    decisions = [code for code in codes if code in (ExitCode.ERROR, ExitCode.CRASH_LOOP, ExitCode.DIVERGED)]
    if decisions:
        return decisions[0]
    if len(rank_codes) < nproc or any(code not in FINAL_CODES for code in codes):
        return int(ExitCode.CRASHED)
    return int(ExitCode.OK) if ExitCode.OK in codes else int(ExitCode.INTERRUPTED)


def attempt_progressed(output_dir: Path, launch_id: str, attempt: int) -> bool:
    """Whether attempt `attempt` of this launch got a step beyond the one it started (or resumed) from."""
    status = read_json(Path(output_dir) / STATUS_FILE) or {}
    if status.get("launch_id") != launch_id or status.get("attempt") != attempt:
        return False
    step, start = status.get("step"), status.get("start_step")
    return isinstance(step, int) and isinstance(start, int) and step > start


def mark_restarting(output_dir: Path, attempt: int, delay: float, code: int, launch_id: str, node: int = 0) -> None:
    """The supervisor's note in status.json while it waits: state restarting, attempt, when. Not on a node
    other than 0, whose supervisor leaves status.json to node 0 (as write_exit_record does)."""
    if node:
        return
    from datetime import timezone

    from trainkit.core.status import now_iso, write_json_atomic

    path = Path(output_dir) / STATUS_FILE
    status = read_json(path) or {"schema_version": 1, "step": 0, "max_steps": None, "output_dir": str(output_dir),
                                 "pid": os.getpid(), "started_at": now_iso()}
    at = datetime.fromtimestamp(time.time() + delay, tz=timezone.utc).isoformat(timespec="seconds")
    status.update(state="restarting", attempt=attempt, restart_at=at, exit_code=None, launch_id=launch_id,
                  message=f"train.py exited {code}; relaunch {attempt} at {at}", updated_at=now_iso())
    write_json_atomic(path, status)


# The launch watch.

@dataclass
class WatchVerdict:
    done: bool
    exit_code: int = 0
    kind: str = "wait"  # wait, running, completed, already_complete, failed, lost
    step: int | None = None
    message: str = ""
    trained: bool = False  # this launch made steps before its verdict (an exit 1 mid-run: a full disk, memory)


def trained_steps(status: dict) -> bool:
    """Whether the run recorded in STATUS made steps in its last launch (step beyond its start_step)."""
    step, start = status.get("step"), status.get("start_step") or 0
    return isinstance(step, int) and isinstance(start, int) and step > start


def watch(output_dir: Path | str, launch_id: str, watch_steps: int, session_alive: bool) -> WatchVerdict:
    """One look at a launch: only what this launch's processes wrote counts."""
    output_dir = Path(output_dir)
    status = read_json(output_dir / STATUS_FILE) or {}
    ours = status.get("launch_id") == launch_id
    record = read_exit_record(output_dir)
    if record and record["launch_id"] == launch_id:
        code = record["code"]
        message = status.get("message") if ours else None
        if code == 0:
            kind = "already_complete" if ours and status.get("already_complete") else "completed"
            return WatchVerdict(True, 0, kind, status.get("step") if ours else None, message or "")
        return WatchVerdict(True, code, "failed", status.get("step") if ours else None, message or "",
                            trained=ours and trained_steps(status))
    if ours and status.get("state") == "running":
        step, start = status.get("step"), status.get("start_step") or 0
        if isinstance(step, int) and step - start >= watch_steps:
            return WatchVerdict(True, 0, "running", step)
    if not session_alive:
        # The session is gone with no verdict of ours: give the exit file a moment, then say so.
        return WatchVerdict(False, int(ExitCode.CRASHED), "lost")
    return WatchVerdict(False)
