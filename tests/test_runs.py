"""scripts/runs.py: every run under outputs/ at a glance, and one stopped cleanly with a checkpoint."""

from __future__ import annotations

import json
import os

from conftest import ROOT, base_env, copy_run, finish, load_script, read_json, start_train, wait_for

RUNS = load_script("runs").main


def test_list_shows_every_run_with_its_state_and_a_dead_one_as_dead(crashed_at_step_5, tmp_path, capfd):
    root = tmp_path / "outputs"
    copy_run(crashed_at_step_5[0], root / "crashed")
    ghost = root / "ghost"
    ghost.mkdir(parents=True)
    status = {"state": "running", "step": 7, "max_steps": 40, "loss": 1.25, "pid": 2**22 + 7, "eta_seconds": 60,
              "last_checkpoint": str(ghost / "checkpoint-5"), "wandb_url": "https://wandb.ai/x/y/runs/z"}
    (ghost / "status.json").write_text(json.dumps(status))
    assert RUNS(["list", "--root", str(root), "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capfd.readouterr().out)}
    assert listed["crashed"]["state"] == "failed" and listed["crashed"]["last_checkpoint"] == "checkpoint-4"
    assert listed["ghost"]["state"] == "dead" and listed["ghost"]["eta_seconds"] is None
    assert RUNS(["list", "--root", str(root)]) == 0
    lines = capfd.readouterr().out.splitlines()
    ghost_line = next(line for line in lines if line.startswith("ghost"))
    assert ghost_line.split()[:4] == ["ghost", "dead", "step", "7/40"]
    assert ghost_line.endswith("https://wandb.ai/x/y/runs/z")
    # Under a run it was launched for: the config file, and whether it changed since.
    assert lines[lines.index(next(line for line in lines if line.startswith("crashed"))) + 1].split() == \
        ["config", str(ROOT / "configs/smoke.yaml"), "(unchanged", "since", "launch)"]
    assert lines[-1] == f"✅ SUCCESS: 2 run(s) under {root}"


def test_stop_makes_the_trainer_checkpoint_and_exit_75(tmp_path, capfd):
    root = tmp_path / "outputs"
    out = root / "long"
    root.mkdir()
    proc, log = start_train(out, "--max_steps", "200", env=base_env(TRAINKIT_FAULT_STEP_DELAY=0.3))
    wait_for(lambda: (read_json(out / "status.json") if (out / "status.json").exists() else {}).get("step", 0) >= 2,
             proc, what="step 2")
    assert RUNS(["stop", "long", "--root", str(root), "--timeout", "120"]) == 0
    said = capfd.readouterr().out
    assert f"[RUNS] SIGTERM sent to process group {proc.pid}" in said
    run = finish(proc, log)
    assert run.returncode == 75
    assert read_json(out / "status.json")["state"] == "interrupted"
    assert any(p.name.startswith("checkpoint-") for p in out.iterdir())
    assert "✅ SUCCESS: stopped long at step" in said


def test_stop_on_a_run_that_is_not_training_is_an_input_error(tmp_path, capfd):
    (tmp_path / "idle").mkdir()
    (tmp_path / "idle" / "status.json").write_text(json.dumps({"state": "completed", "pid": os.getpid()}))
    assert RUNS(["stop", "idle", "--root", str(tmp_path)]) == 1
    assert "❌ ERROR: nothing is training on" in capfd.readouterr().out
