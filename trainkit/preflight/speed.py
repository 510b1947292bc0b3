"""Speed settings trainkit decides for the user: activation checkpointing only when memory needs it.

    activation_checkpointing: auto     # in a config: the memory estimate decides, the preflight says which

Recomputing every layer's activations in the backward pass costs ~20-30 % of step time (4·N·tokens of
FLOPs per step become 6·N·tokens). TRL turns it on by default; trainkit turns it on only when the run
would not fit in the platform's memory budget, with headroom, without it.
"""

from __future__ import annotations


def set_activation_checkpointing(sft, on: bool) -> None:
    """TrainingArguments keeps the deprecated gradient_checkpointing name as a mirror; TRL still reads it."""
    sft.activation_checkpointing = on
    sft.gradient_checkpointing = on


def decide_activation_checkpointing(estimate, budget_gb: float | None, sft, report) -> bool:
    """Off when the estimate without it stays within the budget's warning line; says so in `report`.

    `estimate` is a trainkit.preflight.memory.MemoryEstimate of this run; no budget (CPU) means nothing to save.
    """
    from trainkit.preflight.memory import GB, WARNING_FRACTION

    without = estimate.with_settings(activation_checkpointing=False)
    if budget_gb is None:
        on, why = False, f"no memory budget on this platform (estimated peak without it {without.total / GB:.1f} GB)"
    elif without.total <= WARNING_FRACTION * budget_gb * GB:
        on, why = False, (f"estimated peak without it {without.total / GB:.1f} GB fits "
                          f"{WARNING_FRACTION:.0%} of the {budget_gb:g} GB budget")
    else:
        with_it = estimate.with_settings(activation_checkpointing=True)
        on, why = True, (f"without it the estimated peak is {without.total / GB:.1f} GB, over "
                         f"{WARNING_FRACTION:.0%} of the {budget_gb:g} GB budget ({with_it.total / GB:.1f} GB with it)")
    set_activation_checkpointing(sft, on)
    report.ok(f"activation checkpointing: auto -> {'on' if on else 'off'}: {why}")
    return on


def check_lm_head_target(config, report) -> None:
    """TRL 1.16 scores tokens from lm_head.weight directly (its fused, chunked LM head), so it refuses an adapter on
    lm_head when the trainer is built, after the model has loaded; say so before."""
    targets = config.model.lora_target_modules
    names = [targets] if isinstance(targets, str) else list(targets or [])
    if "lm_head" in names:
        report.error("lora_target_modules includes lm_head, which TRL's fused LM head never trains (TRL refuses it)",
                     "remove lm_head from lora_target_modules (the projections inside the layers are what LoRA trains)")


def check_attention(config, report) -> None:
    """The attention chosen while parsing (trainkit.config.attention), and why."""
    chosen = config.attention
    if chosen is not None:
        report.ok(f"attention: {chosen.label} ({chosen.why})")


def check_padding_free_attention(config, report) -> None:
    """Padding-free rows are fast only with a varlen kernel: SDPA and eager get a dense block mask over the row."""
    from trainkit.config.attention import KERNELS_PIN, is_varlen

    sft, attention = config.sft, config.model.attn_implementation
    padding_free = sft.padding_free or (sft.packing and sft.packing_strategy in ("bfd", "bfd_split"))
    if padding_free and not is_varlen(attention):
        hint = (f"install the pinned {KERNELS_PIN} (scripts/setup_runpod_h100.sh does) so attn_implementation: auto "
                "picks flash-attn from the Hub; or compare packing: false with make bench"
                if config.device == "cuda" else "packing: false may be faster here: make bench measures both")
        report.warning(f"padding-free batches with {attention} attention: correct, but each packed row pays for a "
                       "block mask over its whole length, slower than padded batches on CPU with make bench", hint)


def check_eval_batches(config, report) -> None:
    """A packed, padding-free eval batch flattens per_device_eval_batch_size bins into one row (8 bins of 2,048 tokens:
    a 16,384-token row, a 16k x 16k mask under SDPA): keep it to one bin per device unless eval_packing is set."""
    sft = config.sft
    strategy = str(getattr(sft.eval_strategy, "value", sft.eval_strategy))
    padding_free = sft.padding_free or (sft.packing and sft.packing_strategy in ("bfd", "bfd_split"))
    if strategy == "no" or not sft.packing or sft.eval_packing is not None or not padding_free:
        return
    rows = sft.per_device_eval_batch_size
    if rows <= 1:
        return
    sft.per_device_eval_batch_size = 1
    width = rows * sft.max_length
    report.ok(f"eval batches: one packed row of up to {sft.max_length:,} tokens per device "
              f"(per_device_eval_batch_size {rows} -> 1: {rows} bins would be one {width:,}-token row); "
              f"set eval_packing: true to keep {rows}")
