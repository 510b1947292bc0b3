"""The same train.py under torchrun on CPU: one voice, one stop step for every rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ANSI, ROOT, SMOKE, Run, base_env, read_json, status_step, wait_for
from trainkit.train import checkpoints


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads worker ranks from /proc")
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_saved_step(runs_dir):
    out = runs_dir / "ddp"
    log = runs_dir / "ddp.log"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--nproc_per_node", "2", "train.py", "--config", str(SMOKE), "--output_dir", str(out),
           "--max_steps", "40", "--save_steps", "100", "--report_to", "none"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=base_env(TRAINKIT_FAULT_STEP_DELAY=0.3), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: status_step(out) >= 2, proc, what="step 2")
    os.kill(worker_of_rank(proc.pid, 1), signal.SIGTERM)
    proc.wait(timeout=180)
    # torchrun itself reports a worker's non-zero exit with a traceback and exit 1;
    # the worker's own code (75) is in its report and in status.json.
    run = Run(proc.returncode, log.read_text(), log)
    assert not ANSI.search(run.output)
    saved = checkpoints.checkpoint_dirs(out)
    assert len(saved) == 1 and checkpoints.problems(saved[0]) == []
    assert {p.name for p in saved[0].path.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    status = read_json(out / "status.json")
    assert status["state"] == "interrupted" and status["step"] == saved[0].step
    assert status["message"].startswith("interrupted by a stop request from another rank")
    assert not (out / "final").exists(), "a stopped run must not look finished"
    assert run.output.count("[TRAINING-CPU] trainkit") == 1, "only rank 0 prints the protocol"
    assert "exitcode  : 75" in run.output


def worker_of_rank(torchrun_pid: int, rank: int) -> int:
    children = subprocess.run(["pgrep", "-P", str(torchrun_pid)], capture_output=True, text=True).stdout.split()
    for pid in map(int, children):
        environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no worker of rank {rank} among {children}")


def test_only_rank_0_records_the_wandb_run_id(tmp_path, monkeypatch):
    from trainkit.train import tracking

    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT", "WANDB_DIR", "WANDB_SILENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "1")
    tracking.prepare_wandb(tmp_path, "weatherman", ["wandb"])
    assert not (tmp_path / tracking.RUN_FILE).exists()
    monkeypatch.setenv("RANK", "0")
    run_id = tracking.prepare_wandb(tmp_path, "weatherman", ["wandb"])
    assert read_json(tmp_path / tracking.RUN_FILE)["run_id"] == run_id


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torchrun on CPU, as above")
@pytest.mark.parametrize(
    ("fault", "seen_by_rank_0"),
    [
        ("TRAINKIT_FAULT_NAN_AT_STEP", "the loss diverged on another rank"),
        ("TRAINKIT_FAULT_INF_GRAD_AT_STEP", "gradients became non-finite on another rank"),
    ],
)
def test_a_nan_on_one_rank_stops_every_rank_with_exit_3_in_bounded_time(tmp_path, fault, seen_by_rank_0):
    out = tmp_path / "ddp-nan"
    log = tmp_path / "ddp-nan.log"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--nproc_per_node", "2", "train.py", "--config", str(SMOKE), "--output_dir", str(out),
           "--max_steps", "8", "--save_steps", "2", "--report_to", "none"]
    env = base_env(**{fault: 3}, TRAINKIT_FAULT_RANK=1)
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"a NaN on rank 1 hung the run:\n{log.read_text()[-3000:]}") from None
    output = log.read_text()
    assert "exitcode  : 3" in output, output[-3000:]
    status = read_json(out / "status.json")
    assert status["state"] == "diverged" and status["exit_code"] == 3
    # Rank 0 never saw a NaN itself: it stopped because rank 1 did.
    assert status["message"] == f"{seen_by_rank_0} at step 3: training diverged; last good state saved in checkpoint-2"
    saved = checkpoints.checkpoint_dirs(out)
    assert [c.step for c in saved] == [2] and checkpoints.problems(saved[0]) == []


def test_a_two_process_run_whose_rank_was_killed_mid_save_resumes_before_it_to_the_adapter_of_an_uninterrupted_one(
        runs_dir):
    import torch
    from safetensors.torch import load_file

    torchrun = str(Path(sys.executable).parent / "torchrun")

    def launch(out: Path, report_to: str = "none", **faults) -> subprocess.CompletedProcess:
        cmd = [torchrun, "--nproc_per_node", "2", "train.py", "--config", str(SMOKE), "--output_dir", str(out),
               "--max_steps", "6", "--save_steps", "2", "--report_to", report_to]
        return subprocess.run(cmd, cwd=ROOT, env=base_env(**faults), capture_output=True, text=True, timeout=300)

    straight = runs_dir / "ddp-straight"
    assert launch(straight).returncode == 0
    resumed = runs_dir / "ddp-resumed"
    # Rank 1 is killed outright while it writes checkpoint-4, after rank 0 wrote every file of its own.
    first = launch(resumed, "wandb", TRAINKIT_FAULT_KILL_IN_SAVE_AT_STEP=4, TRAINKIT_FAULT_RANK=1)
    assert first.returncode != 0 and not (resumed / "final").exists(), first.stdout[-3000:]
    cut_off = checkpoints.Checkpoint(resumed / "checkpoint-4", 4)
    assert (cut_off.path / "trainer_state.json").exists() and not (cut_off.path / "rng_state_1.pth").exists()
    assert checkpoints.problems(cut_off) == [f"{checkpoints.INCOMPLETE_MARKER} present (killed while saving)"]
    second = launch(resumed, "wandb")
    assert second.returncode == 0, second.stdout[-3000:]
    assert "⚠️ WARNING: skipping incomplete checkpoint checkpoint-4" in second.stdout
    assert "⚠️ RESUME: Found checkpoint at step 2. Resuming training." in second.stdout
    assert checkpoints.problems(cut_off) == [], "the resumed run saved step 4 again, whole"
    # One W&B run for the group: rank 0's, continued under the same id by the relaunch.
    run_id = read_json(resumed / "wandb_run.json")["run_id"]
    offline_runs = sorted(p.name for p in (resumed / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(name.endswith(f"-{run_id}") for name in offline_runs), offline_runs
    expected = load_file(straight / "final" / "adapter_model.safetensors")
    got = load_file(resumed / "final" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected), "the resumed group trained other weights"


AGREE_SCRIPT = """
import json, os, sys
from pathlib import Path
from trainkit.train import checkpoints
from trainkit.train.run import gather_from_every_rank

