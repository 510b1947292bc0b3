"""The run fingerprint: which config changes a resume may continue with, and which it must refuse."""

from __future__ import annotations

import pytest

from conftest import ROOT
from trainkit.config import settings as config_module
from trainkit.train import fingerprint


@pytest.fixture(scope="module")
def smoke_args():
    return ["--config", str(ROOT / "configs" / "smoke.yaml")]


def fingerprint_of(smoke_args, *flags):
    return fingerprint.fingerprint(config_module.parse([*smoke_args, *flags]))


def test_the_same_config_has_no_changes(smoke_args):
    assert fingerprint.compare(fingerprint_of(smoke_args), fingerprint_of(smoke_args)) == fingerprint.Changes()


def test_a_run_recorded_by_no_one_has_no_changes(smoke_args):
    assert fingerprint.compare(None, fingerprint_of(smoke_args)) == fingerprint.Changes()


@pytest.mark.parametrize(
    ("flags", "change"),
    [
        (["--learning_rate", "5e-4"], "learning_rate: 0.001 -> 0.0005"),
        (["--lora_r", "16"], "lora_r: 8 -> 16"),
        (["--lora_target_modules", "q_proj", "v_proj"], "lora_target_modules: "),
        (["--lr_scheduler_type", "linear"], "lr_scheduler_type: cosine -> linear"),
        (["--per_device_train_batch_size", "2"], "effective_batch_size: 4 -> 2"),
        (["--gradient_accumulation_steps", "2"], "effective_batch_size: 4 -> 8"),
        (["--seed", "7"], "seed: 42 -> 7"),
        (["--max_length", "256"], "max_length: 512 -> 256"),
        (["--model_name_or_path", "Qwen/Qwen2.5-7B-Instruct"], "model_name_or_path: models/tiny-chat -> Qwen/"),
        (["--train_file", "data/sample/validation.jsonl"], "train_file: sha256:"),
        (["--max_steps", "10"], "max_steps: 20 -> 10"),
        (["--max_steps", "-1"], "max_steps: 20 -> -1"),
    ],
)
def test_a_change_to_what_defines_the_run_blocks_a_resume(smoke_args, flags, change):
    changes = fingerprint.compare(fingerprint_of(smoke_args), fingerprint_of(smoke_args, *flags))
    assert changes.blocking and changes.blocking[0].startswith(change), changes


@pytest.mark.parametrize(
    ("flags", "change"),
    [
        (["--max_steps", "40"], "max_steps: 20 -> 40"),
        (["--save_steps", "5"], "save_steps: 10 -> 5"),
        (["--logging_steps", "5"], "logging_steps: 1 -> 5"),
        (["--report_to", "none"], "report_to: ['wandb'] -> []"),
        (["--save_total_limit", "1"], "save_total_limit: 3 -> 1"),
    ],
)
def test_a_longer_run_or_another_cadence_is_safe_and_only_warns(smoke_args, flags, change):
    changes = fingerprint.compare(fingerprint_of(smoke_args), fingerprint_of(smoke_args, *flags))
    assert (changes.blocking, changes.safe) == ([], [change])


def test_a_resume_on_more_gpus_is_the_same_run_when_the_effective_batch_is_kept_and_refused_when_it_grows(
        smoke_args, monkeypatch):
    one_gpu = fingerprint_of(smoke_args, "--gradient_accumulation_steps", "4")
    monkeypatch.setenv("TRAINKIT_WORLD_SIZE", "4")
    kept = fingerprint_of(smoke_args, "--effective_batch_size", "16")
    grown = fingerprint_of(smoke_args, "--gradient_accumulation_steps", "4")
    assert fingerprint.compare(one_gpu, kept) == fingerprint.Changes()
    assert fingerprint.compare(one_gpu, grown).blocking == ["effective_batch_size: 16 -> 64"]
    # A smaller micro-batch with more accumulation trains the same sequences per step.
    assert fingerprint.compare(kept, fingerprint_of(smoke_args, "--per_device_train_batch_size", "1",
                                                    "--gradient_accumulation_steps", "4")) == fingerprint.Changes()


def test_a_run_saved_under_ddp_cannot_resume_under_fsdp_whose_checkpoints_hold_another_layout(smoke_args):
    from trainkit.preflight.strategy import DDP, FSDP, Strategy

    def under(name, processes):
        config = config_module.parse(smoke_args)
        config.strategy = Strategy(name, processes, "test")
        return fingerprint.fingerprint(config)

    changes = fingerprint.compare(under(DDP, 8), under(FSDP, 8))
    assert changes.blocking == ["distributed_strategy: ddp -> fsdp"]
    assert fingerprint.compare(under(DDP, 8), under(DDP, 4)) == fingerprint.Changes(), "more GPUs, same layout"
    recorded_before_strategies = under(DDP, 8)
    del recorded_before_strategies["defining"]["distributed_strategy"]
    assert fingerprint.compare(recorded_before_strategies, under(FSDP, 8)) == fingerprint.Changes()


def test_the_same_data_under_another_path_is_the_same_run(smoke_args, tmp_path):
    copy = tmp_path / "train.jsonl"
    copy.write_bytes((ROOT / "data" / "sample" / "train.jsonl").read_bytes())
    changes = fingerprint.compare(fingerprint_of(smoke_args), fingerprint_of(smoke_args, "--train_file", str(copy)))
    assert changes == fingerprint.Changes()


def test_the_fingerprint_round_trips_through_its_file(smoke_args, tmp_path):
    current = fingerprint_of(smoke_args)
    fingerprint.write(tmp_path, current)
    assert fingerprint.compare(fingerprint.read(tmp_path), current) == fingerprint.Changes()
