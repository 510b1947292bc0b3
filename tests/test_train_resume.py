"""Auto-resume: exact continuation after a hard kill, and never from a damaged checkpoint."""

from __future__ import annotations

import signal

import pytest

from conftest import base_env, copy_run, finish, read_json, run_train, start_train, step_losses, wait_for


def test_resume_after_a_hard_kill_reproduces_the_straight_run_losses(smoke_run, runs_dir):
    straight, _ = smoke_run
    out = runs_dir / "killed"
    # Slow steps give the kill a window between checkpoint-10 and the end of the run.
    proc, log = start_train(out, env=base_env(TRAINKIT_FAULT_STEP_DELAY=0.3))
    wait_for(lambda: (out / "checkpoint-10" / "trainer_state.json").exists(), proc, what="checkpoint-10")
    proc.send_signal(signal.SIGKILL)
    killed = finish(proc, log)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "final").exists()

    resumed = run_train(out)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert "⚠️ RESUME: Found checkpoint at step 10. Resuming training." in resumed.lines
    first_progress = next(line for line in resumed.lines if line.startswith("[TRAINING-CPU] step "))
    assert first_progress.startswith("[TRAINING-CPU] step 11/20")
    assert step_losses(out) == step_losses(straight)


DAMAGES = {
    "truncated adapter": lambda ckpt: _truncate(ckpt / "adapter_model.safetensors"),
    "missing trainer_state.json": lambda ckpt: (ckpt / "trainer_state.json").unlink(),
    "missing optimizer.pt": lambda ckpt: (ckpt / "optimizer.pt").unlink(),
    "empty directory": lambda ckpt: [p.unlink() for p in ckpt.iterdir()],
}
REASONS = {
    "truncated adapter": "adapter_model.safetensors is truncated",
    "missing trainer_state.json": "trainer_state.json missing",
    "missing optimizer.pt": "optimizer.pt missing",
    "empty directory": "directory is empty",
}


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_resume_skips_a_checkpoint_damaged_mid_save_and_still_finishes(crashed_at_step_5, tmp_path, damage):
    base, crash = crashed_at_step_5
    assert crash.returncode == 70
    out = copy_run(base, tmp_path / "run")
    DAMAGES[damage](out / "checkpoint-4")

    run = run_train(out, "--max_steps", "8", "--save_steps", "2")
    assert run.returncode == 0, run.output[-3000:]
    warning = next(line for line in run.lines if line.startswith("⚠️ WARNING: skipping incomplete checkpoint"))
    assert "checkpoint-4" in warning and REASONS[damage] in warning
    assert "⚠️ RESUME: Found checkpoint at step 2. Resuming training." in run.lines
    assert read_json(out / "final" / "trainer_state.json")["global_step"] == 8
    assert (out / "checkpoint-4").exists(), "a damaged checkpoint is left for inspection until rotated"
