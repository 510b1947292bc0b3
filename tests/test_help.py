"""`train.py --help` is a page people read: --config, trainkit's keys, common TRL keys; --help-all has the rest."""

from __future__ import annotations

import dataclasses
import re
import subprocess

import pytest

from conftest import PYTHON, ROOT, base_env
from trainkit.config.help import COMMON_TRL_KEYS, short_help
from trainkit.config.settings import TrainkitArguments, known_keys


def train_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "train.py", *args], cwd=ROOT, env=base_env(), capture_output=True, text=True,
                          timeout=180)


@pytest.fixture(scope="module")
def help_page() -> str:
    proc = train_py("--help")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def listed_keys(text: str) -> set[str]:
    return set(re.findall(r"^\s+--(\w+)", text, re.M))


def test_help_starts_with_a_usage_line_that_names_config_and_fits_on_a_screen_or_two(help_page):
    assert help_page.splitlines()[0] == "usage: python train.py --config FILE.yaml [--KEY VALUE ...]"
    assert "  --config FILE.yaml" in help_page
    assert len(help_page.splitlines()) < 100


def test_help_lists_every_trainkit_key_and_the_common_trl_keys_in_groups(help_page):
    keys = listed_keys(help_page)
    from trainkit.config.help import SET_THROUGH_ANOTHER_KEY

    assert {f.name for f in dataclasses.fields(TrainkitArguments)} - set(SET_THROUGH_ANOTHER_KEY) <= keys
    for must in ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
                 "num_train_epochs", "max_length", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
                 "save_steps", "eval_steps", "logging_steps", "report_to", "assistant_only_loss", "packing"):
        assert must in keys, must
    for group in COMMON_TRL_KEYS:
        assert f"TRL keys people set: {group}" in help_page
    assert "--help-all" in help_page


def test_every_key_the_short_help_lists_is_a_real_config_key():
    assert listed_keys(short_help()) - {"config", "help", "help-all"} <= set(known_keys())


def test_help_shows_the_dataclass_defaults():
    text = " ".join(short_help().split())
    assert "--lora_r rank of the LoRA matrices (default: 16)" in text
    assert "--crash_loop_limit" in text and "(default: 3)" in text


def test_help_all_prints_every_key_trl_takes_and_exits_0():
    proc = train_py("--help-all")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) > 400
    assert set(known_keys()) <= set(re.findall(r"--(\w+)", proc.stdout))


def test_help_trains_nothing_even_with_a_config(tmp_path):
    proc = train_py("--config", "configs/smoke.yaml", "--output_dir", str(tmp_path / "out"), "-h")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python train.py --config")
    assert not (tmp_path / "out").exists()
