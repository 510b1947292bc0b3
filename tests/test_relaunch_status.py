"""A relaunch shows where the run is, not a reset: through `starting` status.json keeps the last known step and
max_steps, and the run's elapsed time counts across launches (the launch's own beside it)."""

from __future__ import annotations

from conftest import base_env, read_json, run_train
from trainkit.train.launch import Claim


def test_a_relaunch_starts_at_the_runs_last_step_and_length_and_keeps_its_clock(tmp_path):
    out = tmp_path / "relaunch"
    crashed = run_train(out, "--max_steps", "4", "--save_steps", "2", env=base_env(TRAINKIT_FAULT_CRASH_AT_STEP=3))
    assert crashed.returncode == 70, crashed.output[-3000:]
    before = read_json(out / "status.json")
    claim = Claim()
    try:
        claim.take(out)
        starting = read_json(out / "status.json")
    finally:
        claim.release()
    assert (starting["state"], starting["step"], starting["max_steps"]) == ("starting", before["step"], 4)
    assert starting["run_started_at"] == before["run_started_at"]
    resumed = run_train(out, "--max_steps", "4", "--save_steps", "2")
    assert resumed.returncode == 0, resumed.output[-3000:]
    done = read_json(out / "status.json")
    assert done["run_started_at"] == before["run_started_at"]
    assert done["elapsed_seconds"] > done["launch_elapsed_seconds"]


def test_a_run_trained_from_its_beginning_gets_a_new_clock(tmp_path):
    out = tmp_path / "fresh"
    (out).mkdir()
    (out / "status.json").write_text('{"state": "failed", "step": 3, "max_steps": 9, '
                                     '"run_started_at": "2020-01-01T00:00:00+00:00"}')
    run = run_train(out, "--max_steps", "2")
    assert run.returncode == 0, run.output[-3000:]
    status = read_json(out / "status.json")
    assert status["run_started_at"] > "2026" and status["elapsed_seconds"] < 3600
