"""Out of room mid-run: a full disk or an out-of-memory step gets one clear verdict (exit 1), and nothing is lost."""

from __future__ import annotations

import errno
import json
import time

import pytest

from conftest import base_env, read_json, run_train
from trainkit.core.errors import log_traceback
from trainkit.supervise import supervision
from trainkit.train import checkpoints
from trainkit.train.out_of_room import (
    Context,
    DiskFull,
    OutOfMemory,
    classify,
    full_disk_error,
    is_out_of_memory,
    lever,
)

BACKENDS = {"torch": (), "mlx": ("--backend", "mlx")}
RUN = ("--max_steps", "8", "--save_steps", "3")


def backend_args(name: str) -> tuple[str, ...]:
    if name == "mlx":
        pytest.importorskip("mlx_lm", reason="MLX is pinned for Linux and macOS; make setup installs it")
    return BACKENDS[name]


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("❌ ERROR:")]


def events(out) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_full_disk_at_a_save_is_exit_1_the_half_written_checkpoint_goes_and_the_rerun_resumes(backend, tmp_path):
    out = tmp_path / "out"
    run = run_train(out, *RUN, *backend_args(backend), env=base_env(TRAINKIT_FAULT_ENOSPC_AT_SAVE=6))
    assert run.returncode == 1, run.output[-3000:]
    [error] = errors(run.output)
    assert run.verdict == error
    assert error.startswith(f"❌ ERROR: the disk is full: writing {out}/checkpoint-6/")
    assert "free, the next save needs ~" in error
    assert "the newest complete checkpoint, checkpoint-3, is untouched" in error
    assert "then re-run the same command: it resumes from checkpoint-3" in run.output
    assert not (out / "checkpoint-6").exists()
    assert [c.step for c in checkpoints.checkpoint_dirs(out)] == [3]
    assert checkpoints.newest_valid(out).step == 3
    status = read_json(out / "status.json")
    assert (status["state"], status["exit_code"]) == ("failed", 1)
    assert status["message"].startswith("the disk is full")
    assert events(out)[-1]["failure"] == "disk_full"

    again = run_train(out, *RUN, *backend_args(backend))
    assert again.returncode == 0, again.output[-3000:]
    assert "Found checkpoint at step 3" in again.output or "resuming from checkpoint-3" in again.output.lower()
    assert (out / "final" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_out_of_memory_step_is_exit_1_naming_the_batch_the_peak_and_the_lever(backend, tmp_path):
    out = tmp_path / "out"
    run = run_train(out, *RUN, *backend_args(backend), env=base_env(TRAINKIT_FAULT_OOM_AT_STEP=5))
    assert run.returncode == 1, run.output[-3000:]
    [error] = errors(run.output)
    device = "mlx" if backend == "mlx" else "cpu"
    assert error.startswith(f"❌ ERROR: out of memory on {device} at step 5: a micro-batch of ")
    assert " (rows x tokens) did not fit; peak " in error and " measured against the preflight's estimate of " in error
    hint = run.output.splitlines()[-1]
    # The smoke config trains without recomputation, but the memory model credits halving the batch more.
    assert "per_device_train_batch_size: 2, gradient_accumulation_steps: 2" in hint, hint
    assert "(the estimate: " in hint
    assert read_json(out / "status.json")["exit_code"] == 1
    assert events(out)[-1]["failure"] == "out_of_memory"
    assert checkpoints.newest_valid(out).step == 3


def test_oom_retry_with_checkpointing_exits_70_and_the_next_start_recomputes_activations(tmp_path):
    out = tmp_path / "out"
    env = base_env(TRAINKIT_FAULT_OOM_AT_STEP=5, TRAINKIT_FAULT_ONCE=tmp_path / "fired")
    args = (*RUN, "--oom_retry_with_checkpointing", "true")
    run = run_train(out, *args, env=env)
    assert run.returncode == 70, run.output[-3000:]
    assert "the next start (the supervisor's relaunch, or the same command by hand) turns activation_checkpointing" \
           in run.output
    again = run_train(out, *args, env=env)
    assert again.returncode == 0, again.output[-3000:]
    assert "⚠️ WARNING: activation_checkpointing turned on: step 5 ran out of memory without it " \
           "(oom_retry_with_checkpointing)" in again.output
    assert "activation checkpointing)" in again.output  # the preflight's duration line counts the recompute


def test_the_low_space_warning_comes_once_before_the_save_that_would_not_fit(tmp_path):
    out = tmp_path / "out"
    # A checkpoint of the smoke run is ~370 KB: 500 KB free holds one more save, not two.
    run = run_train(out, *RUN, env=base_env(TRAINKIT_FAULT_DISK_FREE_BYTES=500_000))
    assert run.returncode == 0, run.output[-3000:]
    lines = run.output.splitlines()
    [warning] = [i for i, line in enumerate(lines) if line.startswith("⚠️ WARNING: low disk space: ")]
    saved = lines.index(f"[TRAINING-CPU] checkpoint saved: {out}/checkpoint-6")
    assert warning < saved
    assert "fewer than 2 more saves fit (step 6)" in lines[warning]
    [low] = [e for e in events(out) if e["event"] == "disk_low"]
    assert low["free_bytes"] == 500_000 and low["next_save_bytes"] > 300_000


def test_a_crash_whose_log_cannot_be_written_still_prints_its_verdict(tmp_path):
    log = tmp_path / "train.log"
    log.mkdir()  # its folder is writable, so the preflight passes; appending to it fails as a full disk would
    env = base_env(TRAINKIT_FAULT_CRASH_AT_STEP=2, TRAINKIT_LOG_FILE=log)
    run = run_train(tmp_path / "out", "--max_steps", "4", env=env)
    assert run.returncode == 70, run.output[-2000:]
    assert run.verdict.startswith("❌ ERROR: training crashed: InjectedCrash: injected crash at step 2")
    assert f"the traceback could not be written to {log}; re-run the same command" in run.output
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        assert log_traceback(log, "context") is False


@pytest.mark.parametrize("make", [
    lambda: OSError(errno.ENOSPC, "No space left on device", "/x/checkpoint-6/optimizer.pt"),
    lambda: OSError(errno.EDQUOT, "Disk quota exceeded"),
    lambda: RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                         'left on device" })'),
    lambda: RuntimeError("wrapped") if False else _chained(OSError(errno.ENOSPC, "No space left on device")),
])
def test_a_full_disk_is_found_however_the_library_raises_it(make, tmp_path):
    error = make()
    assert full_disk_error(error) is not None
    assert isinstance(classify(error, Context(output_dir=tmp_path)), DiskFull)


