"""Crashes, crash loops, signals and divergence: each ends in its documented exit code."""

from __future__ import annotations

import math
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from conftest import (
    ROOT,
    Run,
    base_env,
    check_log,
    copy_run,
    finish,
    read_json,
    run_train,
    start_train,
    status_step,
    train_cmd,
    wait_for,
)
from trainkit.train import checkpoints


def test_an_unexpected_exception_exits_70_with_the_traceback_only_in_the_log(crashed_at_step_5):
    out, run = crashed_at_step_5
    assert run.returncode == 70
    assert run.verdict == "❌ ERROR: training crashed: InjectedCrash: injected crash at step 5"
    assert "Traceback" not in run.output
    assert "Traceback (most recent call last)" in (out / "trainkit.log").read_text()
    status = read_json(out / "status.json")
    assert status["state"] == "failed" and status["exit_code"] == 70
    assert [c.step for c in checkpoints.checkpoint_dirs(out)] == [4, 2]


def test_a_crash_at_a_fixed_step_becomes_a_crash_loop_after_three_resumes(crashed_at_step_5, tmp_path):
    out = copy_run(crashed_at_step_5[0], tmp_path / "loop")
    crash = base_env(TRAINKIT_FAULT_CRASH_AT_STEP=5)
    counts = []
    for _ in range(3):
        run = run_train(out, "--max_steps", "8", "--save_steps", "2", env=crash)
        assert run.returncode == 70
        assert "⚠️ RESUME: Found checkpoint at step 4. Resuming training." in run.lines
        counts.append(read_json(out / "resume_metadata.json")["resume_count"])
    assert counts == [0, 1, 2]

    run = run_train(out, "--max_steps", "8", "--save_steps", "2", env=crash)
    assert run.returncode == 2
    assert run.verdict.startswith("❌ ERROR: Crash loop detected: resumed 3 times from step 4 without progress")
    assert not any(line.startswith("[TRAINING-CPU] step") for line in run.lines)
    assert read_json(out / "status.json")["state"] == "crash_loop"


@pytest.fixture(scope="module")
def crashing_at_step_1(runs_dir):
    """Two starts that both crash on step 1, before any checkpoint: resume_count 0 then 1."""
    out = runs_dir / "crash1"
    for _ in range(2):
        run = run_train(out, "--max_steps", "8", "--save_steps", "2", env=base_env(TRAINKIT_FAULT_CRASH_AT_STEP=1))
        assert run.returncode == 70
    assert read_json(out / "resume_metadata.json")["resume_count"] == 1
    return out


def test_a_run_that_crashes_before_its_first_checkpoint_is_a_crash_loop_too(crashing_at_step_1, tmp_path):
    out = copy_run(crashing_at_step_1, tmp_path / "loop")
    env = base_env(TRAINKIT_FAULT_CRASH_AT_STEP=1)
    assert run_train(out, "--max_steps", "8", "--save_steps", "2", env=env).returncode == 70
    run = run_train(out, "--max_steps", "8", "--save_steps", "2", env=env)
    assert run.returncode == 2
    assert run.verdict.startswith("❌ ERROR: Crash loop detected: resumed 3 times from the start")


