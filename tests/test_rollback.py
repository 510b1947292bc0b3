"""scripts/rollback.py: a run returns to an earlier checkpoint, nothing is deleted, and the next start resumes there."""

from __future__ import annotations

import json

from conftest import copy_run, load_script, read_json, run_train
from trainkit.supervise import runs

ROLLBACK = load_script("rollback").main


def events(out):
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def test_a_rollback_moves_newer_checkpoints_aside_records_itself_and_the_next_start_resumes_there(
        crashed_at_step_5, tmp_path, capfd):
    out = copy_run(crashed_at_step_5[0], tmp_path / "run")
    assert ROLLBACK(["--output-dir", str(out), "--to-step", "2"]) == 0
    said = capfd.readouterr().out
    assert said.splitlines()[-1] == f"✅ SUCCESS: rolled back {out} to checkpoint-2: the next start resumes from step 2"
    (moved_into,) = (out / "rolled_back").iterdir()
    assert (moved_into / "checkpoint-4" / "adapter_model.safetensors").is_file()
    assert not (out / "checkpoint-4").exists()
    metadata = read_json(out / "resume_metadata.json")
    assert metadata["resume_count"] == 0 and metadata["last_step"] == 2
    assert metadata["rollbacks"][-1]["moved"] == ["checkpoint-4"]
    last = events(out)[-1]
    assert last["event"] == "rollback" and last["step"] == 2 and last["into"] == str(moved_into)
    assert read_json(out / "status.json")["state"] == "interrupted"

    run = run_train(out, "--max_steps", "8", "--save_steps", "2")
    assert run.returncode == 0, run.output
    assert "⚠️ RESUME: Found checkpoint at step 2. Resuming training." in run.output


def test_a_rollback_is_refused_while_a_trainer_runs_on_the_directory(crashed_at_step_5, tmp_path, capfd, monkeypatch):
    out = copy_run(crashed_at_step_5[0], tmp_path / "run")
    monkeypatch.setattr(runs, "live_owner", lambda d: {"pid": 4242, "session": "weatherman-training", "log": None})
    assert ROLLBACK(["--output-dir", str(out), "--to-step", "2"]) == 1
    said = capfd.readouterr().out
    assert f"❌ ERROR: a trainer is running on {out} (tmux session weatherman-training, pid 4242)" in said
    assert (out / "checkpoint-4").is_dir() and not (out / "rolled_back").exists()


def test_a_rollback_to_a_checkpoint_that_is_not_there_names_the_ones_that_are(crashed_at_step_5, tmp_path, capfd):
    out = copy_run(crashed_at_step_5[0], tmp_path / "run")
    assert ROLLBACK(["--output-dir", str(out), "--to-checkpoint", "checkpoint-3"]) == 1
    said = capfd.readouterr().out
    assert f"❌ ERROR: no checkpoint-3 in {out} (checkpoints: checkpoint-2, checkpoint-4)" in said


def test_rolling_back_a_finished_run_moves_its_final_adapter_aside_too(crashed_at_step_5, tmp_path, capfd):
    out = copy_run(crashed_at_step_5[0], tmp_path / "run")
    (out / "final").mkdir()
    (out / "final" / "adapter_model.safetensors").write_bytes(b"x")
    assert ROLLBACK(["--output-dir", str(out), "--to-checkpoint", str(out / "checkpoint-4")]) == 0
    (moved_into,) = (out / "rolled_back").iterdir()
    assert sorted(p.name for p in moved_into.iterdir()) == ["final"]
    assert "[ROLLBACK] moved final to" in capfd.readouterr().out