def _chained(cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except OSError as exc:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize("text", [
    "CUDA out of memory. Tried to allocate 2.00 GiB",
    "MPS backend out of memory (MPS allocated: 17.80 GB)",
    "[metal::malloc] Unable to allocate 8589934592 bytes.",
    "[METAL] Command buffer execution failed: Insufficient Memory (00000008:kIOGPUCommandBufferCallbackError)",
])
def test_out_of_memory_is_found_on_cuda_mps_and_metal_and_nothing_else_is(text, tmp_path):
    import torch

    assert is_out_of_memory(RuntimeError(text))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert isinstance(classify(RuntimeError(text), Context(output_dir=tmp_path)), OutOfMemory)
    assert classify(ValueError("shapes do not match"), Context(output_dir=tmp_path)) is None
    assert not is_out_of_memory(RuntimeError("expected scalar type Float"))


class Estimate:
    """A memory model whose levers cut by the given shares."""

    def __init__(self, cuts: dict, total: int = 10 * 2**30):
        self.cuts, self.total = cuts, total

    def with_settings(self, **changes):
        (key,) = changes
        return Estimate(self.cuts, int(self.total * (1 - self.cuts.get(key, 0.0))))


class Sft:
    per_device_train_batch_size, gradient_accumulation_steps, max_length = 8, 2, 2048
    activation_checkpointing = False


def test_the_lever_is_the_cheapest_the_memory_model_credits_with_a_real_cut(tmp_path):
    def chosen(cuts, **sft):
        args = Sft()
        for key, value in sft.items():
            setattr(args, key, value)
        return lever(Context(output_dir=tmp_path, sft=args, estimate=Estimate(cuts)))

    assert chosen({"activation_checkpointing": 0.4, "batch_size": 0.3}).startswith("set activation_checkpointing: true")
    assert chosen({"activation_checkpointing": 0.02, "batch_size": 0.3}).startswith(
        "halve the micro-batch and keep the effective batch: per_device_train_batch_size: 4, "
        "gradient_accumulation_steps: 4")
    assert chosen({"max_length": 0.3}, activation_checkpointing=True, per_device_train_batch_size=1).startswith(
        "lower max_length to 1024")
    assert chosen({"load_in_4bit": 0.5}, activation_checkpointing=True, per_device_train_batch_size=1,
                  max_length=256).startswith("set load_in_4bit: true")


def test_a_verdict_that_status_json_could_not_take_is_reported_from_the_supervisors_record(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "status.json").write_text(json.dumps({"state": "running", "step": 4, "start_step": 0, "pid": 999999}))
    time.sleep(0.01)
    supervision.write_exit_record(out, 1, "launch-1")
    seen = supervision.assess(supervision.observe(out))
    assert (seen.state, seen.exit_code) == ("failed", 1)
    assert "status.json could not be updated (it still says running)" in seen.reason
