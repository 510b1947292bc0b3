"""Padding-free batches: examples never attend to each other, and the losses are the padded batches' losses.

TRL's collator flattens a padding-free batch into one row whose position_ids restart at 0 for each example,
and passes no attention_mask. transformers 5.23 turns restarting position_ids into a block-diagonal mask for
eager and SDPA attention (masking_utils.find_packed_sequence_indices) and into cu_seqlens for flash-attn's
varlen kernel (modeling_flash_attention_utils; TRL also passes cu_seq_lens_q/k itself). flash-attn cannot
run on CPU; these tests hold eager and SDPA to it.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ROOT

TINY = ROOT / "models" / "tiny-chat"
SAMPLE = ROOT / "data" / "sample" / "train.jsonl"


def examples(n: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:n]]
    return [tokenizer.apply_chat_template(r["messages"], tools=r.get("tools"), tokenize=True,
                                          return_dict=True)["input_ids"] for r in rows]


def model(attn: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY, attn_implementation=attn, dtype=torch.float32).eval()


def padding_free_batch(ids: list[list[int]]) -> dict:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    return collate([{"input_ids": x} for x in ids])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_an_example_inside_a_padding_free_batch_gets_the_logits_it_gets_alone(attn):
    ids = examples(3)
    lm = model(attn)
    batch = padding_free_batch(ids)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    with torch.no_grad():
        # use_cache=False as in training (TRL's compute_loss sets it): with a KV cache transformers skips
        # the packed-sequence detection, and the examples would attend to each other.
        packed = lm(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for x in ids:
            alone = lm(input_ids=torch.tensor([x])).logits[0]
            torch.testing.assert_close(packed[start:start + len(x)], alone, rtol=1e-4, atol=1e-4)
            start += len(x)


def test_without_restarting_positions_the_second_example_would_see_the_first():
    """The control: the comparison above does detect cross-example attention."""
    ids = examples(2)
    lm = model("sdpa")
    flat = torch.tensor([ids[0] + ids[1]])
    with torch.no_grad():
        leaked = lm(input_ids=flat, position_ids=torch.arange(flat.shape[1])[None],
                    use_cache=False).logits[0, len(ids[0]):]
        alone = lm(input_ids=torch.tensor([ids[1]])).logits[0]
    assert not torch.allclose(leaked, alone, rtol=1e-3, atol=1e-3)


def step_losses(tmp_path, name: str, steps: int, **sft) -> list[float]:
    import datasets
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    data = datasets.load_dataset("json", data_files=str(SAMPLE), split="train")
    args = SFTConfig(output_dir=str(tmp_path / name), max_steps=steps, per_device_train_batch_size=4,
                     learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                     bf16=False, seed=42, activation_checkpointing=False, **sft)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = SFTTrainer(model=str(TINY), args=args, train_dataset=data, peft_config=lora)
    trainer.train()
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


def test_padding_free_batches_train_with_the_padded_batches_losses_step_for_step(tmp_path):
    # Same examples in the same order: only the layout differs (max_length=None: TRL enforces no length
    # without packing; the sample's longest example is 423 tokens).
    padded = step_losses(tmp_path, "padded", 6, max_length=None)
    flat = step_losses(tmp_path, "flat", 6, max_length=None, padding_free=True)
    assert flat == pytest.approx(padded, rel=1e-4)
