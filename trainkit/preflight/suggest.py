"""A training config that fits this machine, chosen from the model's architecture, the memory and the data.

    machine = machine_for("h100", memory_gb=24)
    suggestion = suggest("Qwen/Qwen2.5-7B-Instruct", machine, data="data/processed/train.jsonl")
    Path("configs/mine.yaml").write_text(render_yaml(suggestion))

The architecture is built on the meta device (trainkit.preflight.checks), the peak memory comes from
trainkit.preflight.memory's estimate, and the lengths from the data rendered with the model's chat template
(or approximated from bytes when no tokenizer is available offline). What is chosen, in order:

- max_length covering at least 99 % of the examples (rounded up to 64), unless memory forbids;
- on a Mac, backend: mlx (trainkit's loop over mlx-lm), and the budget is the GPU's working set (Metal's
  figure on this Mac; two thirds of unified memory when planning for another);
- bf16 weights without activation checkpointing at the largest micro-batch that fits under 85 % of
  the budget (the preflight's warning line); failing that, with checkpointing; failing that, QLoRA
  (4-bit base weights: bitsandbytes on CUDA, MLX's quantization on a Mac); failing that, a shorter
  max_length;
- gradient accumulation up to the preset's effective batch; max_steps from epochs x examples /
  effective batch, or from --hours at the estimated throughput; learning rate by model size, scaled
  with the square root of the effective batch; warmup 3 % of the steps.

Every key comes with a one-line reason. Keys the preset, a config file or the command line fix are
kept as given (command line > config > preset > suggestion) and the search works around them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from trainkit.config import presets
from trainkit.core.errors import ConfigError
from trainkit.preflight.calibrate import MAX_PARAMS, Throughput
from trainkit.preflight.memory import (
    GB,
    WARNING_FRACTION,
    MemoryEstimate,
    Settings,
    describe,
    estimate_from,
    platform_budget_gb,
)

DEVICE_OF_PLATFORM = {"h100": "cuda", "m4": "mps", "cpu": "cpu"}
PLATFORM_MEMORY_GB = {"h100": 80, "m4": 32}
# What a run may plan to use of the accelerator's memory: 70 of an H100's 80 GB (memory.PLATFORM_BUDGET_GB),
# the rest left to what the estimate cannot see.
BUDGET_FRACTION = 0.875
# A Mac's GPU may keep about two thirds of unified memory resident (Metal's recommended working set);
# on the Mac itself Metal reports the exact figure.
MAC_WORKING_SET_SHARE = 2 / 3
DEFAULT_MAX_LENGTH = {"cuda": 2048, "mps": 1024, "cpu": 512}
MICRO_BATCHES = (16, 8, 4, 2, 1)
SEVEN_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
COVERAGE = 0.99
BYTES_PER_TOKEN_GUESS = 3.6  # UTF-8 bytes per BPE token for English chat text, when no tokenizer is at hand
# LoRA learning rate at an effective batch of 16, by base model size (parameters).
LR_BY_SIZE = ((1e9, 5e-4), (4e9, 3e-4), (15e9, 2e-4), (math.inf, 1e-4))
REFERENCE_BATCH = 16
DEFAULT_STEPS = 1000
MAX_EPOCHS = 10  # --hours never schedules more passes over the data than this
SOURCE_NAMES = ("command line", "config", "preset", "suggested")
# Keys the memory search takes as given when someone fixed them.
SEARCH_KEYS = ("lora_r", "lora_target_modules", "max_length", "per_device_train_batch_size",
               "gradient_accumulation_steps", "activation_checkpointing", "load_in_4bit", "bf16")


@dataclass(frozen=True)
class Machine:
    platform: str  # h100, m4 or cpu
    device: str  # cuda, mps or cpu
    memory_gb: float  # accelerator memory (system memory on CPU), as a card is sold: GiB
    memory_source: str
    working_set_gb: float | None = None  # a Mac's GPU working set as Metal reports it, on the Mac itself

    @property
    def budget_gb(self) -> float:
        if self.device == "mps":
            return round(self.working_set_gb or self.memory_gb * MAC_WORKING_SET_SHARE, 1)
        return round(self.memory_gb * BUDGET_FRACTION, 1)

    @property
    def budget_reason(self) -> str:
        if self.device != "mps":
            return f"{BUDGET_FRACTION:.1%} of {self.memory_gb:g} GB ({self.memory_source})"
        if self.working_set_gb:
            return f"the GPU's recommended working set of this Mac's {self.memory_gb:g} GB"
        return f"about two thirds of {self.memory_gb:g} GB ({self.memory_source}): a Mac GPU's working set"


@dataclass
class DataProfile:
    path: str
    lengths: list[int]  # tokens per example, sorted
    exact: bool  # counted with the model's tokenizer and chat template, not guessed from bytes

    @property
    def examples(self) -> int:
        return len(self.lengths)

    def covering(self, share: float) -> int:
        return self.lengths[max(0, math.ceil(share * len(self.lengths)) - 1)] if self.lengths else 0

    def cut_by(self, max_length: int) -> int:
        return sum(1 for n in self.lengths if n > max_length)

    @property
    def mean(self) -> float:
        return sum(self.lengths) / len(self.lengths) if self.lengths else 0.0


@dataclass
class Suggestion:
    model: str
    machine: Machine
    preset: presets.Preset
    values: dict = field(default_factory=dict)
    reasons: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    estimate: MemoryEstimate | None = None
    budget_gb: float | None = None
    seconds: float | None = None
    tokens_per_second: float | None = None
    throughput_source: str = "estimated"
    measurable: bool = False  # this CPU can time the plan (trainkit.bench.calibrate)
    model_dir: Path | None = None
    architecture_line: str = ""

    def set(self, key: str, value, reason: str) -> None:
        self.values[key] = value
        self.reasons[key] = reason
        self.sources[key] = "suggested"


# ---------------------------------------------------------------------------------------------------------------
# The machine


def detect_memory_gb(device: str) -> float:
    if device == "cuda":
        from trainkit.preflight.gpu import gpu_properties

        return round(gpu_properties().total_memory / 2**30, 1)
    import psutil

    return round(psutil.virtual_memory().total / 2**30, 1)


def machine_for(platform: str = "auto", memory_gb: float | None = None) -> Machine:
    """The machine to plan for: this one (auto), or a named platform; memory_gb overrides what is found."""
    from trainkit.config.settings import PLATFORM_OF_DEVICE, detect_device

    here = detect_device()
    if platform == "auto":
        platform = PLATFORM_OF_DEVICE[here]
    device = DEVICE_OF_PLATFORM[platform]
    if memory_gb is not None:
        return Machine(platform, device, float(memory_gb), "--memory-gb")
    if device == here == "mps":
        from trainkit.preflight.gpu import recommended_working_set_bytes
        from trainkit.preflight.memory import GB

        found = recommended_working_set_bytes("mlx") or recommended_working_set_bytes("torch")
        return Machine(platform, device, detect_memory_gb(device), "this machine",
                       round(found / GB, 1) if found else None)
    if device == here or platform == "cpu":
        return Machine(platform, device, detect_memory_gb(device), "this machine")
    return Machine(platform, device, float(PLATFORM_MEMORY_GB[platform]), f"a typical {platform}")


# ---------------------------------------------------------------------------------------------------------------
# The data


def profile_data(path: str, tokenizer=None) -> DataProfile:
    """Token lengths of every valid example: rendered as TRL renders them, or guessed from bytes."""
    from trainkit.data.checks import valid_examples
    from trainkit.data.training_view import TrainingView, tokenized_file

    if not Path(path).is_file():
        raise ConfigError(f"data file not found: {path}", "pass --data with a JSONL chat file")
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        # Untruncated lengths, tokenized the way the trainer will (trainkit.data.training_view).
        view = TrainingView(tokenizer, assistant_only_loss=False, max_length=None)
        lengths = [t.length for _, _, t in tokenized_file(view, path) if not isinstance(t, Exception)]
        return DataProfile(path, sorted(lengths), True)
    guessed = [math.ceil(len(json.dumps(example, ensure_ascii=False).encode()) / BYTES_PER_TOKEN_GUESS)
               for _, example in valid_examples(path)]
    return DataProfile(path, sorted(guessed), False)


def round_up(tokens: int, step: int = 64) -> int:
    return step * max(1, math.ceil(tokens / step))


# ---------------------------------------------------------------------------------------------------------------
# Memory: the search


def lora_targets(model) -> list[str] | str:
    from torch import nn

    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    found = [t for t in SEVEN_TARGETS if t in leaves]
    return found if len(found) >= 4 else "all-linear"


def settings(machine: Machine, *, batch: int, max_length: int, weight_bytes: int, load_in_4bit: bool,
             lora_r: int, checkpointing: bool) -> Settings:
    from trainkit.config.settings import detect_device

    # The preflight estimates with the fused loss's Triton kernel only when it runs on CUDA itself; plan with
    # the same (slightly higher) figure so the config passes the check on the machine that validates it.
    return Settings(batch_size=batch, max_length=max_length, weight_bytes=weight_bytes, load_in_4bit=load_in_4bit,
                    lora_r=lora_r, activation_checkpointing=checkpointing, lora_dropout=0.05, fused_lm_head=True,
                    triton=machine.device == "cuda" and detect_device() == "cuda")


@dataclass(frozen=True)
class Fit:
    batch: int
    max_length: int
    checkpointing: bool
    load_in_4bit: bool
    estimate: MemoryEstimate


def search(arch, machine: Machine, target_bytes: float, *, max_length: int, weight_bytes: int, lora_r: int,
           batch_cap: int, fixed: dict) -> tuple[Fit | None, list[str]]:
    """The first arrangement that fits under target_bytes, in order of preference, and notes on the way."""
    notes: list[str] = []
    batches = [fixed["per_device_train_batch_size"]] if "per_device_train_batch_size" in fixed else \
        [b for b in MICRO_BATCHES if b <= batch_cap] or [1]
    checkpointing = [fixed["activation_checkpointing"]] if "activation_checkpointing" in fixed else [False, True]
    quantized = [fixed["load_in_4bit"]] if "load_in_4bit" in fixed else \
        ([False, True] if can_quantize(machine, fixed) else [False])
    lengths = [max_length] if "max_length" in fixed else \
        [max_length] + [n for n in (max_length // 2, max_length // 4, max_length // 8) if n >= 256]

    def first_fit(length: int, four_bit: bool) -> Fit | None:
        for ckpt in checkpointing:
            for batch in batches:
                estimate = estimate_from(arch, settings(machine, batch=batch, max_length=length,
                                                        weight_bytes=weight_bytes, load_in_4bit=four_bit,
                                                        lora_r=lora_r, checkpointing=ckpt))
                if estimate.total <= target_bytes:
                    return Fit(batch, length, ckpt, four_bit, estimate)
        return None

    for length in lengths:
        for four_bit in quantized:
            fit = first_fit(length, four_bit)
            if fit is None:
                continue
            if four_bit and not quantized[0]:
                smallest = estimate_from(arch, settings(machine, batch=min(batches), max_length=length,
                                                        weight_bytes=weight_bytes, load_in_4bit=False,
                                                        lora_r=lora_r, checkpointing=max(checkpointing)))
                notes.append(f"QLoRA (load_in_4bit via {quantizer(machine)}): bf16 weights "
                             f"{smallest.weights / GB:.1f} GB plus activations need {smallest.total / GB:.1f} GB "
                             f"even at batch {min(batches)} and max_length {length} with activation "
                             f"checkpointing, over the "
                             f"{target_bytes / GB:.1f} GB planning target; 4-bit base weights bring it to "
                             f"{fit.estimate.total / GB:.1f} GB")
            return fit, notes
    return None, notes


# ---------------------------------------------------------------------------------------------------------------
# The suggestion


def backend_of(machine: Machine, fixed: dict) -> str:
    return fixed.get("backend", "mlx" if machine.platform == "m4" else "torch")


def can_quantize(machine: Machine, fixed: dict) -> bool:
    """4-bit base weights: bitsandbytes needs CUDA; MLX quantizes on a Mac."""
    return machine.device == "cuda" or (machine.platform == "m4" and backend_of(machine, fixed) == "mlx")


def quantizer(machine: Machine) -> str:
    return "bitsandbytes" if machine.device == "cuda" else "MLX"


def base_learning_rate(params: int) -> float:
    return next(lr for limit, lr in LR_BY_SIZE if params < limit)


def size_text(params: int) -> str:
    return f"{params / 1e9:.2g}B" if params >= 1e9 else f"{params / 1e6:.2g}M"


def two_digits(x: float) -> float:
    return float(f"{x:.2g}")


def flops_per_second(machine: Machine) -> float:
    """What a LoRA run sustains on the machine (trainkit.preflight.duration): this machine's chip when it is the
    one planned for, else the platform's (an H100; a 24 GB CUDA card; a base M4)."""
    from trainkit.preflight.duration import PLATFORM_CHIP, sustained_flops, this_chip

    chip = this_chip(machine.device) if machine.memory_source == "this machine" else None
    if chip is None:
        small_card = machine.device == "cuda" and machine.memory_gb < 70
        chip = "RTX 4090" if small_card else PLATFORM_CHIP.get(machine.platform)
    return sustained_flops(machine.device, chip)[0]


