"""The memory estimate against a breakdown worked by hand, and the budget check's verdicts and advice.

Models are built on the meta device, so even the 7B shape costs no memory. The numbers in the comments are
worked out from the architecture by hand, not with the module's formulas.
"""

from __future__ import annotations

import re
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from trainkit.core.report import ERROR, OK, WARNING, Report
from trainkit.preflight import memory
from trainkit.preflight.memory import GB, check_memory, estimate_training_memory, platform_budget_gb

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# head_dim = 1024 / 16 = 64, so q is 16 x 64 = 1024 wide and k, v are 4 x 64 = 256 wide.
LLAMA = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=16,
                    num_key_value_heads=4, vocab_size=32000)


def qwen2_7b_config() -> Qwen2Config:
    return Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)


def on_meta(config):
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="module")
def llama():
    return on_meta(LLAMA)


@pytest.fixture(scope="module")
def qwen():
    config = qwen2_7b_config()
    return on_meta(config), config


def llama_estimate(model, **overrides):
    """2 sequences x 512 tokens = 1024 tokens, bf16, r=16 on all seven projections, no checkpointing."""
    settings = dict(batch_size=2, max_length=512, weight_dtype="bfloat16", load_in_4bit=False, lora_r=16,
                    lora_target_modules=SEVEN, activation_checkpointing=False)
    return estimate_training_memory(model, LLAMA, **{**settings, **overrides})


def qwen_h100_estimate(qwen, **overrides):
    """configs/training_config_h100.yaml: 8 x 2048, bf16, r=16 on all seven, checkpointing on."""
    model, config = qwen
    settings = dict(batch_size=8, max_length=2048, weight_dtype="bfloat16", load_in_4bit=False, lora_r=16,
                    lora_target_modules=SEVEN, activation_checkpointing=True)
    return estimate_training_memory(model, config, **{**settings, **overrides})


# ---------------------------------------------------------------------------------------------------------------
# The hand-worked Llama breakdown


def test_breakdown_matches_a_hand_worked_llama_estimate(llama):
    estimate = llama_estimate(llama)

    # Parameters. Embedding and the untied LM head: 32000 x 1024 = 32,768,000 each.
    # One layer: q 1024 x 1024 = 1,048,576; k and v 1024 x 256 = 262,144 each; o 1,048,576;
    #   gate, up, down 1024 x 2816 = 2,883,584 each; two norms 2 x 1024 = 2,048.
    #   1,048,576 x 2 + 262,144 x 2 + 2,883,584 x 3 + 2,048 = 2,097,152 + 524,288 + 8,650,752 + 2,048 = 11,274,240
    # Four layers 45,096,960 + final norm 1,024 + 2 x 32,768,000 = 110,633,984 params; bf16 = 2 bytes each.
    assert estimate.architecture.params == 110_633_984
    assert estimate.weights == 221_267_968

    # LoRA r=16 adds 16 x (in + out) per projection:
    #   q 16 x 2048 = 32,768; k, v 16 x 1280 = 20,480; o 32,768; gate, up, down 16 x 3840 = 61,440
    #   per layer 32,768 x 2 + 20,480 x 2 + 61,440 x 3 = 65,536 + 40,960 + 184,320 = 290,816
    # Four layers 1,163,264 params, each fp32 weight + fp32 grad + two fp32 AdamW moments = 16 bytes.
    assert estimate.lora == 1_163_264 * 16 == 18_612_224

    # Activations per token and layer, bf16 = 2 bytes:
    #   two RMSNorms keep an fp32 copy of their input plus an fp32 rsqrt: 2 x (4 x 1024 + 4) = 8,200
    #   attention keeps q 1024, k 256, v 256, output 1024 in bf16 + fp32 logsumexp per head:
    #     2 x (1024 + 256 + 256 + 1024) + 4 x 16 = 5,120 + 64 = 5,184
    #   MLP keeps gate output, SiLU output, up output: 3 x 2816 x 2 = 16,896
    #   LoRA (fp32 adapters, so each casts its input and keeps a bf16 copy): inputs of q, k, v, o, gate, up
    #     are 1024 wide and down's 2816: (6 x 1024 + 2816) x 2 = 17,920; lora_B inputs 7 x 16 x 2 = 224
    #   layer total 8,200 + 5,184 + 16,896 + 17,920 + 224 = 48,424
    # Four layers 193,696 + final norm (4 x 1024 + 4 = 4,100) + working set (4 x 2816 x 2 = 22,528)
    #   = 220,324 bytes per token x 1024 tokens = 225,611,776
    assert estimate.activations == 225_611_776

    # Logits: TRL's fused head scores 1024 tokens at a time against a tile buffer 32768 words wide:
    #   buffer 1024 x 32768 x 2 = 67,108,864
    #   torch fallback working copies over the 32000-word vocabulary: 1024 x 32000 x (7 x 4 + 1) = 950,272,000
    #   hidden states kept (2) + fp32 gradient (4) + its bf16 cast (2): 1024 tokens x 1024 x 8 = 8,388,608
    #   67,108,864 + 950,272,000 + 8,388,608 = 1,025,769,472
    assert estimate.logits == 1_025_769_472

    assert estimate.overhead == 1_500_000_000
    # 221,267,968 + 18,612,224 + 225,611,776 + 1,025,769,472 + 1,500,000,000
    assert estimate.total == 2_991_261_440


