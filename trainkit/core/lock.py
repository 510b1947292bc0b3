"""One trainer per output dir: an flock on OUTPUT_DIR/.trainkit.lock, and whether a process lives.

The lock belongs to an open file, not to a pid: it is held exactly as long as a process
that trains (or supervises) the run keeps the file open, and it vanishes when that process
dies, whatever happens to its pid afterwards. The file also says who holds it
(`key=value` lines: pid, pid_start, session, log, host, launch_id) so that a refusal can
name the owner; the file itself stays in place (deleting an flock file races with the
next taker).

    owner(output_dir)          -> the holder's info, or None when nobody holds the lock
    take(fd, output_dir, info) -> flock an fd the caller keeps open (the supervisor's)
    RunLock.acquire(dir, info) -> what train.py holds for its lifetime

In a multi-node run on one shared output dir, node 0's supervisor holds `.trainkit.lock` (its
first process trains and reports the run) and the supervisor of node R > 0 holds
`.trainkit.node<R>.lock` and leaves its verdict in `.trainkit.node<R>.exit` (`node=R` below).

Stdlib only: the status command and the bash scripts import this without torch.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".trainkit.lock"
EXIT_FILE = ".trainkit.exit"
LOCK_FD_ENV = "TRAINKIT_LOCK_FD"
LAUNCH_ID_ENV = "TRAINKIT_LAUNCH_ID"
# A status probe holds the lock for microseconds; a taker retries this long before it gives up.
TAKE_RETRY_SECONDS = 0.5


class LockHeld(Exception):
    """Another live process holds the lock; `info` says who."""

    def __init__(self, output_dir: Path, info: dict):
        super().__init__(f"{output_dir} is locked by {info}")
        self.output_dir = output_dir
        self.info = info


def lock_path(output_dir: Path | str, node: int = 0) -> Path:
    return Path(output_dir) / (LOCK_FILE if not node else f".trainkit.node{node}.lock")


def exit_path(output_dir: Path | str, node: int = 0) -> Path:
    return Path(output_dir) / (EXIT_FILE if not node else f".trainkit.node{node}.exit")


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 on (the command name, field 2, may hold spaces and parentheses)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None where /proc has none.

    A pid plus its start time names one process; a pid alone may be reused after a restart."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None  # field 22


def pid_alive(pid, start_time: str | None = None) -> bool:
    """Whether `pid` runs and, when `start_time` is known, is still the same process."""
    if isinstance(pid, str) and pid.isdigit():
        pid = int(pid)
    if not isinstance(pid, int) or isinstance(pid, bool) or pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass
    except (OSError, OverflowError):
        return False
    fields = _proc_stat(pid)
    if fields and fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent: kill -0 still answers for a zombie
    if start_time and fields and len(fields) > 19:
        return fields[19] == str(start_time)
    return True


def describe(pid: int | None = None, **fields) -> dict:
    """Info for the lock file about process `pid` (default: this one)."""
    pid = pid or os.getpid()
    info = {"pid": str(pid), "pid_start": process_start_time(pid) or "", "host": socket.gethostname(),
            "launch_id": os.environ.get(LAUNCH_ID_ENV, ""), "taken_at": str(int(time.time()))}
    info.update({k: "" if v is None else str(v) for k, v in fields.items()})
    return info


def parse_info(text: str) -> dict:
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            info[key.strip()] = value.strip()
    return info


def read_info(output_dir: Path | str, node: int = 0) -> dict:
    """What the lock file says about its last holder (it may no longer hold it)."""
    try:
        return parse_info(lock_path(output_dir, node).read_text(encoding="utf-8"))
    except OSError:
        return {}


def _try_flock(fd: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def owner(output_dir: Path | str, node: int = 0) -> dict | None:
    """The live holder's info (pid, session, log, …), or None when no process holds the lock."""
    path = lock_path(output_dir, node)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = {}
            for _ in range(20):  # the holder may be rewriting its info this very moment
                info = read_info(output_dir, node)
                if info:
                    break
                time.sleep(0.01)
            return info or {"pid": "", "session": "", "log": ""}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _write_info(fd: int, info: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, "".join(f"{k}={v}\n" for k, v in info.items()).encode())


