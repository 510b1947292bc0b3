"""Greedy generation with an mlx-lm model, for the tool-call evaluation of backend: mlx.

    texts = generate(model, tokenizer, prompts, max_new_tokens=128)

The same contract as trainkit.evaluate.tool_eval.generate on torch: token-id prompts in, replies out,
each ending before its first stop token (the model's generation_config eos ids plus the tokenizer's,
trainkit.evaluate.adapters.stop_token_ids), special tokens kept; None when stopped midway. The MLX
session gives its model the generation_config the torch model would load, so the stop tokens agree.
"""

from __future__ import annotations

from collections.abc import Callable


def is_mlx_model(model) -> bool:
    return type(model).__module__.startswith("mlx_lm.")


def generate(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int,
             should_stop: Callable[[], bool] = lambda: False) -> list[str] | None:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    from trainkit.evaluate.adapters import stop_token_ids

    stops = set(stop_token_ids(model, tokenizer))
    texts = []
    was_training = model.training
    model.eval()  # LoRA dropout off, as torch's model.eval()
    try:
        for ids in prompts:
            if should_stop():
                return None
            new = []
            # generate_step's default sampler is the argmax: greedy, as the torch evaluation.
            for token, _ in generate_step(mx.array(ids), model, max_tokens=max_new_tokens):
                if token in stops:
                    break
                new.append(token)
            texts.append(tokenizer.decode(new, skip_special_tokens=False).strip())
    finally:
        if was_training:
            model.train()
    return texts
