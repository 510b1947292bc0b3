"""The multi-GPU launch's figures: the effective batch over the processes, without training."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from trainkit.core.report import Report
from trainkit.preflight.checks import report_effective_batch


def config(batch: int, accumulation: int):
    return SimpleNamespace(sft=SimpleNamespace(per_device_train_batch_size=batch,
                                               gradient_accumulation_steps=accumulation),
                           trainkit=SimpleNamespace(effective_batch_size=None))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "effective batch: 4 per device x 1 process x 2 accumulation = 8 sequences per optimizer step"),
        ({"TRAINKIT_WORLD_SIZE": "8"},
         "effective batch: 4 per device x 8 processes x 2 accumulation = 64 sequences per optimizer step"),
        ({"TRAINKIT_WORLD_SIZE": "8", "WORLD_SIZE": "2"},
         "effective batch: 4 per device x 2 processes x 2 accumulation = 16 sequences per optimizer step"),
    ],
)
def test_the_preflight_prints_the_effective_batch_over_every_process(monkeypatch, env, expected):
    for name in ("WORLD_SIZE", "TRAINKIT_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    report = Report("PREFLIGHT")
    report_effective_batch(config(4, 2), report)
    [finding] = report.findings
    assert finding.message.startswith(expected)
    assert ("memory estimate is per GPU" in finding.message) == (expected.count("processes") == 1)


@pytest.mark.parametrize(("device", "gpus", "world", "refused"),
                         [("cuda", 8, None, True), ("cuda", 8, "8", False), ("cuda", 1, None, False),
                          ("cpu", 0, None, False)])
def test_one_process_that_sees_several_gpus_is_refused_before_the_model_loads(monkeypatch, device, gpus, world,
                                                                               refused):
    from trainkit.preflight import checks as preflight

    for name in ("WORLD_SIZE", "TRAINKIT_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    if world:
        monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setattr(preflight, "cuda_device_count", lambda: gpus)
    report = Report("PREFLIGHT")
    preflight.check_one_process_per_gpu(SimpleNamespace(device=device), report)
    assert bool(report.errors) == refused
    if refused:
        assert report.errors[0].message == "train.py runs as one process but sees 8 GPUs"
        assert "scripts/train.sh --gpus 8" in report.errors[0].hint
