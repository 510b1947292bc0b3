"""The shipped configs pass preflight, offline, with only the warnings they should have."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import ROOT, TAGGED, load_script
from trainkit.preflight import environment

VALIDATE = load_script("validate_training_config").main
SAMPLE_DATA = ["--train_file", "data/sample/train.jsonl", "--validation_file", "data/sample/validation.jsonl"]
NO_TOKENIZER = "⚠️ WARNING: no tokenizer for Qwen/Qwen2.5-7B-Instruct offline"
# The m4 config trains with MLX: another machine validates it, and says it cannot train it there.
MLX_ELSEWHERE = [] if sys.platform == "darwin" else ["⚠️ WARNING: backend: mlx trains on Apple Silicon: this "]


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(environment, "hf_token_present", lambda: False)
    for name in [n for n in os.environ if n.startswith("RUNPOD_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("config", "warnings", "memory"),
    [
        ("smoke.yaml", [], "memory: no memory budget for this platform"),
        # Off the GPU pod there is no flash-attn, so the packed rows go through SDPA's block mask.
        ("training_config_h100.yaml", ["⚠️ WARNING: padding-free batches with sdpa attention", NO_TOKENIZER],
         "of the 70 GB budget"),
        ("training_config_m4.yaml", [*MLX_ELSEWHERE, NO_TOKENIZER], "of the 28 GB budget (the m4 default)"),
    ],
)
def test_a_shipped_config_passes_with_its_expected_warnings(config, warnings, memory, capfd, tmp_path):
    code = VALIDATE(["--config", f"configs/{config}", "--output_dir", str(tmp_path / "out"), *SAMPLE_DATA])
    out = capfd.readouterr().out
    lines = out.splitlines()
    assert code == 0, out
    found = [line for line in lines if line.startswith("⚠️ WARNING:")]
    assert len(found) == len(warnings) and all(f.startswith(w) for f, w in zip(found, warnings, strict=True)), found
    assert [line for line in lines if TAGGED.match(line)][-1] == "✅ SUCCESS: training config is valid"
    assert any(line.startswith("[PREFLIGHT] memory:") and memory in line for line in lines), out
    assert "matches no module" not in out


def test_the_h100_config_targets_seven_qwen2_projections_that_exist(capfd, tmp_path):
    code = VALIDATE(["--config", "configs/training_config_h100.yaml", "--output_dir", str(tmp_path / "o"), "--no-data"])
    out = capfd.readouterr().out
    assert code == 0, out
    assert "[PREFLIGHT] model Qwen/Qwen2.5-7B-Instruct: Qwen2ForCausalLM, 7.62B parameters" in out
    assert "✅ SUCCESS: training config is valid (data not checked)" in out


def test_recommended_ranges_only_warn(capfd, tmp_path):
    code = VALIDATE(["--config", "configs/smoke.yaml", "--output_dir", str(tmp_path / "o"), "--no-data",
                     "--lora_r", "4", "--lora_alpha", "4", "--lora_dropout", "0.5",
                     "--lora_target_modules", "q_proj", "v_proj"])
    out = capfd.readouterr().out
    assert code == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("⚠️ WARNING:")]
    assert warnings == [
        "⚠️ WARNING: lora_r=4 is outside the recommended 8-64",
        "⚠️ WARNING: lora_alpha=4 is not 2 x lora_r=4",
        "⚠️ WARNING: lora_dropout=0.5 is above the recommended 0-0.2",
        "⚠️ WARNING: only 2 LoRA target module(s): q_proj, v_proj",
    ]


def test_a_one_item_target_list_that_peft_would_read_as_a_regex_is_an_error(capfd, tmp_path):
    code = VALIDATE(["--config", "configs/smoke.yaml", "--output_dir", str(tmp_path / "o"), "--no-data",
                     "--lora_target_modules", "q_proj"])
    out = capfd.readouterr().out
    assert code == 1
    assert "❌ ERROR: lora_target_modules: 'q_proj' is read as a regex over full module names" in out
