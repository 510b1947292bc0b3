"""A sustained drop in tokens/s is one WARNING and a `slow` event; noise, evaluations and saves are not."""

from __future__ import annotations

import json
from types import SimpleNamespace

import jsonschema

from conftest import ROOT
from trainkit.core.signals import StopRequest
from trainkit.core.status import EVENTS_FILE, RunStatus
from trainkit.train import callbacks
from trainkit.train.callbacks import TrainkitCallback
from trainkit.train.faults import Faults
from trainkit.train.throughput import ThroughputWatch


def watch(values, seconds=120.0, clean=None):
    """Feed intervals of `seconds` each; what observe() said after each."""
    w = ThroughputWatch()
    clean = clean or [True] * len(values)
    said, t = [], 0.0
    for value, ok in zip(values, clean, strict=True):
        said.append(w.observe(value, since=t, now=t + seconds, clean=ok))
        t += seconds
    return w, said


def test_steady_throughput_with_noise_never_warns():
    _, said = watch([1000, 1100, 950, 1050, 900, 1000, 1080, 960, 1010, 940] * 3)
    assert not any(said)


def test_under_half_the_median_for_ten_minutes_warns_once_with_the_figures():
    w, said = watch([1000, 1000, 1000, 1000] + [400] * 8)  # 2-minute intervals: the 5th slow one ends minute 10
    assert [i for i, s in enumerate(said) if s] == [8]
    assert said[8] == "throughput fell to 400 tokens/s, under half the run's median of 1,000, for 10 min"
    assert w.baseline == 1000, "the slow stretch does not drag the median down"


def test_a_dip_shorter_than_ten_minutes_is_not_sustained():
    _, said = watch([1000, 1000, 1000] + [400] * 4 + [1000] + [400] * 4 + [1000])
    assert not any(said)


def test_a_drop_to_sixty_percent_is_not_under_half():
    _, said = watch([1000, 1000, 1000] + [600] * 20)
    assert not any(said)


def test_a_recovery_re_arms_the_warning():
    _, said = watch([1000] * 3 + [400] * 5 + [1000] * 2 + [400] * 5)
    assert [i for i, s in enumerate(said) if s] == [7, 14]


def test_intervals_with_an_evaluation_or_a_save_neither_start_nor_end_a_slow_stretch():
    values = [1000, 1000, 1000, 100, 1000, 100, 1000]
    clean = [True, True, True, False, True, False, True]
    _, said = watch(values, seconds=600, clean=clean)
    assert not any(said)
    _, said = watch([1000, 1000, 1000, 400, 1000, 400], seconds=300, clean=[True] * 4 + [False] + [True])
    assert [i for i, s in enumerate(said) if s] == [5], "the save in the middle does not reset the stretch"


def test_the_callback_warns_and_records_a_slow_event_when_the_steps_slow_down(tmp_path, monkeypatch):
    status = RunStatus(tmp_path)
    warnings = []
    callback = TrainkitCallback(status, StopRequest(), "TRAINING-CPU", Faults(), lambda m, h=None: warnings.append(m),
                                verbose=False)
    clock = [0.0]
    monkeypatch.setattr(callbacks.time, "time", lambda: clock[0])
    monkeypatch.setattr(callbacks, "memory_figures", lambda: {})
    monkeypatch.setattr(callbacks, "device_figures", lambda: {})
    state = SimpleNamespace(global_step=0, max_steps=100, epoch=0.0)
    callback.on_train_begin(None, state, None)
    tokens = 0
    # 100-second logging intervals of 100,000 tokens, then 300-second ones: a third of the speed.
    for step, seconds in enumerate([100] * 5 + [300] * 3, 1):
        clock[0] += seconds
        tokens += 100_000
        state.global_step = step
        if step == 2:
            callback.on_save(SimpleNamespace(output_dir=str(tmp_path)), state, None)
        callback.on_log(None, state, None, logs={"loss": 1.0, "num_tokens": float(tokens), "learning_rate": 1e-3})
    assert warnings == ["throughput fell to 333 tokens/s, under half the run's median of 1,000, for 10 min: the "
                        "machine is throttling or busy"]
    events = [json.loads(line) for line in (tmp_path / EVENTS_FILE).read_text().splitlines()]
    slow = [e for e in events if e["event"] == "slow"]
    assert len(slow) == 1 and slow[0]["tokens_per_second"] == 333.3 and slow[0]["baseline_tokens_per_second"] == 1000
    schema = json.loads((ROOT / "docs" / "events.schema.json").read_text())
    for event in events:
        jsonschema.validate(event, schema)
