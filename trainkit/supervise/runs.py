"""Every run under outputs/, and stopping one cleanly.

    for run in list_runs(Path("outputs")):
        print(run.name, run.state, run.step, run.max_steps)
    stop_run(Path("outputs/weatherman-h100"))   # SIGTERM: the trainer checkpoints and exits 75

A run is a directory with a status.json (or checkpoints). Whether its trainer is alive comes from
trainkit.core.lock.owner() (the supervisor's lock) and, for a train.py started by hand, from the pid in
status.json; a run whose status says running but whose process is gone is reported as dead.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from trainkit.core.status import STATUS_FILE
from trainkit.train.checkpoints import checkpoint_dirs

LIVE_STATES = ("starting", "running", "restarting", "stalled")


def live_owner(output_dir: Path, seen=None) -> dict | None:
    """pid/session/log of the live process training in output_dir, or None when none is.

    `seen`: a trainkit.supervise.supervision.Observation of output_dir already made (lock probe, status.json)."""
    from trainkit.supervise import supervision

    seen = seen or supervision.observe(output_dir)
    if seen.holder:
        return seen.holder
    status = seen.status or {}
    if status.get("state") in LIVE_STATES and seen.trainer_alive:
        return {"pid": int(status["pid"]), "session": None, "log": None}
    return None


@dataclass
class RunSummary:
    name: str
    output_dir: str
    state: str
    step: int | None
    max_steps: int | None
    last_checkpoint: str | None
    loss: float | None
    eta_seconds: float | None
    wandb_url: str | None
    pid: int | None
    config: str | None = None  # the config file it was launched from, and whether it changed since

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(output_dir: Path) -> RunSummary:
    from trainkit.supervise import supervision
    from trainkit.train import snapshot

    # The same verdict as check_training_status.sh: decided from the processes, not the file alone.
    seen = supervision.observe(output_dir)
    status = seen.status or {}
    owner = live_owner(output_dir, seen)
    state = supervision.assess(seen).state or ("unknown" if not checkpoint_dirs(output_dir) else "interrupted")
    checkpoints = checkpoint_dirs(output_dir)
    last = status.get("last_checkpoint") or (str(checkpoints[0].path) if checkpoints else None)
    return RunSummary(
        name=output_dir.name, output_dir=str(output_dir), state=state, step=status.get("step"),
        max_steps=status.get("max_steps"), last_checkpoint=Path(last).name if last else None,
        loss=status.get("loss"), eta_seconds=status.get("eta_seconds") if state in LIVE_STATES else None,
        wandb_url=status.get("wandb_url"), pid=int(owner["pid"]) if owner and str(owner.get("pid")).isdigit() else None,
        config=snapshot.describe(output_dir),
    )


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / STATUS_FILE).is_file() or bool(checkpoint_dirs(path)))


def list_runs(root: Path) -> list[RunSummary]:
    if not root.is_dir():
        return []
    return [summarize(p) for p in sorted(root.iterdir()) if is_run_dir(p)]


def resolve(name: str, root: Path) -> Path:
    """A run by its name under root, or by its path."""
    path = Path(name)
    return path if path.is_dir() and (path / STATUS_FILE).exists() else root / name


def signal_target(owner_pid: int) -> tuple[str, int]:
    """Where the one SIGTERM goes: the owner's whole process group when it leads one (a supervisor in tmux:
    train.py then hears it as it would a Ctrl-C in the pane, or through the supervisor, which passes it on),
    otherwise the owner alone. Never a second signal to the trainer: that one means "stop now, no save"."""
    try:
        leads_group = os.getpgid(owner_pid) == owner_pid
    except ProcessLookupError:
        leads_group = False
    return ("group", owner_pid) if leads_group else ("pid", owner_pid)


def send_stop(owner: dict) -> tuple[str, int]:
    pid = str(owner.get("pid") or "")
    if not pid.isdigit():
        from trainkit.core.errors import ConfigError

        raise ConfigError("the run's lock names no process id to signal", "stop it in its tmux session with Ctrl-C")
    kind, target = signal_target(int(pid))
    if kind == "group":
        os.killpg(target, signal.SIGTERM)
    else:
        os.kill(target, signal.SIGTERM)
    return kind, target


def wait_stopped(output_dir: Path, timeout: float, poll: float = 0.5) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if live_owner(output_dir) is None:
            return True
        time.sleep(poll)
    return live_owner(output_dir) is None
