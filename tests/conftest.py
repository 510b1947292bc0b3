"""Shared fixtures: real train.py runs of the tiny model on CPU, offline.

Launches are the expensive part (importing torch + transformers takes seconds), so
runs that several tests read are session fixtures, and tests copy their output
directories instead of training again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SMOKE = ROOT / "configs" / "smoke.yaml"
ANSI = re.compile(r"\x1b\[")
TAGGED = re.compile(r"^(✅|⚠️|❌) (SUCCESS|WARNING|ERROR|RESUME):")

sys.path.insert(0, str(ROOT))
# In-process checks too: no test may ask the Hugging Face Hub or W&B anything (the W&B tests point
# WANDB_BASE_URL at local stand-ins and unset WANDB_MODE themselves).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


# Files that train most (two-process groups, crash loops, the benchmark) are handed out first: a long
# test handed out last would leave one worker alone at the end, whatever a worker can steal.
FIRST_FILES = ("test_train_distributed.py", "test_train_failures.py", "test_mlx_backend.py", "test_bench.py",
               "test_train_resume.py", "test_stop_phases.py", "test_hub_offline.py", "test_wandb_fallback.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in FIRST_FILES)  # stable: the rest keep their order


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINKIT_", "WANDB_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="offline",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        # No test asks a real package index: torch_build's index check reads these pages.
        TRAINKIT_WHEEL_INDEX_ROOT=f"file://{ROOT / 'tests' / 'fixtures' / 'wheel-index'}",
    )
    env.pop("NO_COLOR", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class Run:
    returncode: int
    output: str
    log: Path

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()

    @property
    def tagged(self) -> list[str]:
        return [line for line in self.lines if TAGGED.match(line)]

    @property
    def verdict(self) -> str:
        return self.tagged[-1] if self.tagged else ""


def train_cmd(out: Path, *args: str) -> list[str]:
    return [PYTHON, "train.py", "--config", str(SMOKE), "--output_dir", str(out), "--report_to", "none", *args]


def check_log(run: Run) -> Run:
    """What every run must satisfy: no ANSI escapes in a log, no traceback on screen for a verdict."""
    assert not ANSI.search(run.output), f"ANSI escape in {run.log}"
    if run.returncode != 70:
        assert "Traceback (most recent call last)" not in run.output, run.output[-3000:]
    return run


def run_train(out: Path, *args: str, env: dict | None = None, timeout: float = 300, process: bool = False) -> Run:
    """train.py to its end: its exit code and everything it printed (stdout and stderr, as one log).

    It runs in this process (torch and the libraries already imported: seconds saved per run) unless
    `process` is set or W&B is on: an exit code and the lines printed do not depend on a process
    boundary. Signals, kills and torchrun go through start_train and real processes.
    """
    log = out.parent / f"{out.name}-{time.monotonic_ns()}.log"
    argv = train_cmd(out, *args)
    if process or "wandb" in argv[argv.index("--report_to") + 1:]:
        with log.open("w") as fh:
            proc = subprocess.run(argv, cwd=ROOT, env=env or base_env(), stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        return check_log(Run(proc.returncode, log.read_text(), log))
    return check_log(Run(train_in_process(argv[2:], env or base_env(), log), log.read_text(), log))


def train_in_process(argv: list[str], env: dict, log: Path) -> int:
    """trainkit.train.run.main(argv) as `python train.py` would run it: that environment, the repo as the
    working directory, stdout and stderr (file descriptors too) into `log`; everything the run changes in
    this process (environment, directory, signal handlers, warning filters, sys.stdout) is put back."""
    import warnings

    from trainkit.train import run

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    saved_streams = sys.stdout, sys.stderr
    for stream in saved_streams:
        stream.flush()
    saved_fds = os.dup(1), os.dup(2)
    with log.open("w") as fh, warnings.catch_warnings():
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        sys.stdout = sys.stderr = fh
        for handler in stream_handlers():
            point(handler, fh)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(ROOT)
        try:
            return int(run.main(argv))
        finally:
            fh.flush()
            # A library's log handler keeps the stream it was made with: `fh` closes now, and pytest closes
            # its own capture streams after each test. Left there, the next run's warnings would end in
            # "--- Logging error ---" tracebacks; the process's own stderr outlives every test.
            for handler in stream_handlers():
                point(handler, sys.__stderr__)
            sys.stdout, sys.stderr = saved_streams
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)


def stream_handlers() -> list:
    """Every live StreamHandler, attached to a logger or kept by name (logging.config's)."""
    import logging

    handlers = [ref() for ref in logging._handlerList]  # weak references to every handler made
    # logging's lastResort (_StderrHandler) follows sys.stderr by itself; a FileHandler owns its file.
    return [h for h in handlers if isinstance(h, logging.StreamHandler)
            and not isinstance(h, logging.FileHandler) and h is not logging.lastResort
            and "stream" in vars(h) and not type(h).__module__.startswith("_pytest")]


def point(handler, stream) -> None:
    """HANDLER writes to STREAM from now on. setStream would flush the old stream, perhaps closed; and
    transformers' default handler carries its own `flush`, bound to the stream it was made with."""
    handler.stream = stream
    if "flush" in vars(handler):
        handler.flush = stream.flush


def start_train(out: Path, *args: str, env: dict | None = None):
    """A running train.py in its own session (as under tmux); returns (process, log path)."""
    log = out.parent / f"{out.name}-{time.monotonic_ns()}.log"
    fh = log.open("w")
    proc = subprocess.Popen(train_cmd(out, *args), cwd=ROOT, env=env or base_env(), stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True)
    fh.close()
    return proc, log


def wait_for(predicate, proc, timeout: float = 180, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited {proc.returncode} before {what}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    raise AssertionError(f"timed out waiting for {what}")


def finish(proc, log: Path, timeout: float = 180) -> Run:
    proc.wait(timeout=timeout)
    return check_log(Run(proc.returncode, log.read_text(), log))


def read_json(path: Path):
    return json.loads(path.read_text())


def status_step(output_dir: Path) -> int:
    """The step status.json says now; 0 before it exists (or while it is rewritten)."""
    from trainkit.core.status import read_json as read_json_if_there

    return (read_json_if_there(output_dir / "status.json") or {}).get("step", 0)


def step_losses(output_dir: Path) -> dict[int, float]:
    """Per-step training loss from the newest trainer state (final/ or the last checkpoint)."""
    candidates = [output_dir / "final" / "trainer_state.json"] + sorted(
        output_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1])
    )[::-1]
    state = read_json(next(p for p in candidates if p.exists()))
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def on_ranks(count: int, call) -> list:
    """call(rank, gather) for `count` ranks side by side on threads, where gather(value) returns every
    rank's value (all_gather_object's contract); the results in rank order."""
    import threading

    barrier, slots, results = threading.Barrier(count), [None] * count, [None] * count

    def gather_for(rank):
        def gather(value):
            slots[rank] = value
            barrier.wait()
            values = list(slots)
            barrier.wait()  # nobody writes the next round's value before everyone has read this one
            return values
        return gather

    def run(rank):
        results[rank] = call(rank, gather_for(rank))

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def load_script(name: str):
    """A scripts/<name>.py CLI as a module, to call its main(argv) in-process."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session", autouse=True)
def tiny_model():
    """The repo builds its own model; a no-op when `make setup` already did."""
    subprocess.run([PYTHON, "scripts/make_tiny_model.py"], cwd=ROOT, check=True, env=base_env(),
                   stdout=subprocess.DEVNULL)
    return ROOT / "models" / "tiny-chat"


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def smoke_run(runs_dir) -> tuple[Path, Run]:
    """configs/smoke.yaml as shipped (20 steps, W&B offline), straight through."""
    out = runs_dir / "smoke"
    log = runs_dir / "smoke.log"
    cmd = [PYTHON, "train.py", "--config", str(SMOKE), "--output_dir", str(out)]
    # No WANDB_MODE and a HOME without ~/.netrc: trainkit itself must choose offline.
    home = runs_dir / "home"
    home.mkdir()
    env = base_env(HOME=home)
    env.pop("WANDB_MODE")
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=300)
    return out, check_log(Run(proc.returncode, log.read_text(), log))


@pytest.fixture(scope="session")
def crashed_at_step_5(runs_dir) -> tuple[Path, Run]:
    """8-step run saving every 2 steps that crashes at the end of step 5: checkpoints 2 and 4."""
    out = runs_dir / "crash5"
    run = run_train(out, "--max_steps", "8", "--save_steps", "2",
                    env=base_env(TRAINKIT_FAULT_CRASH_AT_STEP=5))
    return out, run