def test_lines_print_each_part_in_gb_and_the_total(llama):
    estimate = llama_estimate(llama)
    assert estimate.lines() == ["weights 0.22 GB", "LoRA params+grads+AdamW 0.02 GB", "activations 0.23 GB",
                                "logits 1.03 GB", "overhead 1.50 GB", "total 3.0 GB"]
    assert str(estimate) == " | ".join(estimate.lines())


def test_activation_checkpointing_keeps_one_hidden_state_per_layer_plus_one_layer(llama):
    full = llama_estimate(llama)
    checkpointed = llama_estimate(llama, activation_checkpointing=True)
    # Per token: a bf16 hidden state per layer 4 x 1024 x 2 = 8,192, one layer recomputed 48,424,
    # final norm 4,100, working set 22,528: 83,244 x 1024 tokens = 85,241,856.
    assert checkpointed.activations == 85_241_856
    assert checkpointed.activations < full.activations
    assert (checkpointed.weights, checkpointed.lora, checkpointed.logits) == (full.weights, full.lora, full.logits)


def test_4bit_packs_the_linear_weights_and_keeps_lora_in_bf16(llama):
    full = llama_estimate(llama)
    quantized = llama_estimate(llama, load_in_4bit=True)
    # Linear weights in the layers: 4 x (1,048,576 x 2 + 262,144 x 2 + 2,883,584 x 3) = 4 x 11,272,192
    #   = 45,088,768 at half a byte plus 4 bytes of absmax per 64: 0.5625 byte -> 25,362,432
    # Everything else stays bf16: 110,633,984 - 45,088,768 = 65,545,216 params x 2 = 131,090,432
    assert quantized.weights == 25_362_432 + 131_090_432 == 156_452_864
    assert quantized.weights < full.weights
    # TRL casts QLoRA adapters to bf16: 2 + 2 + 2 x 2 = 8 bytes per LoRA parameter.
    assert quantized.lora == 1_163_264 * 8 == 9_306_112
    # The bf16 adapters read their input as is, so siblings share it: q/k/v one 1024-wide input,
    # o reads the attention output attention keeps anyway, gate/up one 1024-wide input, down its own 2816:
    #   (1024 + 1024 + 2816) x 2 = 9,728 instead of 17,920, so a layer keeps 48,424 - 8,192 = 40,232.
    # Four layers 160,928 + 4,100 + 22,528 = 187,556 x 1024 tokens = 192,057,344.
    assert quantized.activations == 192_057_344


def test_target_modules_change_the_lora_size(llama):
    qv = llama_estimate(llama, lora_target_modules=["q_proj", "v_proj"])
    # 4 layers x (q 16 x 2048 + v 16 x 1280) = 4 x (32,768 + 20,480) = 212,992 params x 16 bytes
    assert qv.lora == 212_992 * 16 == 3_407_872
    # LoRA keeps only two input copies and two lora_B inputs per layer: 2 x 1024 x 2 + 2 x 16 x 2 = 4,160
    # instead of 18,144, so 4 layers x 13,984 x 1024 tokens less.
    assert llama_estimate(llama).activations - qv.activations == 4 * 13_984 * 1024

    all_seven = llama_estimate(llama)
    assert llama_estimate(llama, lora_target_modules="all-linear").lora == all_seven.lora  # lm_head left out
    assert llama_estimate(llama, lora_target_modules=None).lora == qv.lora  # PEFT's Llama default
    assert llama_estimate(llama, lora_target_modules=r".*\.(q|v)_proj").lora == qv.lora
    # PEFT reads a plain string as a regex over the full name, so "q_proj" alone adapts nothing.
    assert llama_estimate(llama, lora_target_modules="q_proj").lora == 0
    assert llama_estimate(llama, lora_target_modules=["self_attn.q_proj", "v_proj"]).lora == qv.lora
    assert llama_estimate(llama, lora_r=32).lora == 2 * all_seven.lora