def tokens_per_second(params: int, machine: Machine, checkpointing: bool, load_in_4bit: bool) -> float:
    from trainkit.preflight.duration import QLORA_SLOWDOWN, flop_per_token

    tps = flops_per_second(machine) / flop_per_token(params, checkpointing)
    return tps / QLORA_SLOWDOWN if load_in_4bit else tps


def throughput(given: Throughput | None, machine: Machine, params: int, fit) -> Throughput:
    """Training and generation tokens/s for the plan: a measurement or --tokens-per-second, else the FLOP estimate."""
    from trainkit.preflight.calibrate import DECODE_SLOWDOWN

    if given is not None:
        return given
    tps = tokens_per_second(params, machine, fit.checkpointing, fit.load_in_4bit)
    return Throughput(tps, tps / DECODE_SLOWDOWN, "estimated from FLOPs, not measured")


def eval_every(validation: str, tokenizer, *, steps: int, save: int, train_seconds: float, tokens_per_second: float,
               generated_per_second: float, tokens_per_example: float) -> tuple[int, str]:
    """eval_steps, a multiple of save_steps, that keeps evaluation near EVAL_SHARE of the training time: each
    evaluation is a forward pass over the validation file plus the tool-call generations."""
    from trainkit.config.settings import TrainkitArguments
    from trainkit.preflight.duration import EVAL_SHARE

    examples = validation_examples(validation, tokenizer)
    defaults = TrainkitArguments()
    generations = min(defaults.tool_eval_samples, examples) * defaults.tool_eval_max_new_tokens
    # A forward pass is about a third of a training step (forward + backward twice its cost).
    one = examples * tokens_per_example / (3 * tokens_per_second) + generations / generated_per_second
    evaluations = max(1, math.floor(EVAL_SHARE * train_seconds / one)) if one > 0 else steps
    every = min(steps, max(save, math.ceil(steps / evaluations / save) * save))
    count = max(1, steps // every)
    return every, (f"{count} evaluation{'s' * (count > 1)} of ~{one:,.1f} s each (estimated: {examples} validation "
                   f"examples, up to {generations:,} generated tokens), ~{count * one / max(train_seconds, 1e-9):.0%} "
                   f"of the training time")


def validation_examples(path: str, tokenizer) -> int:
    try:
        return profile_data(path, tokenizer).examples
    except (ConfigError, OSError, UnicodeDecodeError):
        return 0


def suggest(model_name: str, machine: Machine, *, data: str | None = None, validation: str | None = None,
            hours: float | None = None, preset: str | None = None, config: dict | None = None,
            cli: dict | None = None, measured: Throughput | None = None,
            output_dir: str | None = None) -> Suggestion:
    """The config for `model_name` on `machine`; raises ConfigError when nothing can fit."""
    from trainkit.config.model_source import load_tokenizer, locate_model
    from trainkit.core.report import Report
    from trainkit.preflight.checks import build_meta_model

    chosen = presets.get(preset)
    config, cli = dict(config or {}), dict(cli or {})
    layers = [("command line", cli), ("config", config), (f"preset {chosen.name}", chosen.keys)]
    fixed = {}
    for _, values in reversed(layers):
        fixed.update(values)
    s = Suggestion(model_name, machine, chosen)

    if fixed.get("load_in_4bit") and not can_quantize(machine, fixed):
        raise ConfigError(f"load_in_4bit needs CUDA (bitsandbytes) or, on a Mac, backend: mlx, and this plan is "
                          f"for {machine.platform} with backend {backend_of(machine, fixed)}",
                          "remove load_in_4bit, or plan for a Mac with backend: mlx or an h100 (--platform)")
    source = locate_model(model_name)
    report = Report("SUGGEST")
    model = build_meta_model(source, report)
    if model is None:
        finding = report.findings[-1]
        raise ConfigError(finding.message, finding.hint)
    s.architecture_line = report.findings[-1].message
    params = sum(p.numel() for p in model.parameters())

    # Backend, precision and LoRA
    if machine.platform == "m4":
        s.set("backend", "mlx", "trainkit's loop over mlx-lm: 4-bit bases, no MPS attention bugs, the same "
                                "tokens, checkpoints and adapter format as torch")
    if machine.device == "cpu":
        s.set("bf16", False, "CPU trains in fp32: exact, and bf16 matmuls are slow there")
    else:
        s.set("bf16", True, f"{machine.platform} computes in bf16; half the weight memory of fp32")
    half = fixed.get("bf16", s.values["bf16"]) or fixed.get("fp16", False)
    weight_bytes = 2 if half else 4
    targets = lora_targets(model)
    lora_r = fixed.get("lora_r", 8 if params < 1e9 else 16)
    s.set("lora_r", lora_r, "rank 16 is the sweet spot for style/tool-use LoRA on 7-8B models"
          if lora_r == 16 else "a small model needs a small adapter")
    s.set("lora_alpha", 2 * lora_r, "2 x lora_r keeps the update scale independent of the rank")
    s.set("lora_dropout", 0.05, "light regularisation; more rarely helps LoRA")
    s.set("lora_target_modules", targets, "every attention and MLP projection: the most quality per parameter"
          if targets == SEVEN_TARGETS else "the linear layers this architecture has")

    # Data and max_length
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    context = getattr(text, "max_position_embeddings", None) or 4096
    profile = None
    if data:
        tokenizer = load_tokenizer(source, Report("SUGGEST"))
        profile = profile_data(data, tokenizer)
        if not profile.examples:
            raise ConfigError(f"{data} holds no valid chat example", f"check it: scripts/validate_training_config.py "
                              f"--config <yours> --train_file {data}")
        wanted = min(round_up(profile.covering(COVERAGE)), context)
        how = "tokens" if profile.exact else "tokens (guessed from bytes: no tokenizer offline)"
        s.notes.append(f"data: {profile.examples} examples in {data}; {how}: mean {profile.mean:.0f}, "
                       f"99th percentile {profile.covering(COVERAGE)}, longest {profile.lengths[-1]}")
    else:
        wanted = min(DEFAULT_MAX_LENGTH[machine.device], context)

    # Memory
    budget = fixed.get("memory_budget_gb", machine.budget_gb)
    target = WARNING_FRACTION * budget * GB
    arch = describe(model, model.config, fixed.get("lora_target_modules", targets))
    effective_target = chosen.effective_batch
    if profile:
        effective_target = max(1, min(effective_target, profile.examples // 10))
    fit, notes = search(arch, machine, target, max_length=fixed.get("max_length", wanted), weight_bytes=weight_bytes,
                        lora_r=lora_r, batch_cap=effective_target, fixed=fixed)
    if fit is None:
        four_bit = can_quantize(machine, fixed)
        smallest = estimate_from(arch, settings(machine, batch=1, max_length=256, weight_bytes=weight_bytes,
                                                load_in_4bit=four_bit, lora_r=lora_r, checkpointing=True))
        raise ConfigError(
            f"{model_name} does not fit {machine.platform} with {machine.memory_gb:g} GB: even batch 1, "
            f"max_length 256, activation checkpointing" + (", 4-bit" if four_bit else "")
            + f" needs {smallest.total / GB:.1f} GB, over the {target / GB:.1f} GB planning target "
            f"({WARNING_FRACTION:.0%} of a {budget:g} GB budget)",
            "train a smaller model, or plan for a machine with more memory (--platform, --memory-gb)",
        )
    s.notes += notes
    s.budget_gb = budget
    if budget != platform_budget_gb(machine.platform):
        s.set("memory_budget_gb", budget, f"{machine.budget_reason}; the preflight checks the estimate against it")
    if fit.max_length < wanted:
        cut = profile.cut_by(fit.max_length) if profile else None
        s.set("max_length", fit.max_length, f"memory forbids {wanted}" + (f": {cut} of {profile.examples} examples "
                                                                          "are cut" if profile else ""))
    elif profile:
        cut = profile.cut_by(fit.max_length)
        s.set("max_length", fit.max_length, f"covers {profile.examples - cut} of {profile.examples} examples "
                                            f"({cut} cut), rounded up to 64")
    else:
        s.set("max_length", fit.max_length, f"a default for {machine.platform}; pass --data to size it to the data")
    s.set("per_device_train_batch_size", fit.batch,
          f"the largest micro-batch whose estimate stays under {WARNING_FRACTION:.0%} of the budget"
          + (" without activation checkpointing" if not fit.checkpointing else ""))
    accumulation = fixed.get("gradient_accumulation_steps", max(1, math.ceil(effective_target / fit.batch)))
    effective = fit.batch * accumulation
    s.set("gradient_accumulation_steps", accumulation, f"an effective batch of {effective} "
                                                       f"({fit.batch} x {accumulation})")
    s.set("activation_checkpointing", fit.checkpointing,
          "it fits without: no recomputation, about a third faster" if not fit.checkpointing
          else "without it the activations do not fit at batch 1")
    if fit.load_in_4bit:
        s.set("load_in_4bit", True, f"bf16 weights and activations do not fit (see the QLoRA line); "
                                    f"{quantizer(machine)} quantizes the base")

    # Steps and duration
    tokens_per_example = min(profile.mean, fit.max_length) if profile else fit.max_length / 2
    rate = throughput(measured, machine, params, fit)
    tps, generated_tps, s.throughput_source = rate.tokens_per_second, rate.generated_per_second, rate.how
    # trainkit.bench.calibrate times the suggested config on this CPU, where a FLOP count says little.
    s.measurable = (machine.device == "cpu" and machine.memory_source == "this machine" and params <= MAX_PARAMS
                    and source.where in ("local", "cache"))
    s.model_dir = source.config_dir
    seconds_per_step = effective * tokens_per_example / tps
    if hours:
        steps = max(1, int(hours * 3600 / seconds_per_step))
        epochs = steps * effective / profile.examples if profile and profile.examples else 0
        if epochs > MAX_EPOCHS:
            capped = max(1, math.ceil(MAX_EPOCHS * profile.examples / effective))
            s.notes.append(f"--hours {hours:g} at ~{tps:,.0f} tokens/s would be {steps:,} steps, {epochs:,.0f} epochs "
                           f"of {profile.examples} examples: capped at {MAX_EPOCHS} epochs ({capped:,} steps, about "
                           f"{format_duration(capped * seconds_per_step)}); more passes over the same data overfit it")
            s.set("max_steps", capped, f"{MAX_EPOCHS} epochs of {profile.examples} examples (--hours {hours:g} "
                                       f"would be {epochs:,.0f} epochs)")
            steps = capped
        else:
            s.set("max_steps", steps, f"fills {hours:g} h at ~{tps:,.0f} tokens/s ({s.throughput_source})")
    elif profile:
        steps = max(1, math.ceil(chosen.epochs * profile.examples / effective))
        s.set("max_steps", steps,
              f"{chosen.epochs:g} epochs x {profile.examples} examples / effective batch {effective}")
    else:
        steps = DEFAULT_STEPS
        s.set("max_steps", steps, "a placeholder: pass --data (epochs x examples) or --hours to size it")
    s.seconds = steps * seconds_per_step
    s.tokens_per_second = tps
    lr = two_digits(base_learning_rate(params) * math.sqrt(effective / REFERENCE_BATCH) * chosen.lr_scale)
    lr = min(max(lr, 2e-5), 1e-3)
    s.set("learning_rate", lr, f"LoRA on a {size_text(params)} model at effective batch {effective}"
          + (f", x{chosen.lr_scale:g} for the {chosen.name} preset" if chosen.lr_scale != 1 else ""))
    s.set("lr_scheduler_type", "cosine", "decays smoothly to zero by max_steps")
    s.set("warmup_steps", max(1, min(200, round(0.03 * steps))), "about 3% of the steps")
    s.set("logging_steps", max(1, min(10, steps // 100)), "a loss line often enough to see a trend")
    save = max(1, steps // chosen.checkpoints_per_run)
    s.set("save_steps", save, f"about {chosen.checkpoints_per_run} checkpoints per run")
    s.set("save_total_limit", 3, "keeps the disk bounded; the final adapter is saved separately")
    if steps < 200:
        s.set("estimate_after_steps", max(1, steps // 4), "a short run: the time estimate after a quarter of it")

    # Where things are
    s.set("platform", machine.platform, f"tags the progress lines and picks the {machine.platform} memory budget")
    s.set("model_name_or_path", model_name, "the base model")
    if data:
        s.set("train_file", data, "the data this config was sized for")
    if validation:
        s.set("validation_file", validation, "evaluated every save_steps")
        s.set("eval_strategy", "steps", "evaluation loss and tool-call accuracy alongside the checkpoints")
        every, reason = eval_every(validation, tokenizer if data else None, steps=steps, save=save,
                                   train_seconds=s.seconds, tokens_per_second=tps, generated_per_second=generated_tps,
                                   tokens_per_example=tokens_per_example)
        s.set("eval_steps", every, reason)
        s.set("per_device_eval_batch_size", fit.batch, "the training micro-batch fits, so this does")
    short = model_name.rstrip("/").rsplit("/", 1)[-1].lower()
    s.set("output_dir", output_dir or f"outputs/{short}-{machine.platform}", "checkpoints, status.json, the adapter")
    s.set("report_to", ["wandb"], "W&B (offline without a key); status.json has the same figures")

    layer_over(s, layers)
    s.estimate = estimate_from(arch, settings(
        machine, batch=s.values["per_device_train_batch_size"], max_length=s.values["max_length"],
        weight_bytes=weight_bytes, load_in_4bit=bool(s.values.get("load_in_4bit")), lora_r=s.values["lora_r"],
        checkpointing=bool(s.values["activation_checkpointing"])))
    return s


def layer_over(s: Suggestion, layers) -> None:
    """Preset, config and command-line keys replace the suggestion's, strongest last."""
    for name, values in reversed(layers):
        for key, value in values.items():
            if s.values.get(key) == value and s.sources.get(key) == "suggested":
                s.sources[key] = f"{name} (as suggested)"
                continue
            s.values[key] = value
            s.sources[key] = name
            s.reasons[key] = f"from the {name}"


# ---------------------------------------------------------------------------------------------------------------
# Output

GROUPS = (
    ("Where", ("platform", "backend", "model_name_or_path", "train_file", "validation_file", "output_dir")),
    ("Length of the run", ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                           "learning_rate", "lr_scheduler_type", "warmup_steps", "max_length")),
    ("Memory", ("bf16", "activation_checkpointing", "load_in_4bit", "memory_budget_gb")),
    ("LoRA", ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")),
    ("Logging, checkpoints, evaluation", ("logging_steps", "estimate_after_steps", "save_steps", "save_total_limit",
                                          "eval_strategy", "eval_steps", "per_device_eval_batch_size",
                                          "report_to")),
)


def yaml_value(value) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def plan_line(s: Suggestion) -> str:
    v = s.values
    effective = v["per_device_train_batch_size"] * v["gradient_accumulation_steps"]
    return (f"effective batch {effective} ({v['per_device_train_batch_size']} x {v['gradient_accumulation_steps']}), "
            f"{v['max_steps']} steps, expected duration ~{format_duration(s.seconds)} at ~{s.tokens_per_second:,.0f} "
            f"tokens/s ({s.throughput_source}; the run measures its own after estimate_after_steps)")


def memory_line(s: Suggestion) -> str:
    share = s.estimate.total / (s.budget_gb * GB)
    return (f"estimated peak {s.estimate.total / GB:.1f} GB, {share:.0%} of the {s.budget_gb:g} GB budget "
            f"({s.machine.memory_gb:g} GB, {s.machine.memory_source}): {s.estimate}")


def render_yaml(s: Suggestion) -> str:
    lines = [
        f"# Suggested by scripts/suggest_config.py for {s.model} on {s.machine.platform} "
        f"({s.machine.memory_gb:g} GB, {s.machine.memory_source}), preset {s.preset.name}.",
        f"# Memory: {memory_line(s)}",
        f"# Plan: {plan_line(s)}",
    ]
    lines += [f"# {note}" for note in s.notes]
    lines += ["# Precedence: command line > this file > preset > suggestion > TRL defaults. Check it with",
              "#   scripts/validate_training_config.py --config <this file>"]
    written = set()
    for title, keys in GROUPS:
        present = [k for k in keys if k in s.values]
        if not present:
            continue
        lines += ["", f"# {title}"]
        for key in present:
            lines.append(f"{key}: {yaml_value(s.values[key])}  # {s.reasons[key]}")
            written.add(key)
    rest = [k for k in s.values if k not in written]
    if rest:
        lines += ["", "# Other keys"]
        lines += [f"{key}: {yaml_value(s.values[key])}  # {s.reasons[key]}" for key in rest]
    return "\n".join(lines) + "\n"
