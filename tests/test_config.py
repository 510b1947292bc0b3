"""Config parsing and the machine-dependent choices, with the platform probes injected."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conftest import ROOT
from trainkit import config
from trainkit.errors import ConfigError


def fake_machine(monkeypatch, cuda=False, mps=False, bf16=True, flash=False):
    monkeypatch.setattr(config, "cuda_available", lambda: cuda)
    monkeypatch.setattr(config, "mps_available", lambda: mps)
    monkeypatch.setattr(config, "cuda_bf16_supported", lambda: bf16)
    monkeypatch.setattr(config, "flash_attn_installed", lambda: flash)


def args(**model_fields):
    trainkit_args = config.TrainkitArguments()
    model = SimpleNamespace(model_name_or_path=str(ROOT / "models" / "tiny-chat"), use_peft=True,
                            attn_implementation=None, model_revision="main", dtype="float32")
    model.__dict__.update(model_fields)
    return trainkit_args, model


def sft_for(device, **fields):
    values = {"model_init_kwargs": None, "output_dir": "outputs/x", "bf16": False, "fp16": False}
    return SimpleNamespace(**{**values, **config.device_defaults(device), **fields})


@pytest.mark.parametrize(
    ("machine", "device", "attention", "dtype"),
    [
        (dict(cuda=True, flash=True), "cuda", "flash_attention_2", "bfloat16"),
        (dict(cuda=True, flash=False), "cuda", "sdpa", "bfloat16"),
        (dict(mps=True), "mps", "sdpa", "bfloat16"),
        (dict(), "cpu", "sdpa", "float32"),
    ],
)
def test_device_precision_and_attention_follow_the_machine(monkeypatch, machine, device, attention, dtype):
    fake_machine(monkeypatch, **machine)
    assert config.detect_device() == device
    trainkit_args, model = args()
    sft = sft_for(device)
    config.finish(trainkit_args, sft, model, device)
    assert (model.attn_implementation, model.dtype) == (attention, dtype)
    assert sft.model_init_kwargs == {"dtype": dtype, "attn_implementation": attention, "revision": "main"}
    assert sft.use_cpu == (device == "cpu")


def test_cuda_without_bf16_support_defaults_to_fp32_and_refuses_explicit_bf16(monkeypatch):
    fake_machine(monkeypatch, cuda=True, bf16=False)
    assert config.device_defaults("cuda")["bf16"] is False
    trainkit_args, model = args()
    with pytest.raises(ConfigError, match="no bf16 support"):
        config.finish(trainkit_args, sft_for("cuda", bf16=True), model, "cuda")


def test_flash_attention_is_refused_where_it_cannot_run(monkeypatch):
    fake_machine(monkeypatch)
    trainkit_args, model = args(attn_implementation="flash_attention_2")
    with pytest.raises(ConfigError, match="needs CUDA and the flash-attn package"):
        config.finish(trainkit_args, sft_for("cpu"), model, "cpu")


def test_shipped_configs_parse_into_trl_dataclasses(monkeypatch):
    fake_machine(monkeypatch)
    smoke = config.parse(["--config", "configs/smoke.yaml"])
    h100 = config.parse(["--config", "configs/training_config_h100.yaml"])
    m4 = config.parse(["--config", "configs/training_config_m4.yaml", "--max_steps", "7"])
    assert (smoke.tag, smoke.sft.bf16, smoke.sft.use_cpu, smoke.model.dtype) == ("TRAINING-CPU", False, True, "float32")
    assert (h100.tag, h100.sft.save_steps, h100.model.dtype) == ("TRAINING-H100", 500, "bfloat16")
    assert (m4.tag, m4.sft.save_steps, m4.sft.per_device_train_batch_size, m4.sft.gradient_accumulation_steps) == (
        "TRAINING-M4", 250, 1, 8)
    assert m4.sft.max_steps == 7, "command-line flags override the YAML"
    assert len(h100.model.lora_target_modules) >= 4


def test_an_unknown_yaml_key_is_refused_with_a_did_you_mean(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text((ROOT / "configs" / "smoke.yaml").read_text() + "lora_alpah: 32\nwarmup_stepz: 3\n")
    with pytest.raises(ConfigError) as err:
        config.parse(["--config", str(bad)])
    assert err.value.message == (
        f"unknown config key(s) in {bad}: "
        "lora_alpah (did you mean lora_alpha?), warmup_stepz (did you mean warmup_steps?)"
    )


SMOKE_TEXT = (ROOT / "configs" / "smoke.yaml").read_text()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (SMOKE_TEXT + "platform: gpu\n", "platform must be one of auto, h100, m4, cpu, not 'gpu'"),
        (SMOKE_TEXT + "loss_spike_factor: 0.5\n", "loss_spike_factor must be above 1"),
        (SMOKE_TEXT + "crash_loop_limit: 0\n", "crash_loop_limit must be at least 1"),
        (SMOKE_TEXT + "use_peft: false\n", "use_peft is false"),
        (SMOKE_TEXT + "learning_rate: fast\n", "invalid config value: argument --learning_rate"),
        (SMOKE_TEXT.replace("model_name_or_path: models/tiny-chat\n", ""), "model_name_or_path is not set"),
        ("- just\n- a list\n", "must hold a YAML mapping"),
        ("key: [unclosed\n", "is not valid YAML"),
    ],
)
def test_an_impossible_config_is_a_config_error(tmp_path, yaml_text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        config.parse(["--config", str(bad)])


def test_a_missing_config_file_is_a_config_error():
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        config.parse(["--config", "nope.yaml"])