def test_lora_dropout_adds_a_one_byte_mask_per_adapted_input(llama):
    # Each adapter's input gets a bool mask: 6 x 1024 + 2816 = 8,960 bytes per token and layer.
    added = llama_estimate(llama, lora_dropout=0.05).activations - llama_estimate(llama).activations
    assert added == 4 * 8_960 * 1024


def test_logits_are_tiles_under_trl_and_the_full_vocabulary_without_the_fused_head(llama):
    # Triton folds the tiles in place: buffer 67,108,864 + hidden states 8,388,608 = 75,497,472.
    assert llama_estimate(llama, triton=True).logits == 75_497_472
    # transformers' own loss: 1024 tokens x 32000 words x 3 fp32 tensors of 4 bytes = 393,216,000.
    assert llama_estimate(llama, fused_lm_head=False).logits == 393_216_000


def test_fp32_weights_cost_four_bytes_a_parameter(llama):
    assert llama_estimate(llama, weight_dtype=torch.float32).weights == 110_633_984 * 4
    assert llama_estimate(llama, weight_dtype="float16").weights == 110_633_984 * 2
    with pytest.raises(ValueError, match="unknown weight dtype"):
        llama_estimate(llama, weight_dtype="int3")


# ---------------------------------------------------------------------------------------------------------------
# The real shape: Qwen2.5-7B-Instruct


def test_building_a_7b_model_on_the_meta_device_is_fast():
    on_meta(Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, vocab_size=100))  # imports the Qwen2 modelling code once
    start = time.perf_counter()
    config = qwen2_7b_config()
    model = on_meta(config)
    estimate_training_memory(model, config, batch_size=8, max_length=2048, weight_dtype="bfloat16",
                             load_in_4bit=False, lora_r=16, lora_target_modules=SEVEN, activation_checkpointing=True)
    assert time.perf_counter() - start < 2.0


def test_qwen2_7b_at_batch_8_by_2048_fits_the_h100_budget(qwen):
    estimate = qwen_h100_estimate(qwen)
    # Embedding and LM head 152,064 x 3,584 = 544,997,376 each. One layer: q 3584 x 3584 = 12,845,056
    # (+3,584 bias), k and v 3584 x 512 = 1,835,008 (+512 bias) each, o 12,845,056, gate/up/down
    # 3584 x 18944 = 67,895,296 each, norms 7,168: 233,057,792. 28 layers = 6,525,618,176;
    # + 2 x 544,997,376 + final norm 3,584 = 7,615,616,512 params x 2 bytes = 15,231,233,024 (15.2 GB).
    assert estimate.architecture.params == 7_615_616_512
    assert estimate.weights / GB == pytest.approx(15.2, abs=0.1)
    # r=16 on all seven: 16 x (7168 + 4096 + 4096 + 7168 + 3 x 22528) = 1,441,792 per layer x 28 = 40,370,176.
    assert estimate.lora == 40_370_176 * 16
    report = Report()
    check_memory(estimate, platform_budget_gb("h100"), report, gradient_accumulation_steps=2)
    assert [f.level for f in report.findings] == [OK]
    assert estimate.total < 0.85 * 70 * GB


def test_qwen2_7b_in_4bit_at_batch_1_by_1024_is_plausible_on_an_m4(qwen):
    estimate = qwen_h100_estimate(qwen, batch_size=1, max_length=1024, load_in_4bit=True)
    # Linear weights in the layers: 28 x (12,845,056 x 2 + 1,835,008 x 2 + 67,895,296 x 3) = 6,525,288,448
    #   x 0.5625 = 3,670,474,752; the other 1,090,328,064 params (embeddings, LM head, norms, biases) x 2
    #   = 2,180,656,128; together 5,851,130,880.
    assert estimate.weights == 5_851_130_880
    assert 6 * GB < estimate.total < 0.85 * 28 * GB


# ---------------------------------------------------------------------------------------------------------------
# Per GPU under FSDP: the model's state in shards, each process's activations whole


