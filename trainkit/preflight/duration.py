"""How long a run takes, computed from FLOPs and the chip before any step has been measured.

    seconds, line = duration_estimate(params=7.6e9, tokens=48e6, device="mps", chip="Apple M4 Max",
                                      checkpointing=True, load_in_4bit=False)

LoRA over a frozen base costs about 4 x parameters FLOP per token (forward 2N, backward to the inputs
2N: no weight gradients for the base), 6 x with activation checkpointing (the forward again). The chip
gives a peak (vendor bf16/fp16 dense figures, PEAK_TFLOPS) and a run sustains a share of it
(SUSTAINED_SHARE: small micro-batches, padding, the optimizer and the data pipeline). 4-bit weights
are dequantised on every use (QLORA_SLOWDOWN). The result is an estimate and says so; train.py
replaces it with the measured one after estimate_after_steps.
"""

from __future__ import annotations

import sys

# Peak dense bf16/fp16 TFLOP/s by chip or card name; the longest name contained in the device's name wins.
PEAK_TFLOPS = {
    "H200": 989.0, "GH200": 989.0, "H100": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "A100": 312.0,
    "L40S": 362.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0,
    "RTX 3090": 71.0, "A6000": 155.0,
    "Apple M1": 2.6, "Apple M1 Pro": 5.2, "Apple M1 Max": 10.4, "Apple M1 Ultra": 21.0,
    "Apple M2": 3.6, "Apple M2 Pro": 6.8, "Apple M2 Max": 13.6, "Apple M2 Ultra": 27.2,
    "Apple M3": 4.1, "Apple M3 Pro": 7.4, "Apple M3 Max": 16.4, "Apple M3 Ultra": 28.2,
    "Apple M4": 4.3, "Apple M4 Pro": 9.2, "Apple M4 Max": 18.4,
}
# The chip assumed when this machine is not the one the config is for (validating a Mac's config on Linux).
PLATFORM_CHIP = {"h100": "H100", "m4": "Apple M4"}
SUSTAINED_SHARE = {"cuda": 0.15, "mps": 0.35, "mlx": 0.35}
CPU_FLOPS = 0.05e12  # a few cores in fp32; make bench measures this machine's
QLORA_SLOWDOWN = 1.3
EVAL_SHARE = 0.05  # of the training time, what evaluation is planned to cost (suggest_config.py's eval_steps)


def peak_flops(chip: str | None) -> float | None:
    if not chip:
        return None
    found = [name for name in PEAK_TFLOPS if name.lower() in chip.lower()]
    return PEAK_TFLOPS[max(found, key=len)] * 1e12 if found else None


def this_chip(device: str) -> str | None:
    """The accelerator's name on this machine: the CUDA card, or the Apple chip; None when it cannot say."""
    try:
        if device == "cuda":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        if device in ("mps", "mlx") and sys.platform == "darwin":
            from trainkit.preflight.gpu import apple_chip

            return apple_chip()
    except Exception:  # a name is a courtesy: the platform's default chip stands in
        return None
    return None


def sustained_flops(device: str, chip: str | None) -> tuple[float, str]:
    """FLOP/s a LoRA run sustains on `device` ("cuda", "mps", "mlx", "cpu") with `chip`, and how it was found."""
    peak = peak_flops(chip)
    if device == "cpu" or peak is None or device not in SUSTAINED_SHARE:
        return CPU_FLOPS, "an assumed CPU rate"
    share = SUSTAINED_SHARE[device]
    return peak * share, f"{share:.0%} of the {chip}'s ~{peak / 1e12:g} TFLOP/s peak"


def flop_per_token(params: float, checkpointing: bool) -> float:
    return (6 if checkpointing else 4) * params


def duration_estimate(*, params: float, tokens: float, device: str, chip: str | None, checkpointing: bool,
                      load_in_4bit: bool) -> tuple[float, str]:
    """(seconds, a line saying how they were computed)."""
    per_token = flop_per_token(params, checkpointing)
    flops, how = sustained_flops(device, chip)
    if load_in_4bit:
        flops /= QLORA_SLOWDOWN
        how += f", / {QLORA_SLOWDOWN} for the 4-bit base"
    seconds = tokens * per_token / flops
    return seconds, (f"{count(tokens)} tokens x {count(per_token)}FLOP/token "
                     f"({6 if checkpointing else 4} x {count(params).replace(' G', ' B')} parameters"
                     f"{', activation checkpointing' if checkpointing else ''}) at ~{count(flops)}FLOP/s "
                     f"sustained ({how})")


def count(n: float) -> str:
    """3 significant digits with a unit prefix: 24.6 M, 7.62 B, 148 T (FLOP's G and T read as giga, tera)."""
    for factor, unit in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if n >= factor:
            return f"{n / factor:.3g}{unit}"
    return f"{n:.3g} "


def rough(seconds: float) -> str:
    """An estimate's precision: minutes below two hours, hours below two days, then days."""
    if seconds < 60:
        return "under a minute"
    if seconds < 2 * 3600:
        return f"~{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"~{seconds / 3600:.0f} h"
    return f"~{seconds / 86400:.1f} days"


def check_duration(config, params: int, tokens_per_example: float | None, report) -> float | None:
    """An OK line with the run's duration from FLOPs, labelled an estimate; the seconds, or None."""
    from trainkit.core.status import world_size

    sft = config.sft
    if not sft.max_steps or sft.max_steps <= 0:
        return None
    sequences = sft.per_device_train_batch_size * sft.gradient_accumulation_steps * world_size()
    per_example = tokens_per_example or (sft.max_length or 1024) / 2
    tokens = sft.max_steps * sequences * per_example
    device = "mlx" if getattr(config.trainkit, "backend", "torch") == "mlx" else config.device
    here = config.device == ("cuda" if config.platform == "h100" else "mps" if config.platform == "m4" else "cpu")
    chip = this_chip(device) if here else None
    assumed = chip is None and config.platform in PLATFORM_CHIP
    chip = chip or PLATFORM_CHIP.get(config.platform)
    if config.platform == "cpu":
        device = "cpu"
    elif device == "cpu":
        device = "mps" if config.platform == "m4" else "cuda"
    seconds, how = duration_estimate(params=params, tokens=tokens, device=device, chip=chip,
                                     checkpointing=bool(sft.activation_checkpointing),
                                     load_in_4bit=bool(getattr(config.model, "load_in_4bit", False)))
    config.duration_seconds = seconds  # the dry run's plan prints the same figure
    after = config.trainkit.estimate_after_steps
    report.ok(f"duration estimate (from FLOPs, not measured): {rough(seconds)} for {sft.max_steps:,} steps "
              f"x {sequences} sequences x ~{per_example:,.0f} tokens = {how}"
              + (f"; {chip} assumed (this is not the machine)" if assumed else "")
              + (f"; the run prints its measured estimate after {after} steps" if after else ""))
    return seconds
