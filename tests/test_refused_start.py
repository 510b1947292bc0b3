"""A start refused before it touched the run harms nothing: status.json stays as the last real run left it (the
refusal is the command's output, exit code and a `refused` event), and re-running the command that trained a run
is never a refusal, also after --more_steps extended it."""

from __future__ import annotations

import json

import pytest

from conftest import base_env, copy_run, read_json, run_train
from trainkit.core.status import EVENTS_FILE
from trainkit.supervise.supervision import assess, observe

SHORT = ("--max_steps", "3", "--save_steps", "2")


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    """A finished 3-step run (in-process: cheaper than the shared 20-step smoke run)."""
    out = tmp_path_factory.mktemp("refused") / "done"
    run = run_train(out, *SHORT)
    assert run.returncode == 0, run.output[-3000:]
    return out


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory):
    """A run that crashed at step 3 of 4, with checkpoint-2."""
    out = tmp_path_factory.mktemp("refused") / "crashed"
    run = run_train(out, "--max_steps", "4", "--save_steps", "2", env=base_env(TRAINKIT_FAULT_CRASH_AT_STEP=3))
    assert run.returncode == 70, run.output[-3000:]
    return out


def events(out):
    return [json.loads(line) for line in (out / EVENTS_FILE).read_text().splitlines()]


def test_a_refused_start_leaves_a_completed_runs_status_and_resume_state_as_they_were(completed, tmp_path):
    out = copy_run(completed, tmp_path / "done")
    before = {name: (out / name).read_bytes() for name in ("status.json", "resume_metadata.json")}
    run = run_train(out, *SHORT, "--learning_rate", "5e-4")
    assert run.returncode == 1, run.output[-3000:]
    assert run.verdict.startswith(f"❌ ERROR: {out} holds a run started with a different config: learning_rate: ")
    assert "add --learning_rate 0.001 to the command" in run.output
    assert {name: (out / name).read_bytes() for name in before} == before
    refused = [e for e in events(out) if e["event"] == "refused"]
    assert len(refused) == 1 and "learning_rate" in refused[0]["message"]
    assert assess(observe(out)).state == "completed"


def test_more_steps_on_an_unfinished_run_is_refused_and_the_run_keeps_its_verdict(unfinished, tmp_path):
    out = copy_run(unfinished, tmp_path / "unfinished")
    before = (out / "status.json").read_bytes()
    verdict = assess(observe(out))
    run = run_train(out, "--max_steps", "4", "--save_steps", "2", "--more_steps", "5")
    assert run.returncode == 1, run.output[-3000:]
    assert "has no final/ adapter yet" in run.verdict
    assert (out / "status.json").read_bytes() == before
    assert (assess(observe(out)).state, assess(observe(out)).exit_code) == (verdict.state, verdict.exit_code)


def test_re_running_the_command_that_trained_a_run_after_more_steps_is_already_complete(completed, tmp_path):
    out = copy_run(completed, tmp_path / "extended")
    extended = run_train(out, *SHORT, "--more_steps", "2")
    assert extended.returncode == 0, extended.output[-3000:]
    assert read_json(out / "final" / "trainer_state.json")["global_step"] == 5
    again = run_train(out, *SHORT)
    assert again.returncode == 0, again.output[-3000:]
    assert again.verdict == f"✅ SUCCESS: training already complete: step 5, adapter in {out / 'final'}"
    assert read_json(out / "run_fingerprint.json")["length"]["max_steps"] == 5
    assert read_json(out / "run_fingerprint.json")["length"]["earlier_max_steps"] == [3]