def test_fsdp_splits_weights_and_lora_state_over_the_processes_and_adds_the_layers_it_gathers(llama):
    whole = llama_estimate(llama)
    sharded = llama_estimate(llama, shards=2)
    # Weights: 221,267,968 bytes / 2 = 110,633,984. LoRA weights, grads and AdamW: 18,612,224 / 2 = 9,306,112.
    assert sharded.weights == 110_633_984
    assert sharded.lora == 9_306_112
    # Gathered at the backward's peak: two whole decoder layers (the one computing and the one prefetched),
    # 11,274,240 params each (see the hand-worked breakdown) x 2 bytes = 22,548,480, and the final norm + LM
    # head, which stay gathered from the loss into the backward: 1,024 + 32,768,000 = 32,769,024 params x 2
    # = 65,538,048. Together 2 x 22,548,480 + 65,538,048 = 110,635,008.
    assert sharded.gathered == 110_635_008
    # Each process still computes its own micro-batch.
    assert (sharded.activations, sharded.logits, sharded.overhead) == (whole.activations, whole.logits,
                                                                        whole.overhead)
    assert whole.gathered == 0
    assert sharded.total == whole.total - whole.weights - whole.lora + 110_633_984 + 9_306_112 + 110_635_008


def test_a_sharded_estimate_names_the_shard_and_the_gathered_layers(llama):
    assert llama_estimate(llama, shards=8).lines() == [
        "weights (1/8 shard) 0.03 GB", "LoRA params+grads+AdamW (1/8 shard) 0.00 GB", "activations 0.23 GB",
        "logits 1.03 GB", "overhead 1.50 GB", "gathered layers 0.11 GB", "total 2.9 GB"]


def test_4bit_layers_are_gathered_packed_and_the_lm_head_in_the_model_dtype(llama):
    sharded = llama_estimate(llama, shards=4, load_in_4bit=True)
    # A layer's Linear weights 11,272,192 x 0.5625 = 6,340,608 bytes, its two norms 2,048 x 2 = 4,096:
    # 6,344,704 per layer, two of them 12,689,408; the head and final norm 65,538,048 as in bf16.
    assert sharded.gathered == 12_689_408 + 65_538_048


def llama_70b_config() -> LlamaConfig:
    return LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                       num_key_value_heads=8, vocab_size=128256)


def test_a_70b_model_that_no_h100_holds_whole_fits_each_of_eight_when_sharded():
    config = llama_70b_config()
    estimate = estimate_training_memory(on_meta(config), config, batch_size=1, max_length=2048,
                                        weight_dtype="bfloat16", load_in_4bit=False, lora_r=16,
                                        lora_target_modules=SEVEN, activation_checkpointing=True)
    # 70.55B parameters x 2 bytes = 141 GB on one GPU.
    assert estimate.weights / GB == pytest.approx(141.1, abs=0.1)
    sharded = estimate.with_settings(shards=8)
    assert sharded.weights / GB == pytest.approx(141.1 / 8, abs=0.1)
    # Two layers of 856M parameters and the 1.05B-parameter head, in bf16: 5.5 GB.
    assert sharded.gathered / GB == pytest.approx(5.5, abs=0.1)
    assert estimate.total > 70 * GB
    assert sharded.total < 0.85 * 70 * GB


def test_over_budget_on_several_processes_the_advice_includes_sharding_them(qwen):
    estimate = qwen_h100_estimate(qwen)  # 24.3 GB on each GPU holding the whole 7B
    finding = findings(estimate, 12, gradient_accumulation_steps=2, processes=8)
    assert finding.level == ERROR
    assert "distributed_strategy: fsdp" in finding.hint
    alone = findings(estimate, 12, gradient_accumulation_steps=2)
    assert "distributed_strategy" not in alone.hint, "one process has nothing to shard over"
    already = findings(estimate.with_settings(shards=8), 5, gradient_accumulation_steps=2, processes=8)
    assert "distributed_strategy" not in already.hint


# ---------------------------------------------------------------------------------------------------------------
# The budget check


def findings(estimate, budget_gb, **current):
    report = Report()
    check_memory(estimate, budget_gb, report, **current)
    assert len(report.findings) == 1
    return report.findings[0]


@pytest.mark.parametrize(("share", "level"), [(0.5, OK), (0.84, OK), (0.86, WARNING), (0.99, WARNING),
                                              (1.01, ERROR), (3.0, ERROR)])
def test_check_memory_is_ok_to_85_percent_then_warns_then_errs_over_budget(llama, share, level):
    estimate = llama_estimate(llama)
    finding = findings(estimate, estimate.total / GB / share)
    assert finding.level == level
    assert str(estimate) in finding.message
    assert (finding.hint is None) == (level == OK)


