"""activation_checkpointing: auto — the memory estimate decides, the preflight says which."""

from __future__ import annotations

import pytest

from trainkit.config import settings as config
from trainkit.config.settings import take_auto_checkpointing
from trainkit.core.report import Report
from trainkit.preflight.speed import decide_activation_checkpointing

H100 = "configs/training_config_h100.yaml"


@pytest.mark.parametrize(("values", "argv", "auto", "left"), [
    ({"activation_checkpointing": "auto"}, [], True, []),
    ({"activation_checkpointing": True}, [], False, []),
    ({}, [], False, []),
    ({"activation_checkpointing": "auto"}, ["--activation_checkpointing", "false"], False,
     ["--activation_checkpointing", "false"]),
    ({"activation_checkpointing": False}, ["--activation_checkpointing", "auto"], True, []),
    ({}, ["--activation_checkpointing=auto", "--max_steps", "3"], True, ["--max_steps", "3"]),
])
def test_auto_is_taken_from_the_yaml_or_the_command_line_which_wins(values, argv, auto, left):
    assert take_auto_checkpointing(values, argv) is auto
    assert argv == left
    assert values.get("activation_checkpointing") != "auto"


def memory_estimate(batch_size: int):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainkit.preflight.memory import estimate_training_memory

    model_config = AutoConfig.from_pretrained("configs/architectures/Qwen--Qwen2.5-7B-Instruct")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return estimate_training_memory(
        model, model_config, batch_size=batch_size, max_length=2048, weight_dtype="bfloat16", load_in_4bit=False,
        lora_r=16, lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        activation_checkpointing=True, lora_dropout=0.05, triton=True)


class Args:
    activation_checkpointing = gradient_checkpointing = True


@pytest.mark.parametrize(("batch_size", "on"), [(2, False), (4, True)])
def test_checkpointing_stays_off_while_the_7b_fits_the_h100_budget_with_headroom(batch_size, on):
    report, sft = Report("PREFLIGHT"), Args()
    assert decide_activation_checkpointing(memory_estimate(batch_size), 70, sft, report) is on
    assert sft.activation_checkpointing is on and sft.gradient_checkpointing is on
    (finding,) = [f.message for f in report.findings]
    assert finding.startswith(f"activation checkpointing: auto -> {'on' if on else 'off'}: ")


def test_without_a_budget_checkpointing_is_off():
    sft = Args()
    assert decide_activation_checkpointing(memory_estimate(1), None, sft, Report("PREFLIGHT")) is False


@pytest.mark.parametrize(("path", "working_set", "on"), [
    (H100, None, False),
    ("configs/training_config_m4.yaml", None, False),
    ("configs/training_config_m4.yaml", 10.7e9, True),
])
def test_the_shipped_configs_leave_checkpointing_to_the_estimate(monkeypatch, path, working_set, on):
    """The 7B fits the H100's 70 GB without recompute, and its 4-bit base a 32 GB Mac (the m4 default of 28 GB);
    a 16 GB Mac's working set (10.7 GB) needs recompute."""
    from trainkit.preflight import gpu
    from trainkit.preflight.checks import preflight

    monkeypatch.setattr(config, "detect_device", lambda: "cpu")  # the configs name their platform (budget)
    monkeypatch.setattr(gpu, "recommended_working_set_bytes", lambda backend: working_set)
    parsed = config.parse(["--config", path])
    assert parsed.trainkit.activation_checkpointing_auto
    assert parsed.sft.activation_checkpointing is True  # TRL's default until the estimate has spoken
    report = Report("PREFLIGHT")
    preflight(parsed, report, data=False)
    assert parsed.sft.activation_checkpointing is on
    word = "on" if on else "off"
    assert any(f.message.startswith(f"activation checkpointing: auto -> {word}: ") for f in report.findings)


def test_an_adapter_on_lm_head_is_refused_before_the_model_loads(tmp_path):
    from trainkit.preflight.checks import preflight

    parsed = config.parse(["--config", "configs/smoke.yaml", "--output_dir", str(tmp_path / "o"),
                           "--lora_target_modules", "q_proj", "v_proj", "lm_head"])
    report = Report("PREFLIGHT")
    preflight(parsed, report, data=False)
    assert [f.message for f in report.errors] == [
        "lora_target_modules includes lm_head, which TRL's fused LM head never trains (TRL refuses it)"]


def test_train_py_trains_packed_padding_free_batches_and_prints_the_checkpointing_decision(tmp_path):
    from conftest import run_train, step_losses

    out = tmp_path / "packed"
    run = run_train(out, "--max_steps", "3", "--packing", "true", "--activation_checkpointing", "auto")
    assert run.returncode == 0, run.output[-3000:]
    assert any("activation checkpointing: auto -> off: no memory budget on this platform" in line
               for line in run.lines)
    assert sorted(step_losses(out)) == [1, 2, 3]


@pytest.mark.parametrize(("packing", "warned"), [("true", True), ("false", False)])
def test_packed_rows_without_a_varlen_attention_are_a_warning(tmp_path, packing, warned):
    from trainkit.preflight.checks import preflight

    parsed = config.parse(["--config", "configs/smoke.yaml", "--output_dir", str(tmp_path / "o"), "--packing", packing])
    report = Report("PREFLIGHT")
    preflight(parsed, report, data=False)
    found = [f.message for f in report.warnings if f.message.startswith("padding-free batches with sdpa attention")]
    assert bool(found) is warned
