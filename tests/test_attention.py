"""attn_implementation: auto picks flash-attn 3 / 2 from the Hub (kernels), the flash_attn package, then SDPA;
the preflight says which and why, setup fetches it, and packed evaluation stays one row per device."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from conftest import ROOT
from trainkit.config import attention, settings
from trainkit.config.attention import Facts, choose
from trainkit.core.errors import ConfigError
from trainkit.core.report import Report

H100 = (9, 0)
A100 = (8, 0)
GOOD_KERNELS = "0.18.3"


@pytest.mark.parametrize(("facts", "implementation", "varlen"), [
    (Facts("cuda", H100, GOOD_KERNELS), "kernels-community/vllm-flash-attn3", True),
    (Facts("cuda", A100, GOOD_KERNELS), "kernels-community/flash-attn2", True),
    (Facts("cuda", H100, None, flash_attn=True), "flash_attention_2", True),
    (Facts("cuda", H100, "0.19.1", flash_attn=False), "sdpa", False),
    (Facts("cuda", H100, None), "sdpa", False),
    (Facts("mps", None, GOOD_KERNELS, flash_attn=True), "sdpa", False),
    (Facts("cpu"), "sdpa", False),
])
def test_auto_picks_fa3_on_hopper_then_fa2_then_the_package_then_sdpa(facts, implementation, varlen):
    for requested in ("auto", None):
        chosen = choose(requested, facts)
        assert (chosen.implementation, chosen.varlen) == (implementation, varlen)
        assert chosen.hub_kernel == (implementation if "/" in implementation else None)


def test_a_kernels_release_outside_transformers_range_is_named_as_ignored():
    chosen = choose("auto", Facts("cuda", H100, "0.19.1", kernels_range=("0.18.2", "0.19.0")))
    assert chosen.why == ("auto: no flash kernel here: kernels 0.19.1 is outside the 0.18.2 <= v < 0.19.0 the "
                          "installed transformers accepts, so transformers ignores it (pip install kernels==0.18.3), "
                          "and no flash_attn package")


def test_the_hub_names_are_the_ones_the_installed_transformers_falls_back_to():
    from transformers.modeling_flash_attention_utils import FLASH_ATTN_KERNEL_FALLBACK

    assert attention.hub_names() == (FLASH_ATTN_KERNEL_FALLBACK["flash_attention_2"],
                                     FLASH_ATTN_KERNEL_FALLBACK["flash_attention_3"])


def test_flash_attention_2_without_the_package_runs_on_the_hub_kernel():
    chosen = choose("flash_attention_2", Facts("cuda", A100, GOOD_KERNELS))
    assert (chosen.implementation, chosen.hub_kernel) == ("kernels-community/flash-attn2",) * 2


@pytest.mark.parametrize(("requested", "facts", "error"), [
    ("flash_attention_2", Facts("cpu"), "attn_implementation=flash_attention_2 needs CUDA"),
    ("flash_attention_3", Facts("cuda", H100, None), "attn_implementation=flash_attention_3 needs the kernels "
                                                     "package (Hub kernel kernels-community/vllm-flash-attn3)"),
    ("kernels-community/flash-attn2", Facts("cpu", None, GOOD_KERNELS), "is a Hub kernel, which needs CUDA"),
])
def test_an_attention_that_cannot_run_here_is_refused_with_what_to_do(requested, facts, error):
    with pytest.raises(ConfigError, match=re.escape(error)) as refused:
        choose(requested, facts)
    assert "attn_implementation: auto" in refused.value.hint


def test_the_pinned_kernels_is_inside_the_range_the_pinned_transformers_accepts():
    from packaging.version import Version
    from transformers.utils.import_utils import KERNELS_MAX_VERSION, KERNELS_MIN_VERSION

    spec = (ROOT / "environment-remote.yml").read_text()
    pinned = re.search(r"^\s*- kernels==(\S+)$", spec, re.M).group(1)
    assert f"kernels=={pinned}" == attention.KERNELS_PIN
    assert Version(KERNELS_MIN_VERSION) <= Version(pinned) < Version(KERNELS_MAX_VERSION)
    tomlkit = re.search(r"^\s*- tomlkit==(\S+)$", spec, re.M)
    assert tomlkit, "kernels needs tomlkit, pinned beside it"


def parsed(monkeypatch, facts, *args):
    monkeypatch.setattr(settings, "attention_facts", lambda device: facts)
    return settings.parse(["--config", str(ROOT / "configs" / "training_config_h100.yaml"), *args])


def test_the_preflight_names_the_attention_and_why(monkeypatch, tmp_path):
    from trainkit.preflight.speed import check_attention, check_padding_free_attention

    config = parsed(monkeypatch, Facts("cpu"), "--output_dir", str(tmp_path))
    assert config.model.attn_implementation == "sdpa"
    assert config.sft.model_init_kwargs["attn_implementation"] == "sdpa"
    report = Report("PREFLIGHT")
    check_attention(config, report)
    check_padding_free_attention(config, report)
    assert report.findings[0].message == "attention: sdpa (auto on cpu: the flash kernels need CUDA)"
    assert report.warnings[0].message.startswith("padding-free batches with sdpa attention")


def test_a_hub_kernel_is_what_the_model_is_built_with_and_raises_no_padding_free_warning(monkeypatch, tmp_path):
    from trainkit.preflight.speed import check_attention, check_padding_free_attention

    monkeypatch.setattr(settings, "cuda_bf16_supported", lambda: True)
    config = parsed(monkeypatch, Facts("cuda", H100, GOOD_KERNELS), "--output_dir", str(tmp_path))
    assert config.sft.model_init_kwargs["attn_implementation"] == "kernels-community/vllm-flash-attn3"
    report = Report("PREFLIGHT")
    check_attention(config, report)
    check_padding_free_attention(config, report)
    assert report.findings[0].message == ("attention: flash-attn 3 (Hub kernel kernels-community/vllm-flash-attn3) "
                                          "(auto: compute capability 9.0 is Hopper, kernels 0.18.3 loads it)")
    assert not report.warnings


def test_a_packed_eval_batch_is_one_max_length_row_per_device_unless_eval_packing_is_set(monkeypatch, tmp_path):
    from trainkit.preflight.speed import check_eval_batches

    config = parsed(monkeypatch, Facts("cpu"), "--output_dir", str(tmp_path))
    report = Report("PREFLIGHT")
    check_eval_batches(config, report)
    assert config.sft.per_device_eval_batch_size == 1
    assert report.findings[0].message == ("eval batches: one packed row of up to 2,048 tokens per device "
                                          "(per_device_eval_batch_size 8 -> 1: 8 bins would be one 16,384-token "
                                          "row); set eval_packing: true to keep 8")
    asked = parsed(monkeypatch, Facts("cpu"), "--output_dir", str(tmp_path), "--eval_packing", "true")
    check_eval_batches(asked, Report("PREFLIGHT"))
    assert asked.sft.per_device_eval_batch_size == 8


def test_under_fsdp_the_tool_call_figures_are_off_with_one_warning_instead_of_a_hang(monkeypatch, tmp_path):
    from trainkit.core.status import RunStatus
    from trainkit.train import eval_callback

    config = parsed(monkeypatch, Facts("cpu"), "--output_dir", str(tmp_path), "--validation_file",
                    str(ROOT / "data" / "sample" / "validation.jsonl"), "--distributed_strategy", "fsdp")
    monkeypatch.setenv("WORLD_SIZE", "2")  # rank 0 of two, after parsing (TrainingArguments would start a group)
    monkeypatch.setenv("RANK", "0")
    config.strategy = SimpleNamespace(name="fsdp")
    warnings = []
    [callback] = eval_callback.eval_callbacks(config, RunStatus(tmp_path, enabled=False),
                                              lambda m, h=None: warnings.append(m), lambda: False, verbose=False)
    assert callback.conversations == []
    assert warnings == ["tool-call figures are off under FSDP: rank 0 generating alone on sharded parameters "
                        "would start all-gathers the other ranks never join"]
    config.strategy = SimpleNamespace(name="ddp")
    [callback] = eval_callback.eval_callbacks(config, RunStatus(tmp_path, enabled=False),
                                              lambda m, h=None: warnings.append(m), lambda: False, verbose=False)
    assert len(callback.conversations) == 16 and len(warnings) == 1
