"""The duration before the first step: computed from FLOPs and the chip, labelled an estimate, never quoted."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT
from trainkit.core.report import Report
from trainkit.preflight import duration


@pytest.mark.parametrize(("chip", "tflops"), [("Apple M4 Max", 18.4), ("Apple M4", 4.3), ("Apple M4 Pro", 9.2),
                                              ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 80GB HBM3", 989.0),
                                              ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L4", 121.0),
                                              ("Tesla T4", None), (None, None)])
def test_a_chips_peak_is_its_longest_matching_name(chip, tflops):
    assert duration.peak_flops(chip) == (None if tflops is None else pytest.approx(tflops * 1e12))


def test_48_m_tokens_of_a_7b_model_take_an_m4_max_far_more_than_12_hours():
    seconds, how = duration.duration_estimate(params=7.62e9, tokens=48e6, device="mlx", chip="Apple M4 Max",
                                              checkpointing=True, load_in_4bit=False)
    at_peak = 48e6 * 6 * 7.62e9 / 18.4e12
    assert at_peak > 12 * 3600  # even the chip's peak cannot do it in 12 h
    assert seconds == pytest.approx(at_peak / duration.SUSTAINED_SHARE["mlx"])
    assert how.startswith("48 M tokens x 45.7 GFLOP/token (6 x 7.62 B parameters, activation checkpointing)")
    assert "35% of the Apple M4 Max's ~18.4 TFLOP/s peak" in how


def test_a_4_bit_base_is_estimated_slower_for_its_dequantisation():
    args = dict(params=7.62e9, tokens=1e6, device="cuda", chip="H100", checkpointing=False)
    bf16, _ = duration.duration_estimate(**args, load_in_4bit=False)
    four, how = duration.duration_estimate(**args, load_in_4bit=True)
    assert four == pytest.approx(bf16 * duration.QLORA_SLOWDOWN) and "for the 4-bit base" in how


def test_on_a_mac_the_chip_comes_from_sysctl(monkeypatch):
    from trainkit.preflight import gpu

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(gpu, "apple_chip", lambda: "Apple M4 Pro")
    assert duration.this_chip("mlx") == duration.this_chip("mps") == "Apple M4 Pro"
    monkeypatch.setattr(sys, "platform", "linux")
    assert duration.this_chip("mlx") is None


def test_the_preflight_prints_the_m4_configs_duration_labelled_an_estimate_with_the_chip_it_assumed(tmp_path):
    from trainkit.config.settings import parse
    from trainkit.preflight.checks import preflight

    config = parse(["--config", str(ROOT / "configs" / "training_config_m4.yaml"), "--output_dir", str(tmp_path)])
    report = Report("PREFLIGHT")
    preflight(config, report, data=False)
    line = next(f.message for f in report.findings if f.message.startswith("duration estimate"))
    assert line.startswith("duration estimate (from FLOPs, not measured): ~")
    assert "for 6,000 steps x 8 sequences x ~512 tokens" in line
    assert "Apple M4 assumed (this is not the machine)" in line
    assert line.endswith("the run prints its measured estimate after 100 steps")


@pytest.mark.parametrize(("seconds", "text"), [(30, "under a minute"), (5400, "~90 min"), (36000, "~10 h"),
                                               (3 * 86400, "~3.0 days")])
def test_an_estimate_is_rounded_to_what_it_can_tell(seconds, text):
    assert duration.rough(seconds) == text
