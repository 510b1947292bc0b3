"""train.py --more_steps: a finished run continues with its optimizer state and a new learning-rate segment."""

from __future__ import annotations

from conftest import read_json, run_train


def learning_rates(out):
    state = read_json(out / "final" / "trainer_state.json")
    return {e["step"]: e["learning_rate"] for e in state["log_history"] if "learning_rate" in e}


def test_more_steps_continues_a_finished_run_from_its_last_checkpoint_with_a_new_cosine_segment(tmp_path):
    out = tmp_path / "run"
    first = run_train(out, "--max_steps", "4", "--save_steps", "2")
    assert first.returncode == 0, first.output
    before = learning_rates(out)
    more = run_train(out, "--max_steps", "4", "--save_steps", "2", "--more_steps", "4")
    assert more.returncode == 0, more.output
    assert "⚠️ RESUME: Found checkpoint at step 4. Resuming training." in more.output
    assert "[CONTINUE] steps 4 -> 8 (+4); learning rate: new segment: linear warmup from 0 to learning_rate, " \
           "then cosine to 0 at the new max_steps (warmup 0 steps)" in more.output
    assert read_json(out / "final" / "trainer_state.json")["global_step"] == 8
    lrs = learning_rates(out)
    assert lrs[4] == before[4]  # the first run's history is kept as it was
    assert lrs[5] == 1e-3  # no warmup at 4 extra steps: the segment starts at learning_rate ...
    assert lrs[5] > lrs[6] > lrs[7] > lrs[8] > 0  # ... and decays with a cosine
    metadata = read_json(out / "resume_metadata.json")
    assert metadata["continuation"]["from_step"] == 4 and metadata["continuation"]["max_steps"] == 8
    status = read_json(out / "status.json")
    assert status["state"] == "completed" and status["continuation"]["max_steps"] == 8


def test_more_steps_on_a_run_that_never_finished_is_an_input_error(crashed_at_step_5, tmp_path):
    from conftest import copy_run

    out = copy_run(crashed_at_step_5[0], tmp_path / "crashed")
    run = run_train(out, "--max_steps", "8", "--more_steps", "4")
    assert run.returncode == 1
    assert run.verdict.startswith(f"❌ ERROR: --more_steps continues a finished run, and {out} has no final/")


def test_a_crashed_continuation_resumes_the_same_segment_and_a_new_one_counts_from_the_final_step(tmp_path):
    import json

    from trainkit.train.continuation import Continuation, plan, record

    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "trainer_state.json").write_text(json.dumps({"global_step": 100}))
    first = plan(tmp_path, 50, warmup_steps=20)
    assert (first.from_step, first.max_steps, first.warmup_steps) == (100, 150, 5)  # warmup at most a tenth
    record(tmp_path, first)
    assert plan(tmp_path, 50, warmup_steps=20) == first  # the supervisor re-running the same command
    assert plan(tmp_path, 80, warmup_steps=20).max_steps == 180  # another N is another segment
    segment = Continuation(100, 50, 5)
    assert segment.factor(100) < segment.factor(104) <= 1.0  # warming up
    assert segment.factor(105) == 1.0 and segment.factor(150) == 0.0  # peak, then cosine down to zero
