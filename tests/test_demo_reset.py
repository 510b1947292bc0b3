"""`make demo` removes only the run it made itself in outputs/smoke; anything else is kept, and said where."""

from __future__ import annotations

import os
import time

import pytest

from trainkit.core.lock import RunLock
from trainkit.supervise import demo


@pytest.fixture
def out(tmp_path):
    return tmp_path / "outputs" / "smoke"


def demo_run(out):
    """What the demo leaves: its marker, a checkpoint and a final adapter, then the marker touched by finish."""
    demo.prepare(out)
    (out / "checkpoint-20").mkdir()
    (out / "checkpoint-20" / "trainer_state.json").write_text("{}")
    (out / "final").mkdir()
    (out / "final" / "adapter_model.safetensors").write_text("x")
    past = time.time() - 60
    for path in out.rglob("*"):
        os.utime(path, (past, past))
    demo.finish(out)


def test_an_empty_place_is_made_and_marked(out, capsys):
    assert demo.prepare(out) == "fresh"
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER]
    assert capsys.readouterr().out == ""


def test_the_demos_own_completed_run_is_removed(out, capsys):
    demo_run(out)
    assert demo.prepare(out) == "removed"
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER]
    assert f"[DEMO] removed the previous demo run in {out}" in capsys.readouterr().out


def test_a_run_the_user_trained_there_is_moved_aside_with_a_warning_never_deleted(out, capsys):
    (out / "checkpoint-500").mkdir(parents=True)
    (out / "checkpoint-500" / "adapter_model.safetensors").write_text("weeks of work")
    assert demo.prepare(out) == "kept"
    [kept] = [p for p in out.parent.iterdir() if p.name.startswith("smoke.kept-")]
    assert (kept / "checkpoint-500" / "adapter_model.safetensors").read_text() == "weeks of work"
    text = capsys.readouterr().out
    assert f"⚠️ WARNING: {out} holds a run make demo did not make (or one trained further): kept it as {kept}" in text
    assert sorted(p.name for p in out.iterdir()) == [demo.MARKER]


def test_the_demos_run_trained_further_by_the_user_is_kept_too(out, capsys):
    demo_run(out)
    (out / "checkpoint-40").mkdir()
    (out / "checkpoint-40" / "trainer_state.json").write_text("{}")  # written after the demo finished
    assert demo.prepare(out) == "kept"
    assert any((p / "checkpoint-40").is_dir() for p in out.parent.glob("smoke.kept-*"))


def test_a_demo_run_that_never_finished_is_kept_rather_than_guessed_about(out):
    demo.prepare(out)
    time.sleep(0.01)
    (out / "status.json").write_text("{}")
    assert demo.prepare(out) == "kept"


def test_a_run_whose_trainer_is_alive_is_left_alone(out, capsys):
    out.mkdir(parents=True)
    (out / "status.json").write_text("{}")
    held = RunLock.acquire(out, role="trainer", session="x", log="y")
    try:
        assert demo.prepare(out) == "alive"
    finally:
        held.release()
    assert (out / "status.json").is_file() and not (out / demo.MARKER).exists()
    assert not list(out.parent.glob("smoke.kept-*"))


def test_a_stale_lock_does_not_protect_a_run_from_being_recognised(out):
    demo_run(out)
    lock = out / demo.LOCK
    lock.write_text("pid=999999999\n")
    past = time.time() - 30
    os.utime(lock, (past, past))
    assert demo.prepare(out) == "removed"
