"""Throughput for a plan: measured on this CPU where a FLOP count says little, else estimated.

A small model on a CPU runs far below any FLOP rate: per-step overhead (collation, padding, the
trainer's callbacks), not arithmetic, sets the pace, and decoding (the tool-call evaluation) is
slower again. suggest_config.py therefore measures when the machine it plans for is this CPU and
the model is small enough to time in a few seconds: a few steps of trainkit's own trainer on the
suggested config (trainkit.bench.calibrate) and a greedy generation (generation_rate). Anywhere
else the FLOP estimate (trainkit.preflight.duration) stands, and every figure says which it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

MAX_PARAMS = 200e6  # above this, timing steps on a CPU takes longer than the advice is worth
NEW_TOKENS = 16
# Decoding runs one token per forward pass with a cache: far below the training rate. Where nothing
# is measured, tokens/s for generation is the training rate divided by this.
DECODE_SLOWDOWN = 25.0


@dataclass(frozen=True)
class Throughput:
    tokens_per_second: float  # training: tokens in the batches per second of optimizer steps
    generated_per_second: float  # greedy generation, one sequence
    how: str  # "measured on this CPU: ...", "given with --tokens-per-second", "estimated from FLOPs, not measured"


def generation_rate(model_dir: Path, seed: int = 0) -> float | None:
    """Tokens/s of a greedy generation of NEW_TOKENS by the architecture in MODEL_DIR (its weights do not
    change the time, so none are read); None when its config cannot be read here."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError):
        return None
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    prompt = torch.randint(0, config.vocab_size, (1, 64))
    with torch.no_grad():
        began = time.perf_counter()
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
        seconds = time.perf_counter() - began
    return max(1, out.shape[1] - prompt.shape[1]) / seconds