import torch.distributed
torch.distributed.init_process_group("gloo")  # in train.py parsing the config (TrainingArguments) does it
root = Path(sys.argv[1])
newest, found = checkpoints.newest_valid_on_every_rank(root / f"node{os.environ['RANK']}", gather_from_every_rank())
(root / f"rank{os.environ['RANK']}.json").write_text(json.dumps([newest.step if newest else None, found]))
torch.distributed.destroy_process_group()
"""


def test_two_ranks_with_different_node_local_checkpoints_agree_over_the_process_group_on_the_older(tmp_path):
    from test_checkpoints import make_checkpoint

    for step in (2, 4):
        make_checkpoint(tmp_path / "node0", step)
    make_checkpoint(tmp_path / "node1", 2)
    script = tmp_path / "agree.py"
    script.write_text(AGREE_SCRIPT)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
                          cwd=ROOT, env=base_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert [read_json(tmp_path / f"rank{rank}.json") for rank in (0, 1)] == [[2, [4, 2]]] * 2


def test_a_run_started_on_one_process_resumes_on_two_when_effective_batch_size_keeps_its_batch(runs_dir):
    out = runs_dir / "one-then-two"
    common = ["train.py", "--config", str(SMOKE), "--output_dir", str(out), "--max_steps", "4", "--save_steps", "2",
              "--report_to", "none", "--effective_batch_size", "8"]  # 4 per device: 2 steps of accumulation on one
    first = subprocess.run([sys.executable, *common], cwd=ROOT, env=base_env(TRAINKIT_FAULT_CRASH_AT_STEP=3),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 70, first.stdout[-3000:]
    assert read_json(out / "run_fingerprint.json")["defining"]["effective_batch_size"] == 8
    torchrun = str(Path(sys.executable).parent / "torchrun")
    second = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", *common], cwd=ROOT, env=base_env(),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "effective batch: 4 per device x 2 processes x 1 accumulation = 8 sequences per optimizer step " \
           "(kept by effective_batch_size)" in second.stdout
    assert "⚠️ RESUME: Found checkpoint at step 2. Resuming training." in second.stdout
    assert read_json(out / "status.json")["state"] == "completed"
    assert (out / "final" / "adapter_model.safetensors").exists()
