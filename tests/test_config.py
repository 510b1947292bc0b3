"""Config parsing and the machine-dependent choices, with the platform probes injected."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conftest import ROOT
from trainkit.config import settings as config
from trainkit.core.errors import ConfigError


def fake_machine(monkeypatch, cuda=False, mps=False, bf16=True, flash=False):
    monkeypatch.setattr(config, "cuda_available", lambda: cuda)
    monkeypatch.setattr(config, "mps_available", lambda: mps)
    monkeypatch.setattr(config, "cuda_bf16_supported", lambda: bf16)
    monkeypatch.setattr(config, "flash_attn_installed", lambda: flash)
    from trainkit.config import attention

    monkeypatch.setattr(attention, "kernels_version", lambda: None)  # tests/test_attention.py covers kernels


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
    with pytest.raises(ConfigError, match="attn_implementation=flash_attention_2 needs CUDA"):
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
        (SMOKE_TEXT + "distributed_strategy: zero3\n",
         "distributed_strategy must be one of auto, ddp, fsdp, not 'zero3'"),
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


def test_a_config_directory_instead_of_a_file_is_a_config_error():
    with pytest.raises(ConfigError, match="--config configs is a directory, not a config file"):
        config.parse(["--config", "configs"])


@pytest.mark.parametrize("flag", ["--learning_rat", "--learning", "--max_step"])
def test_an_abbreviated_flag_is_refused_with_the_full_name(flag):
    with pytest.raises(ConfigError) as err:
        config.parse(["--config", "configs/smoke.yaml", flag, "5"])
    assert err.value.message.startswith(f"unknown config key(s) in the command line: {flag[2:]}")


def test_an_abbreviated_flag_suggests_the_key_it_abbreviates():
    with pytest.raises(ConfigError, match=r"learning_rat \(did you mean learning_rate\?\)"):
        config.parse(["--config", "configs/smoke.yaml", "--learning_rat", "5e-4"])


@pytest.mark.parametrize(
    ("foreign", "ours"),
    [
        ("lora_rank", "lora_r"),
        ("lr", "learning_rate"),
        ("epochs", "num_train_epochs"),
        ("num_epochs", "num_train_epochs"),
        ("micro_batch_size", "per_device_train_batch_size"),
        ("lora_target", "lora_target_modules"),
        ("cutoff_len", "max_length"),
        ("sequence_len", "max_length"),
        ("gradient_accumulation", "gradient_accumulation_steps"),
        ("base_model", "model_name_or_path"),
    ],
)
def test_key_names_from_other_fine_tuning_tools_suggest_trainkits_name(tmp_path, foreign, ours):
    with pytest.raises(ConfigError, match=rf"{foreign} \(did you mean {ours}\?\)"):
        config.parse(["--config", "configs/smoke.yaml", f"--{foreign}", "16"])
    bad = tmp_path / "foreign.yaml"
    bad.write_text(SMOKE_TEXT + f"{foreign}: 16\n")
    with pytest.raises(ConfigError, match=rf"{foreign} \(did you mean {ours}\?\)"):
        config.parse(["--config", str(bad)])


def test_every_foreign_key_maps_to_a_real_key_and_shadows_none():
    names = set(config.known_keys())
    assert not set(config.FOREIGN_KEYS) & names
    assert set(config.FOREIGN_KEYS.values()) <= names


def validate(capfd, *argv: str) -> tuple[int, list[str]]:
    """validate_training_config.py in-process: its exit code and its ERROR lines."""
    from conftest import load_script

    code = load_script("validate_training_config").main(["--config", "configs/smoke.yaml", "--no-data", *argv])
    out = capfd.readouterr().out
    assert "Traceback" not in out
    return code, [line for line in out.splitlines() if line.startswith("❌ ERROR:")]


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--max_steps", "-5"], "max_steps must be a positive number of optimizer steps, or -1 for num_train_epochs"),
        (["--max_steps", "-1", "--num_train_epochs", "0"], "nothing to train: max_steps=-1, num_train_epochs=0"),
        (["--max_steps", "0"], "nothing to train: max_steps=0"),
        (["--weight_decay", "-0.1"], "weight_decay cannot be negative"),
        (["--learning_rate", "2"], "learning_rate=2.0 would destroy the model in one step"),
    ],
)
def test_values_nobody_means_are_refused_before_training(capfd, tmp_path, flags, error):
    code, errors = validate(capfd, "--output_dir", str(tmp_path / "o"), *flags)
    assert code == 1
    assert [e for e in errors if error in e], errors


def test_an_output_dir_that_cannot_be_created_is_one_error(capfd, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, errors = validate(capfd, "--output_dir", str(blocker / "run"))
    assert code == 1
    assert errors == [f"❌ ERROR: output_dir {blocker / 'run'} cannot be created: {blocker} is a file, not a directory"]


def test_a_read_only_output_dir_is_one_error(capfd, tmp_path, monkeypatch):
    import errno

    from trainkit.preflight import storage

    def read_only(directory):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(storage, "write_probe", read_only)
    code, errors = validate(capfd, "--output_dir", str(tmp_path / "out"))
    assert code == 1
    assert errors == [f"❌ ERROR: output_dir {tmp_path / 'out'} is not writable (its nearest existing parent "
                      f"{tmp_path} is not writable): Read-only file system"]


def test_an_unwritable_log_directory_is_an_error(capfd, tmp_path, monkeypatch):
    blocker = tmp_path / "logs"
    blocker.write_text("")
    monkeypatch.setenv("TRAINKIT_LOG_FILE", str(blocker / "run.log"))
    code, errors = validate(capfd, "--output_dir", str(tmp_path / "out"))
    assert code == 1
    assert errors == [f"❌ ERROR: the log directory (TRAINKIT_LOG_FILE) {blocker} cannot be created: "
                      f"{blocker} is a file, not a directory"]


TYPO = "Qwen/Qwen2.5-7B-Instruc"


def test_a_misspelled_hub_id_offline_is_an_error_with_a_did_you_mean(capfd, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, errors = validate(capfd, "--output_dir", str(tmp_path / "o"), "--model_name_or_path", TYPO)
    assert code == 1
    assert errors == [f"❌ ERROR: model {TYPO} is not in the local HF cache and the Hugging Face Hub cannot be "
                      "reached (HF_HUB_OFFLINE=1): it cannot be checked or downloaded "
                      "(did you mean Qwen/Qwen2.5-7B-Instruct?)"]


def test_a_model_the_hub_does_not_have_is_an_error(capfd, tmp_path, monkeypatch):
    from trainkit.preflight import environment

    monkeypatch.setattr(environment, "hub_access", lambda name: ("missing", "404"))
    code, errors = validate(capfd, "--output_dir", str(tmp_path / "o"), "--model_name_or_path", TYPO)
    assert code == 1
    assert errors == [f"❌ ERROR: model {TYPO} not found on the Hugging Face Hub (404) nor in the local cache "
                      "(did you mean Qwen/Qwen2.5-7B-Instruct?)"]


def test_a_gated_model_without_access_is_an_error_naming_hf_token(capfd, tmp_path, monkeypatch):
    from trainkit.preflight import environment

    monkeypatch.setattr(environment, "hub_access", lambda name: ("gated", "401"))
    monkeypatch.setattr(environment, "hf_token_present", lambda: False)
    from conftest import load_script

    code = load_script("validate_training_config").main(
        ["--config", "configs/smoke.yaml", "--no-data", "--output_dir", str(tmp_path / "o"),
         "--model_name_or_path", "meta-llama/Llama-3.1-8B-Instruct"])
    out = capfd.readouterr().out
    assert code == 1
    assert "❌ ERROR: meta-llama/Llama-3.1-8B-Instruct is a gated model and no Hugging Face token is set" in out
    assert "export HF_TOKEN=hf_..." in out


def test_a_model_the_hub_has_passes(capfd, tmp_path, monkeypatch):
    from trainkit.preflight import environment

    monkeypatch.setattr(environment, "hub_access", lambda name: ("ok", ""))
    code, errors = validate(capfd, "--output_dir", str(tmp_path / "o"), "--model_name_or_path", "Qwen/Qwen2.5-0.5B")
    assert (code, errors) == (0, [])


def test_the_parsed_config_says_where_each_value_came_from_and_leaves_the_strategy_to_the_preflight(tmp_path):
    smoke = ROOT / "configs" / "smoke.yaml"
    parsed = config.parse(["--config", str(smoke), "--output_dir", str(tmp_path / "out"), "--max_steps", "7"])
    assert parsed.sources["max_steps"] == "command line"
    assert parsed.sources["learning_rate"] == f"config {smoke}"
    assert parsed.strategy is None


@pytest.mark.parametrize(("processes", "accumulation"), [(None, 8), ("2", 4), ("8", 1)])
def test_effective_batch_size_sets_the_accumulation_for_the_processes_about_to_train(
        tmp_path, monkeypatch, processes, accumulation):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if processes:
        monkeypatch.setenv("TRAINKIT_WORLD_SIZE", processes)
    else:
        monkeypatch.delenv("TRAINKIT_WORLD_SIZE", raising=False)
    parsed = config.parse(["--config", str(ROOT / "configs" / "smoke.yaml"), "--output_dir", str(tmp_path),
                           "--effective_batch_size", "32"])  # smoke.yaml: 4 per device
    assert parsed.sft.gradient_accumulation_steps == accumulation
    assert parsed.sources["gradient_accumulation_steps"] == "effective_batch_size"


@pytest.mark.parametrize(
    ("flags", "message", "hint"),
    [
        (["--effective_batch_size", "40"],
         "effective_batch_size 40 is not a multiple of 4 per device x 4 processes = 16",
         "set per_device_train_batch_size to one of 1, 2, 5, 10"),
        (["--effective_batch_size", "6"], "effective_batch_size 6 is not a multiple of 4 per device x 4 processes = 16",
         "pick an effective_batch_size that is a multiple of 4"),
        (["--effective_batch_size", "32", "--gradient_accumulation_steps", "4"],
         "gradient_accumulation_steps 4 and effective_batch_size 32 disagree: with 16 sequences per micro-step it "
         "must be 2", "drop --gradient_accumulation_steps"),
        (["--effective_batch_size", "0"], "effective_batch_size must be at least 1, not 0", "effective_batch_size: 64"),
    ],
)
def test_an_effective_batch_the_processes_cannot_split_evenly_is_a_config_error(tmp_path, monkeypatch, flags, message,
                                                                                 hint):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("TRAINKIT_WORLD_SIZE", "4")
    with pytest.raises(ConfigError) as refused:
        config.parse(["--config", str(ROOT / "configs" / "smoke.yaml"), "--output_dir", str(tmp_path), *flags])
    assert refused.value.message == message
    assert hint in refused.value.hint
