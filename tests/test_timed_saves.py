"""save_every_minutes: a checkpoint by wall-clock time, whatever save_steps says."""

from __future__ import annotations

from transformers import TrainerControl, TrainerState, TrainingArguments

from conftest import run_train
from trainkit.train.timed_saves import TimedSaveCallback


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def step_end(callback) -> bool:
    control = TrainerControl()
    callback.on_step_end(TrainingArguments(output_dir="unused"), TrainerState(), control)
    return control.should_save


def test_a_save_is_asked_for_once_the_minutes_have_passed_since_the_start():
    clock = FakeClock()
    callback = TimedSaveCallback(minutes=15, clock=clock)
    callback.on_train_begin(None, None, None)
    clock.now += 14 * 60
    assert not step_end(callback)
    clock.now += 60
    assert step_end(callback)


def test_the_timer_restarts_at_every_save_including_step_based_ones():
    clock = FakeClock()
    callback = TimedSaveCallback(minutes=15, clock=clock)
    callback.on_train_begin(None, None, None)
    clock.now += 10 * 60
    callback.on_save(None, None, None)  # a save_steps checkpoint
    clock.now += 10 * 60
    assert not step_end(callback)
    clock.now += 5 * 60
    assert step_end(callback)


def test_zero_minutes_turns_timed_saves_off():
    clock = FakeClock()
    callback = TimedSaveCallback(minutes=0, clock=clock)
    callback.on_train_begin(None, None, None)
    clock.now += 10**6
    assert not step_end(callback)


def test_a_run_with_a_tiny_save_every_minutes_checkpoints_every_step(tmp_path):
    out = tmp_path / "timed"
    run = run_train(out, "--max_steps", "3", "--save_steps", "1000", "--save_every_minutes", "0.0001")
    assert run.returncode == 0, run.output[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


def test_a_negative_save_every_minutes_is_an_input_error(tmp_path):
    run = run_train(tmp_path / "neg", "--save_every_minutes", "-1")
    assert run.returncode == 1
    assert run.verdict == "❌ ERROR: save_every_minutes must be 0 (off) or more"