def test_a_crash_after_progress_resets_the_resume_count(crashing_at_step_1, tmp_path):
    out = copy_run(crashing_at_step_1, tmp_path / "progress")
    env = base_env(TRAINKIT_FAULT_CRASH_AT_STEP=3)
    assert run_train(out, "--max_steps", "8", "--save_steps", "2", env=env).returncode == 70
    assert read_json(out / "resume_metadata.json")["resume_count"] == 2
    run = run_train(out, "--max_steps", "8", "--save_steps", "2", env=env)
    assert run.returncode == 70
    metadata = read_json(out / "resume_metadata.json")
    assert (metadata["last_step"], metadata["resume_count"]) == (2, 0)
    assert set(metadata) >= {"last_checkpoint", "last_step", "resume_count", "last_resume_time"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_saves_the_current_step_and_the_rerun_resumes_there(runs_dir, signum):
    out = runs_dir / f"signal-{signum.name}"
    args = ("--max_steps", "12", "--save_steps", "100", "--report_to", "wandb")
    proc, log = start_train(out, *args, env=base_env(TRAINKIT_FAULT_STEP_DELAY=0.2))
    wait_for(lambda: status_step(out) >= 3, proc, what="step 3")
    proc.send_signal(signum)
    stopped = finish(proc, log)
    assert stopped.returncode == 75, stopped.output[-3000:]
    saved = checkpoints.checkpoint_dirs(out)
    assert len(saved) == 1 and not checkpoints.problems(saved[0])
    step = saved[0].step
    assert 3 <= step < 12
    assert stopped.verdict == f"❌ ERROR: interrupted by {signum.name}: checkpoint saved at step {step}"
    assert read_json(out / "status.json")["state"] == "interrupted"

    rerun = run_train(out, *args)
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert f"⚠️ RESUME: Found checkpoint at step {step}. Resuming training." in rerun.lines
    first = next(line for line in rerun.lines if line.startswith("[TRAINING-CPU] step "))
    assert first.startswith(f"[TRAINING-CPU] step {step + 1}/12")
    assert read_json(out / "resume_metadata.json")["resume_count"] == 0, "a clean interrupt is not a crash"
    run_id = read_json(out / "wandb_run.json")["run_id"]
    assert len(list((out / "wandb").glob(f"offline-run-*-{run_id}"))) == 2, "both starts log to the same W&B run"


def test_a_nan_loss_stops_with_exit_3_and_keeps_the_last_good_state(runs_dir):
    out = runs_dir / "nan"
    run = run_train(out, "--max_steps", "8", "--save_steps", "2", env=base_env(TRAINKIT_FAULT_NAN_AT_STEP=4))
    assert run.returncode == 3, run.output[-3000:]
    assert run.verdict == (
        "❌ ERROR: loss became nan at step 4: training diverged; last good state saved in checkpoint-3"
    )
    assert read_json(out / "status.json")["state"] == "diverged"
    good = checkpoints.Checkpoint(out / "checkpoint-3", 3)
    assert checkpoints.problems(good) == []
    assert finite(good.path)


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("Qwen/Qwen2.5-7B-Instruc", "it cannot be checked or downloaded (did you mean Qwen/Qwen2.5-7B-Instruct?)"),
        ("Qwen/Qwen2.5-7B-Instruct", "its weights cannot be downloaded"),
    ],
)
def test_a_model_neither_cached_nor_reachable_is_exit_1_before_training(tmp_path, model, error):
    out = tmp_path / "out"
    run = run_train(out, "--model_name_or_path", model, "--max_steps", "4")
    assert run.returncode == 1, run.output[-3000:]
    errors = [line for line in run.lines if line.startswith("❌ ERROR:")]
    assert len(errors) == 1 and errors[0].startswith(f"❌ ERROR: model {model} is not in the local HF cache")
    assert errors[0].endswith(error)
    assert not (out / "resume_metadata.json").exists(), "an input error is not a start the crash-loop count sees"


