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


def watch(values, clean=None):
    w = ThroughputWatch()
    clean = clean or [True] * len(values)
    return w, [w.observe(v, c) for v, c in zip(values, clean, strict=True)]


def test_steady_throughput_with_noise_never_warns():
    _, said = watch([1000, 1100, 950, 1050, 900, 1000, 1080, 960, 1010, 940])
    assert not any(said)


def test_three_slow_intervals_in_a_row_warn_once_with_the_figures():
    w, said = watch([1000, 1000, 1000, 1000, 500, 480, 450, 460, 470])
    assert said[:6] == [None] * 6 and said[7:] == [None, None]
    assert said[6] == "throughput fell to 450 tokens/s from 1,000 (-55%) over the last 3 logging intervals"


def test_a_recovery_re_arms_the_warning():
    _, said = watch([1000, 1000, 1000, 500, 500, 500, 1000, 1000, 500, 500, 500])
    assert [i for i, s in enumerate(said) if s] == [5, 10]


def test_two_slow_intervals_are_not_yet_sustained():
    _, said = watch([1000, 1000, 1000, 500, 500, 1000, 500, 500, 1000])
    assert not any(said)


def test_intervals_with_an_evaluation_or_a_save_do_not_count():
    values = [1000, 1000, 1000, 200, 1000, 200, 1000, 200, 1000]
    clean = [True, True, True, False, True, False, True, False, True]
    _, said = watch(values, clean)
    assert not any(said)


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
    for step, seconds in enumerate([1, 1, 1, 1, 1, 3, 3, 3], 1):
        clock[0] += seconds
        tokens += 1000
        state.global_step = step
        if step == 5:
            callback.on_save(SimpleNamespace(output_dir=str(tmp_path)), state, None)
        callback.on_log(None, state, None, logs={"loss": 1.0, "num_tokens": float(tokens), "learning_rate": 1e-3})
    assert warnings == ["throughput fell to 333 tokens/s from 1,000 (-67%) over the last 3 logging intervals: "
                        "the machine is throttling or busy"]
    events = [json.loads(line) for line in (tmp_path / EVENTS_FILE).read_text().splitlines()]
    slow = [e for e in events if e["event"] == "slow"]
    assert len(slow) == 1 and slow[0]["tokens_per_second"] == 333.3 and slow[0]["baseline_tokens_per_second"] == 1000
    schema = json.loads((ROOT / "docs" / "events.schema.json").read_text())
    for event in events:
        jsonschema.validate(event, schema)