def test_no_budget_skips_with_an_ok_line(llama):
    finding = findings(llama_estimate(llama), platform_budget_gb("cpu"))
    assert finding.level == OK
    assert "no memory budget for this platform" in finding.message
    assert (platform_budget_gb("h100"), platform_budget_gb("m4"), platform_budget_gb("cpu")) == (70, 28, None)
    assert platform_budget_gb("h100", 75) == 75
    assert platform_budget_gb("cpu", 12.5) == 12.5


SETTING_OF_KEY = {"per_device_train_batch_size": "batch_size", "max_length": "max_length",
                  "activation_checkpointing": "activation_checkpointing", "load_in_4bit": "load_in_4bit"}


def advised_settings(hint: str) -> dict:
    """The key: value pairs a hint names, as estimate settings (gradient accumulation kept apart)."""
    named = dict(re.findall(r"(\w+): (\w+)", hint))
    settings = {}
    for key, value in named.items():
        if key in SETTING_OF_KEY:
            settings[SETTING_OF_KEY[key]] = value == "true" if value in ("true", "false") else int(value)
    return settings, int(named.get("gradient_accumulation_steps", 0))


@pytest.mark.parametrize(
    ("changes", "budget_gb", "accumulation", "first_advice"),
    [
        # H100 config without checkpointing: 135 GB of activations; checkpointing alone fixes it.
        ({"activation_checkpointing": False}, 70, 2, "activation_checkpointing: true"),
        # The H100 config on a 28 GB Mac: a smaller batch with more accumulation keeps the effective batch.
        ({}, 28, 2, "per_device_train_batch_size: 1 and gradient_accumulation_steps: 16"),
        # Just above 85 % of a 36 GB card: a warning whose advice leaves headroom.
        ({}, 36, 2, "per_device_train_batch_size: 4 and gradient_accumulation_steps: 4"),
        # Far over: no single change is enough, so they are stacked in order.
        ({"batch_size": 16, "max_length": 4096, "activation_checkpointing": False}, 28, 1,
         "activation_checkpointing: true, per_device_train_batch_size: 1"),
    ],
)
def test_the_advice_names_values_that_really_bring_the_estimate_under_budget(qwen, changes, budget_gb,
                                                                              accumulation, first_advice):
    estimate = qwen_h100_estimate(qwen, **changes)
    finding = findings(estimate, budget_gb, gradient_accumulation_steps=accumulation)
    assert finding.level in (WARNING, ERROR)
    assert first_advice in finding.hint
    settings, new_accumulation = advised_settings(finding.hint)
    fixed = estimate.with_settings(**settings)
    assert fixed.total <= 0.85 * budget_gb * GB
    assert f"(estimated {fixed.total / GB:.1f} GB)" in finding.hint
    if "batch_size" in settings:  # same effective batch
        assert settings["batch_size"] * new_accumulation == estimate.settings.batch_size * accumulation


def test_when_nothing_fits_the_hint_says_how_far_off_it_stays(qwen):
    # Even in 4-bit at batch 1 x 256 the 7B weights alone (5.85 GB) are over 85 % of 5 GB.
    finding = findings(qwen_h100_estimate(qwen), 5)
    assert finding.level == ERROR
    assert finding.hint.startswith("even with per_device_train_batch_size: 1")
    assert "max_length: 256, load_in_4bit: true the estimate is" in finding.hint
    assert "train a smaller model, or set memory_budget_gb" in finding.hint


def test_check_memory_judges_the_current_values_it_is_given(llama):
    estimate = llama_estimate(llama)
    bigger = estimate.with_settings(batch_size=8)
    finding = findings(estimate, bigger.total / GB / 0.9, batch_size=8)
    assert finding.level == WARNING
    assert str(bigger) in finding.message


def test_the_suggested_levers_go_least_disruptive_first(llama):
    estimate = llama_estimate(llama, batch_size=6, max_length=1024)
    levers = list(memory.memory_levers(estimate.settings, accumulation=2))
    advice = [[text for _, text in lever] for lever in levers]
    assert advice == [
        ["activation_checkpointing: true"],
        [f"per_device_train_batch_size: {b} and gradient_accumulation_steps: {12 // b} (same effective batch of 12)"
         for b in (3, 2, 1)],
        ["max_length: 512", "max_length: 256"],
        ["load_in_4bit: true"],
    ]
    # Sharding over several processes changes no result either; it costs the layers' all-gathers.
    with_processes = [[text for _, text in lever] for lever in memory.memory_levers(estimate.settings, 2, 4)]
    assert with_processes == advice[:2] + [["distributed_strategy: fsdp"]] + advice[2:]