def test_a_config_directory_is_exit_1_and_writes_no_log_where_it_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs")], cwd=tmp_path,
                          env=base_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"❌ ERROR: --config {ROOT / 'configs'} is a directory, not a config file" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_output_dir_that_cannot_be_created_is_exit_1_without_a_traceback(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = subprocess.run(train_cmd(blocker / "run", "--max_steps", "4"), cwd=ROOT, env=base_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    run = check_log(Run(proc.returncode, proc.stdout, blocker))
    assert run.returncode == 1, run.output[-3000:]
    assert [line for line in run.lines if line.startswith("❌ ERROR:")] == [
        f"❌ ERROR: output_dir {blocker / 'run'} cannot be created: {blocker} is a file, not a directory"]


def test_a_failing_status_write_is_one_warning_and_training_goes_on(tmp_path, monkeypatch, capsys):
    import errno

    from trainkit.core import status as status_module

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(status_module, "write_json_atomic", disk_full)
    status = status_module.RunStatus(tmp_path)
    for step in range(3):
        status.update(step=step)
        status.event("log", loss=1.0)
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("⚠️ WARNING:")]
    assert warnings == ["⚠️ WARNING: cannot write status.json (No space left on device): training continues "
                        "without status updates"]
    assert status.data["step"] == 2
    assert (tmp_path / "events.jsonl").read_text().count('"log"') == 3, "events.jsonl is written on its own"


def test_a_run_whose_status_files_cannot_be_written_still_completes(tmp_path):
    out = tmp_path / "out"
    run = run_train(out, "--max_steps", "3", "--save_steps", "100",
                    env=base_env(TRAINKIT_FAULT_STATUS_WRITE_ERROR=1))
    assert run.returncode == 0, run.output[-3000:]
    assert [line for line in run.lines if line.startswith("⚠️ WARNING: cannot write")] == [
        "⚠️ WARNING: cannot write status.json (No space left on device): training continues without status updates"]
    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert not (out / "status.json").exists()


def test_resuming_with_another_learning_rate_is_exit_1_listing_the_change(smoke_run, tmp_path):
    out = copy_run(smoke_run[0], tmp_path / "changed")
    run = run_train(out, "--learning_rate", "5e-4")
    assert run.returncode == 1, run.output[-3000:]
    assert run.verdict == f"❌ ERROR: {out} holds a run started with a different config: learning_rate: 0.001 -> 0.0005"
    assert "already complete" not in run.output


def test_a_finished_run_continues_with_a_warning_when_only_max_steps_grows(smoke_run, tmp_path):
    out = copy_run(smoke_run[0], tmp_path / "longer")
    run = run_train(out, "--max_steps", "22")
    assert run.returncode == 0, run.output[-3000:]
    assert f"⚠️ WARNING: continuing {out} with changed settings: max_steps: 20 -> 22; report_to: ['wandb'] -> []" \
        in run.lines
    assert read_json(out / "final" / "trainer_state.json")["global_step"] == 22
    assert read_json(out / "run_fingerprint.json")["length"]["max_steps"] == 22


def finite(checkpoint) -> bool:
    weights = load_file(checkpoint / "adapter_model.safetensors")
    return all(math.isfinite(v) for t in weights.values() for v in t.flatten().tolist())


def test_an_infinite_gradient_with_a_finite_loss_stops_with_exit_3_before_any_nan_is_saved(runs_dir):
    out = runs_dir / "inf-grad"
    run = run_train(out, "--max_steps", "8", "--save_steps", "2", env=base_env(TRAINKIT_FAULT_INF_GRAD_AT_STEP=4))
    assert run.returncode == 3, run.output[-3000:]
    assert run.verdict == (
        "❌ ERROR: gradients became non-finite (norm nan) at step 4: training diverged; "
        "last good state saved in checkpoint-3"
    )
    assert read_json(out / "status.json")["state"] == "diverged"
    saved = checkpoints.checkpoint_dirs(out)
    assert [c.step for c in saved] == [3, 2]
    assert all(finite(c.path) for c in saved)


def test_an_argument_the_trainer_refuses_is_exit_1_with_the_library_message(tmp_path):
    out = tmp_path / "out"
    run = run_train(out, "--max_steps", "4", "--padding_free", "true")
    assert run.returncode == 1, run.output[-3000:]
    assert run.verdict.startswith("❌ ERROR: the trainer refused this configuration: ValueError: When "
                                  "`padding_free=True` without packing, `max_length` is not enforced")
    assert "Traceback (most recent call last)" in (out / "trainkit.log").read_text()
    assert read_json(out / "resume_metadata.json")["clean_exit"] is True, "an input error is not a crash"


def test_a_crash_before_the_first_step_counts_toward_the_crash_loop_limit(tmp_path):
    out = tmp_path / "out"
    env = base_env(TRAINKIT_FAULT_CRASH_AT_STEP=0)
    codes = [run_train(out, "--max_steps", "4", "--crash_loop_limit", "2", env=env).returncode for _ in range(3)]
    assert codes == [70, 70, 2]


def test_non_finite_weights_are_never_saved_and_the_newest_periodic_checkpoint_is_named(tmp_path):
    out = tmp_path / "nan-weights"
    run = run_train(out, "--max_steps", "8", "--save_steps", "2", env=base_env(TRAINKIT_FAULT_NAN_WEIGHTS_AT_STEP=4))
    assert run.returncode == 3, run.output[-3000:]
    assert run.verdict.startswith("❌ ERROR: trainable weights became non-finite (")
    assert run.verdict.endswith(") at step 4: training diverged; the weights are no longer finite, so no checkpoint "
                                "was saved: the newest periodic checkpoint is checkpoint-2")
    assert [c.step for c in checkpoints.checkpoint_dirs(out)] == [2]
    assert finite(out / "checkpoint-2")
