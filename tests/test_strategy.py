"""distributed_strategy: what auto picks, what the trainer is built with, and what the preflight refuses.

Nothing here trains: TrainingArguments and accelerate's FSDP plugin are built from the strategy on CPU, and
the choice is read from the preflight's own lines with a world size and a GPU memory budget set by the test.
FSDP itself cannot run through the Trainer on CPU (accelerate runs CPU processes as DDP); its checkpoint
save is exercised in tests/test_fsdp_checkpoint.py.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from conftest import ROOT, TAGGED, load_script
from trainkit.config.settings import parse
from trainkit.preflight import environment, memory, strategy
from trainkit.preflight.strategy import DDP, FSDP, Strategy

VALIDATE = load_script("validate_training_config").main
H100 = "configs/training_config_h100.yaml"
SMOKE = "configs/smoke.yaml"
EIGHT_GPUS = Strategy(FSDP, 8, "test")


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(environment, "hf_token_present", lambda: False)
    for name in ("WORLD_SIZE", "TRAINKIT_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    # TrainingArguments, accelerate's FSDP plugin and build_trainer export these: set here, so that monkeypatch
    # gives the other tests their environment back.
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")


def validate(capfd, tmp_path, config, *flags) -> tuple[int, list[str]]:
    code = VALIDATE(["--config", config, "--output_dir", str(tmp_path / "out"), "--no-data", *flags])
    return code, capfd.readouterr().out.splitlines()


def line_starting(lines, prefix) -> str:
    [line] = [line for line in lines if line.startswith(prefix)]
    return line


# ---------------------------------------------------------------------------------------------------------------
# What the trainer is built with


def test_fsdp_turns_on_fsdp2_with_layer_wrapping_sharded_checkpoints_and_rank_0_loading(tmp_path):
    config = parse(["--config", SMOKE, "--output_dir", str(tmp_path), "--distributed_strategy", "fsdp"])
    args = strategy.training_arguments(config.sft, EIGHT_GPUS)
    assert args.fsdp is True
    assert {k: args.fsdp_config[k] for k in strategy.FSDP_CONFIG} == {
        "version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "reshard_after_forward": True,
        "cpu_ram_efficient_loading": True, "state_dict_type": "SHARDED_STATE_DICT"}
    # What TrainingArguments hands accelerate, and the plugin accelerate builds from it.
    assert args.fsdp_plugin_args == {"fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                     "cpu_ram_efficient_loading": True, "state_dict_type": "SHARDED_STATE_DICT",
                                     "reshard_after_forward": True}
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import StateDictType

    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    assert (plugin.fsdp_version, plugin.state_dict_type) == (2, StateDictType.SHARDED_STATE_DICT)
    assert plugin.cpu_ram_efficient_loading and not plugin.activation_checkpointing
    assert config.sft.fsdp is None, "the config keeps what was asked for; the trainer gets a copy"


def test_under_fsdp_activation_checkpointing_is_fsdps_own_and_not_the_trainers(tmp_path):
    config = parse(["--config", SMOKE, "--output_dir", str(tmp_path), "--activation_checkpointing", "true"])
    args = strategy.training_arguments(config.sft, EIGHT_GPUS)
    # transformers' Trainer refuses both at once; FSDP's spares a second all-gather of each layer.
    assert args.fsdp_config["activation_checkpointing"] is True
    assert args.fsdp_plugin_args["activation_checkpointing"] is True
    assert (args.activation_checkpointing, args.gradient_checkpointing) == (False, False)
    assert config.sft.activation_checkpointing is True, "the memory estimate still counts it"


def test_the_configs_own_fsdp_config_entries_win_over_trainkits(tmp_path):
    config = parse(["--config", SMOKE, "--output_dir", str(tmp_path),
                    "--fsdp_config", '{"fsdp_cpu_offload": true, "reshard_after_forward": false}'])
    args = strategy.training_arguments(config.sft, EIGHT_GPUS)
    assert args.fsdp_config["cpu_offload"] is True
    assert args.fsdp_plugin_args["reshard_after_forward"] is False
    assert args.fsdp_plugin_args["state_dict_type"] == "SHARDED_STATE_DICT"


def test_ddp_builds_the_trainer_from_the_config_as_it_is(tmp_path):
    config = parse(["--config", SMOKE, "--output_dir", str(tmp_path)])
    assert strategy.training_arguments(config.sft, Strategy(DDP, 8, "test")) is config.sft
    assert strategy.loading_environment(Strategy(DDP, 8, "test")) == {}
    assert strategy.loading_environment(EIGHT_GPUS) == {"ACCELERATE_USE_FSDP": "true"}


@pytest.mark.parametrize(("chosen", "storage", "expected"),
                         [(EIGHT_GPUS, None, "bfloat16"), (EIGHT_GPUS, "float32", "float32"),
                          (Strategy(DDP, 8, "test"), None, None)])
def test_qlora_under_fsdp_stores_its_4bit_weights_in_the_model_dtype(chosen, storage, expected):
    from trl import ModelConfig

    model = ModelConfig(model_name_or_path="m", dtype="bfloat16", load_in_4bit=True, bnb_4bit_quant_storage=storage)
    assert strategy.model_arguments(model, chosen).bnb_4bit_quant_storage == expected


def test_the_trainer_is_built_from_the_preflights_strategy(tmp_path, monkeypatch):
    from trainkit.train import trainer as trainer_module

    built = {}

    class Recorder:
        def __init__(self, **kwargs):
            built.update(kwargs)

        def remove_callback(self, callback):
            pass

        def add_callback(self, callback):
            pass

    monkeypatch.setattr(trainer_module, "GuardedSFTTrainer", Recorder)
    config = parse(["--config", SMOKE, "--output_dir", str(tmp_path)])
    config.strategy = EIGHT_GPUS
    trainer_module.build_trainer(config, {"train": None}, [], trainer_module.Faults())
    assert built["args"].fsdp is True and built["args"].fsdp_config["state_dict_type"] == "SHARDED_STATE_DICT"
    assert built["model"] == config.model.model_name_or_path
    assert os.environ["ACCELERATE_USE_FSDP"] == "true"


def test_the_final_adapter_under_fsdp_is_saved_from_a_full_state_dict():
    calls = []
    plugin = SimpleNamespace(set_state_dict_type=lambda kind: calls.append(("state_dict_type", kind)))
    accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin))
    trainer = SimpleNamespace(is_fsdp_enabled=True, accelerator=accelerator,
                              save_model=lambda path: calls.append(("save_model", path)))
    from trainkit.train.trainer import save_adapter

    save_adapter(trainer, "out/final")
    assert calls == [("state_dict_type", "FULL_STATE_DICT"), ("save_model", "out/final")]
    calls.clear()
    trainer.is_fsdp_enabled = False
    save_adapter(trainer, "out/final")
    assert calls == [("save_model", "out/final")]


# ---------------------------------------------------------------------------------------------------------------
# What auto picks, as the preflight prints it


@pytest.mark.parametrize(
    ("world", "gpu_budget_gb", "expected"),
    [
        # One process: nothing to shard over.
        (None, 70, "effective batch: 2 per device x 1 process x 4 accumulation = 8 sequences per optimizer step"),
        # The 7B fits an 80 GB H100 whole (24.3 GB with checkpointing, which the config leaves to the estimate).
        ("8", 70, "strategy ddp (auto: a whole copy of the model needs 24.3 GB per GPU, within 85% of the 70 GB"),
        # A 20 GB card cannot hold it whole: sharded over 8 it needs 12.4 GB.
        ("8", 20, "strategy fsdp (auto: a whole copy of the model needs 24.3 GB per GPU, over 85% of the 20 GB "
                  "budget; sharded over 8 GPUs 12.4 GB)"),
    ],
)
def test_auto_shards_the_model_only_when_a_whole_copy_does_not_fit_one_gpu(capfd, tmp_path, monkeypatch, world,
                                                                          gpu_budget_gb, expected):
    if world:  # what scripts/train.sh exports for the preflight it runs before torchrun (WORLD_SIZE would make
        monkeypatch.setenv("TRAINKIT_WORLD_SIZE", world)  # TrainingArguments look for a process group)
    monkeypatch.setitem(memory.PLATFORM_BUDGET_GB, "h100", gpu_budget_gb)
    code, lines = validate(capfd, tmp_path, H100)
    assert code == 0, "\n".join(lines)
    batch = line_starting(lines, "[PREFLIGHT] effective batch:")
    assert expected in batch
    memory_line = line_starting(lines, "[PREFLIGHT] memory:")
    assert ("gathered layers" in memory_line) == ("strategy fsdp" in batch)
    if "strategy fsdp" in batch:
        assert "weights (1/8 shard) 1.90 GB" in memory_line


def fake_config(platform="h100", requested="auto", checkpointing_auto=False):
    return SimpleNamespace(platform=platform, trainkit=SimpleNamespace(
        distributed_strategy=requested, activation_checkpointing_auto=checkpointing_auto))


class FakeEstimate:
    def __init__(self, gb, checkpointed_gb=None):
        self.total = gb * memory.GB
        self.checkpointed_gb = checkpointed_gb

    def with_settings(self, activation_checkpointing=None, shards=1):
        if activation_checkpointing:
            return FakeEstimate(self.checkpointed_gb)
        return FakeEstimate(self.total / memory.GB / shards)


@pytest.mark.parametrize(
    ("config", "world", "estimate", "expected"),
    [
        (fake_config(), "8", FakeEstimate(59), DDP),  # 59 GB is within 85 % of 70
        (fake_config(), "8", FakeEstimate(60), FSDP),
        (fake_config(), "1", FakeEstimate(200), DDP),
        (fake_config(), "8", None, DDP),  # no architecture offline: nothing to decide on
        (fake_config(platform="m4"), "2", FakeEstimate(200), DDP),
        (fake_config(platform="cpu"), "2", FakeEstimate(200), DDP),
        # checkpointing left to the estimate: DDP when it fits with checkpointing on
        (fake_config(checkpointing_auto=True), "8", FakeEstimate(90, checkpointed_gb=40), DDP),
        (fake_config(requested="ddp"), "8", FakeEstimate(200), DDP),
        (fake_config(requested="fsdp"), "8", FakeEstimate(10), FSDP),
        (fake_config(requested="fsdp"), "1", FakeEstimate(10), DDP),
    ],
)
def test_choose_is_one_rule_for_the_world_size_platform_and_estimate(monkeypatch, config, world, estimate, expected):
    monkeypatch.setenv("WORLD_SIZE", world)
    chosen = strategy.choose(config, estimate, 70)
    assert chosen.name == expected
    assert chosen.shards == (int(world) if expected == FSDP else 1)


# ---------------------------------------------------------------------------------------------------------------
# What the preflight refuses


def test_fsdp_on_a_cpu_is_refused_because_accelerate_would_run_it_as_ddp(capfd, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINKIT_WORLD_SIZE", "2")
    code, lines = validate(capfd, tmp_path, SMOKE, "--distributed_strategy", "fsdp")
    assert code == 1
    errors = [line for line in lines if line.startswith("❌ ERROR:")]
    assert errors == ["❌ ERROR: distributed_strategy: fsdp needs CUDA GPUs and this run is for cpu: accelerate runs "
                      "CPU processes as DDP (MULTI_CPU) and would not shard anything"]
    assert [line for line in lines if TAGGED.match(line)][-1] == errors[0]


def test_fsdp_on_a_cuda_platform_is_refused_at_training_time_on_a_machine_without_cuda(tmp_path):
    from trainkit.core.report import Report

    config = parse(["--config", SMOKE, "--output_dir", str(tmp_path), "--platform", "h100",
                    "--distributed_strategy", "fsdp"])
    report = Report()
    strategy.check(config, EIGHT_GPUS, report)
    assert not report.errors, "the validator on a laptop checks a config meant for a GPU pod"
    strategy.check(config, EIGHT_GPUS, report, training=True)
    assert report.errors[0].message.startswith("distributed_strategy: fsdp needs CUDA GPUs and this machine trains "
                                               "on cpu")


def test_fsdp_with_one_process_only_warns_that_it_changes_nothing(capfd, tmp_path):
    code, lines = validate(capfd, tmp_path, H100, "--distributed_strategy", "fsdp")
    assert code == 0
    assert "⚠️ WARNING: distributed_strategy: fsdp has no effect with one process: it holds the whole model" in lines


def test_qlora_under_fsdp_with_4bit_weights_stored_as_integers_is_refused(capfd, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINKIT_WORLD_SIZE", "8")
    code, lines = validate(capfd, tmp_path, H100, "--distributed_strategy", "fsdp", "--load_in_4bit", "true",
                           "--bnb_4bit_quant_storage", "uint8")
    assert code == 1
    assert ("❌ ERROR: load_in_4bit under FSDP needs bnb_4bit_quant_storage: bfloat16 (the model's dtype), not uint8: "
            "FSDP shards only weights stored in a float dtype") in lines
    code, lines = validate(capfd, tmp_path, H100, "--distributed_strategy", "fsdp", "--load_in_4bit", "true")
    assert code == 0, "\n".join(lines)


def test_fsdp_set_directly_is_refused_in_favour_of_distributed_strategy(capfd, tmp_path):
    code, lines = validate(capfd, tmp_path, H100, "--fsdp")
    assert code == 1
    assert "❌ ERROR: fsdp is set directly; trainkit turns FSDP on through distributed_strategy" in lines
