"""Stop means stop, in every phase: a stop request while loading, evaluating or saving ends the run in bounded
time, with exit 75 and the lock released (real processes and real signals)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from conftest import base_env, finish, read_json, start_train, wait_for
from trainkit.core import lock
from trainkit.train import checkpoints

BOUND = 10  # seconds from the stop request to the exit, whatever the phase


def stopped_within(proc, log, sent_at: float):
    run = finish(proc, log, timeout=60)
    return run, time.monotonic() - sent_at


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_before_the_first_step_ends_the_start_at_once_with_75_and_the_lock_free(signum, tmp_path):
    out = tmp_path / "out"
    proc, log = start_train(out, "--max_steps", "4", env=base_env(TRAINKIT_FAULT_HANG_BEFORE_FIRST_STEP=1))
    wait_for(lambda: "[PREFLIGHT] duration estimate" in log.read_text(), proc, what="the preflight's end")
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signum)
    run, took = stopped_within(proc, log, sent)
    assert run.returncode == 75, run.output[-2000:]
    assert took < BOUND, f"{took:.1f} s"
    name = signal.Signals(signum).name
    assert run.verdict == f"❌ ERROR: stopped before training started ({name}); re-run the same command to start"
    assert lock.owner(out) is None
    status = read_json(out / "status.json")
    assert (status["state"], status["exit_code"]) == ("interrupted", 75)


@pytest.fixture
def silent_hub():
    """An HF_ENDPOINT that accepts connections and never answers; (url, the connections it took)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept())
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", held
    server.close()


def test_a_stop_while_the_hub_never_answers_ends_the_start_within_seconds(silent_hub, tmp_path):
    url, asked = silent_hub
    env = base_env(HF_ENDPOINT=url, HF_HUB_ETAG_TIMEOUT="300")
    env.pop("HF_HUB_OFFLINE")
    out = tmp_path / "out"
    proc, log = start_train(out, "--max_steps", "4", "--model_name_or_path", "trainkit-test/not-cached", env=env)
    wait_for(lambda: bool(asked), proc, timeout=60, what="a request to the Hub")
    time.sleep(1)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    run, took = stopped_within(proc, log, sent)
    assert run.returncode == 75, run.output[-2000:]
    assert took < BOUND, f"{took:.1f} s"
    assert run.verdict.startswith("❌ ERROR: stopped before training started (SIGTERM)")
    assert lock.owner(out) is None


@pytest.mark.parametrize("backend", ["torch", "mlx"])
def test_a_stop_during_an_evaluation_abandons_it_and_saves_the_last_finished_step(backend, tmp_path):
    if backend == "mlx":
        pytest.importorskip("mlx_lm", reason="MLX is pinned for Linux and macOS; make setup installs it")
    out = tmp_path / "out"
    proc, log = start_train(out, "--max_steps", "8", "--save_steps", "100", "--eval_strategy", "steps",
                            "--eval_steps", "3", "--tool_eval_samples", "0", "--backend", backend,
                            env=base_env(TRAINKIT_FAULT_SIGNAL_IN_EVAL="SIGTERM"))
    run = finish(proc, log, timeout=120)
    assert run.returncode == 75, run.output[-2000:]
    assert run.verdict == "❌ ERROR: interrupted by SIGTERM: evaluation abandoned; checkpoint saved at step 3"
    assert [c.step for c in checkpoints.checkpoint_dirs(out)] == [3]
    assert checkpoints.newest_valid(out).step == 3
    assert "eval at step 3/8" not in run.output  # its figures are not reported as if complete
    assert read_json(out / "status.json").get("eval") is None


def test_a_second_stop_request_exits_at_once_and_says_what_it_skipped(tmp_path):
    out = tmp_path / "out"
    # Each step ends in a one-second pause: the first request lands in it, the second before the save it asked for.
    proc, log = start_train(out, "--max_steps", "50", "--save_steps", "1",
                            env=base_env(TRAINKIT_FAULT_STEP_DELAY=1))
    wait_for(lambda: checkpoints.newest_valid(out) is not None, proc, what="checkpoint-1")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    run, took = stopped_within(proc, log, sent)
    assert run.returncode == 75
    assert took < 3, f"{took:.1f} s"
    assert run.verdict.startswith("❌ ERROR: stopped at once by a second SIGINT: the checkpoint of this step was "
                                  "not saved; re-run the same command to resume from the newest complete checkpoint")
    assert run.verdict and "checkpoint saved at step" not in run.output