def take(fd: int, output_dir: Path | str, info: dict, node: int = 0) -> None:
    """Lock `output_dir` on `fd` (an open descriptor of its lock file) and record `info`.

    The lock lasts while any process keeps that open file: a supervisor opens it, a short
    child takes the lock on the inherited descriptor and exits, the supervisor keeps it."""
    if not same_file(fd, lock_path(output_dir, node)):
        raise ValueError(f"fd {fd} is not {lock_path(output_dir, node)}")
    if not _try_flock(fd, time.monotonic() + TAKE_RETRY_SECONDS):
        raise LockHeld(Path(output_dir), owner(output_dir, node) or read_info(output_dir, node))
    previous = read_info(output_dir, node)
    if handing_over(previous, info):
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise LockHeld(Path(output_dir), previous)
    _write_info(fd, info)


def handing_over(previous: dict, info: dict) -> bool:
    """Whether another launch's train.sh let go of the lock only to hand it to its own supervisor.

    tmux cannot pass the launcher's descriptor to the supervisor it starts, so between the two
    the lock is free for a moment; a live launcher recorded there still owns the output dir."""
    return (previous.get("role") == "launcher" and previous.get("launch_id") != info.get("launch_id")
            and pid_alive(previous.get("pid"), previous.get("pid_start") or None))


def same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class RunLock:
    """The lock train.py holds while it trains `output_dir`.

    Under the supervisor, train.py inherits the supervisor's locked descriptor
    ($TRAINKIT_LOCK_FD) and only checks that it is this output dir's lock and is held by it.
    Started by hand, it opens and locks the file itself for its whole life."""

    def __init__(self, output_dir: Path, fd: int | None, inherited: bool):
        self.output_dir = output_dir
        self.fd = fd
        self.inherited = inherited

    @classmethod
    def acquire(cls, output_dir: Path, **info) -> RunLock:
        output_dir = Path(output_dir)
        path = lock_path(output_dir)
        inherited = os.environ.get(LOCK_FD_ENV, "")
        if inherited.isdigit() and same_file(int(inherited), path):
            fd = int(inherited)
            if _try_flock(fd, time.monotonic() + TAKE_RETRY_SECONDS):
                return cls(output_dir, fd, inherited=True)
            raise LockHeld(output_dir, owner(output_dir) or read_info(output_dir))
        holder = owner(output_dir)
        launch = os.environ.get(LAUNCH_ID_ENV, "")
        if holder is not None and launch and holder.get("launch_id") == launch:
            # A launcher between the supervisor and us (torchrun) did not pass the descriptor
            # on; the lock is held by our own launch.
            return cls(output_dir, None, inherited=True)
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            take(fd, output_dir, describe(**info))
        except BaseException:
            os.close(fd)
            raise
        return cls(output_dir, fd, inherited=False)

    def release(self) -> None:
        if self.fd is not None and not self.inherited:
            os.close(self.fd)  # closing the last descriptor of the open file drops the flock
        self.fd = None


def refusal(output_dir: Path, info: dict) -> tuple[str, str]:
    """The ERROR text and hint for a start refused because `info`'s process trains `output_dir`."""
    pid, session, log = info.get("pid") or "?", info.get("session") or "", info.get("log") or ""
    host = info.get("host") or ""
    if host and host != socket.gethostname():
        # A directory shared between machines: the usual case is the second node of a multi-node run.
        return (f"a trainer on host {host} is already running on {output_dir} (pid {pid})",
                "nodes of one multi-node run share an output dir when each has its own --node-rank (0 for the "
                "one at --rdzv-endpoint; docs/MULTI_NODE.md); else pick another --output_dir")
    who = (f"tmux session {session}, " if session else "") + f"pid {pid}" + (f", log {log}" if log else "")
    message = f"a trainer is already running on {output_dir} ({who})"
    if session:
        hint = (f"watch it with: tmux attach -t {session}; stop it with Ctrl-C inside tmux or "
                f"tmux kill-session -t {session} (both save a checkpoint)")
    else:
        hint = f"stop it with: kill -TERM {pid} (it saves a checkpoint); or pick another --output_dir"
    return message, hint
