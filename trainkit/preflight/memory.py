"""Peak training memory of a LoRA SFT run, worked out from the architecture before any weight is loaded.

The model is built on the meta device (shapes only, no memory), so a 7B estimate costs well under a second:

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    estimate = estimate_training_memory(
        model, model_config, batch_size=8, max_length=2048, weight_dtype="bfloat16", load_in_4bit=False,
        lora_r=16, lora_target_modules=["q_proj", "v_proj"], activation_checkpointing=True,
    )
    print(estimate)  # weights 15.23 GB | LoRA params+grads+AdamW 0.08 GB | ... | total 30.3 GB
    check_memory(estimate, platform_budget_gb("h100"), report, gradient_accumulation_steps=2)

The estimate models what this repo's stack does (TRL's SFTTrainer with PEFT LoRA, autocast mixed precision,
a Llama/Qwen2/Mistral-style decoder, SDPA or flash attention) and is meant to be a little high rather than low.
Every part is in bytes; printed sizes and budgets are in GB = 1e9 bytes.

It is per GPU: under DDP every GPU holds all of it; under FSDP (`shards` = the processes, trainkit.preflight.strategy)
the frozen weights, the LoRA weights, their gradients and AdamW's state are split over the processes, while
each process still keeps the activations of its own micro-batch and gathers the layers it computes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

GB = 1e9

# What a run may plan to use (SPEC §4): an 80 GB H100 less headroom for what this estimate misses, and what
# the OS and desktop leave of a 32 GB Mac's unified memory. No budget on CPU: smoke runs only.
PLATFORM_BUDGET_GB = {"h100": 70, "m4": 28}
WARNING_FRACTION = 0.85

# CUDA context and kernel images (~0.5 GB on an H100), cuBLAS/cuDNN workspaces, and the caching allocator's
# reserved-but-unused blocks (typically 0.5-1 GB when tensor sizes vary from step to step): none of these are
# tensors, so nothing below counts them. It also absorbs small transients left out below, such as the one
# weight bitsandbytes dequantises at a time in 4-bit.
FRAMEWORK_OVERHEAD_BYTES = int(1.5e9)

# bitsandbytes NF4 packs two weights per byte and keeps one fp32 absmax per block of 64 weights (TRL leaves
# nested quantisation off by default, so the absmax is not itself quantised).
NF4_BYTES_PER_PARAM = 0.5
NF4_CONSTANT_BYTES_PER_PARAM = 4 / 64

# PEFT upcasts LoRA weights to fp32 on a bf16/fp16 model; TRL casts them back to bf16 on a 4-bit one (QLoRA).
# Each LoRA parameter then carries a gradient and AdamW's two moments, all in that dtype.
LORA_FP32_BYTES = 4
QLORA_BYTES = 2
ADAMW_STATES = 2

# CUDA and MPS dropout keep a one-byte bool mask per element for the backward pass.
DROPOUT_MASK_BYTES = 1

# Beyond what autograd keeps, a layer's forward briefly holds about four intermediate-size tensors (the
# gate*up product and its casts for down_proj's LoRA branch), and its backward about as many gradients.
LAYER_WORKING_TENSORS = 4

# TRL's SFTTrainer never builds the (tokens x vocab) logits: its fused LM head scores the vocabulary in tiles of
# 4096 tokens x 32768 words (trl.kernels.chunked_logprob). Triton (CUDA) folds each tile in place; the torch
# fallback (MPS, CPU) holds seven fp32 copies of a tile and a bool target mask at its peak, in the backward.
LOSS_TOKEN_TILE = 4096
LOSS_VOCAB_TILE = 32768
LOSS_FALLBACK_BYTES_PER_TILE_ELEMENT = 7 * 4 + 1
# transformers' own loss, at its peak early in the backward: the fp32 log-softmax it kept, the gradient of the
# loss with respect to it, and the gradient it passes back to the logits, all fp32 over tokens x vocabulary.
UNFUSED_LOSS_BYTES_PER_LOGIT = 3 * 4

# PEFT's default targets for Llama-family models when lora_target_modules is not set.
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")

# Sibling projections that read the same tensor: when LoRA needs no cast of its input, they share one saved copy,
# and o_proj reads the attention output that attention keeps anyway.
ATTENTION_OUTPUT = "attention output"
SHARED_INPUT = {"q_proj": "attention input", "k_proj": "attention input", "v_proj": "attention input",
                "gate_proj": "mlp input", "up_proj": "mlp input", "o_proj": ATTENTION_OUTPUT}

MIN_SUGGESTED_MAX_LENGTH = 256

BYTES_OF_DTYPE = {"bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2, "float32": 4, "fp32": 4, "float": 4}


@dataclass(frozen=True)
class Architecture:
    """What the estimate needs from the model, read once from its meta-device build."""

    params: int
    quantizable_params: int  # nn.Linear weights bitsandbytes packs to 4 bits: all but the LM head
    layers: int
    hidden: int
    intermediate: int
    heads: int
    q_dim: int  # heads x head_dim
    kv_dim: int  # kv heads x head_dim
    vocab: int
    lora_features: int  # sum of (in + out) over adapted Linears: LoRA adds r x (in + out) each
    adapted_per_layer: tuple[tuple[tuple[str, int], ...], ...]  # per decoder layer: (name, in_features) adapted
    layer_params: int = 0  # the largest decoder layer's parameters
    layer_quantizable_params: int = 0  # ... of which nn.Linear weights (4-bit under QLoRA)
    tail_params: int = 0  # final norm + LM head, which FSDP keeps gathered from the loss into the backward


@dataclass(frozen=True)
class Settings:
    """The run's choices the estimate depends on; check_memory varies them to find advice that fits."""

    batch_size: int
    max_length: int
    weight_bytes: int
    load_in_4bit: bool
    lora_r: int
    activation_checkpointing: bool
    lora_dropout: float
    fused_lm_head: bool
    triton: bool
    shards: int = 1  # processes the model's state is split over (FSDP); 1: each GPU holds all of it

    @property
    def tokens(self) -> int:
        return self.batch_size * self.max_length


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak training memory in bytes, by part; the parts are summed as if their peaks coincide."""

    weights: int
    lora: int  # LoRA params + grads + AdamW state
    activations: int
    logits: int
    overhead: int
    gathered: int  # FSDP: whole layers gathered from their shards while they compute; 0 unsharded
    architecture: Architecture = field(repr=False)
    settings: Settings = field(repr=False)

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.activations + self.logits + self.overhead + self.gathered

    @property
    def lora_params(self) -> int:
        return self.architecture.lora_features * self.settings.lora_r

    def lines(self) -> list[str]:
        parts = [("weights", self.weights), ("LoRA params+grads+AdamW", self.lora),
                 ("activations", self.activations), ("logits", self.logits), ("overhead", self.overhead)]
        if self.settings.shards > 1:
            parts[0] = (f"weights (1/{self.settings.shards} shard)", self.weights)
            parts[1] = (f"LoRA params+grads+AdamW (1/{self.settings.shards} shard)", self.lora)
            parts.append(("gathered layers", self.gathered))
        return [f"{name} {size / GB:.2f} GB" for name, size in parts] + [f"total {self.total / GB:.1f} GB"]

    def __str__(self) -> str:
        return " | ".join(self.lines())

    def with_settings(self, **changes) -> MemoryEstimate:
        """The same model under other settings (batch_size, max_length, load_in_4bit, ...); no model needed."""
        return estimate_from(self.architecture, replace(self.settings, **changes))


def estimate_training_memory(model, model_config, *, batch_size: int, max_length: int, weight_dtype,
                             load_in_4bit: bool, lora_r: int, lora_target_modules, activation_checkpointing: bool,
                             lora_dropout: float = 0.0, fused_lm_head: bool = True,
                             triton: bool = False, shards: int = 1) -> MemoryEstimate:
    """Peak memory of LoRA SFT on `model` (built on the meta device) with its transformers `model_config`.

    weight_dtype is "bfloat16"/"float16"/"float32" (config.model.dtype) or a torch.dtype. lora_target_modules
    follows PEFT: a list matches a module named exactly so or ending in "." + name, a string is a regex over the
    full name or "all-linear", None is PEFT's Llama default. lora_dropout adds dropout masks. triton: TRL's
    loss runs as a Triton kernel (CUDA) rather than its torch fallback (MPS, CPU). fused_lm_head=False models
    transformers' own loss over the full fp32 logits, which TRL uses with label smoothing or a compute_loss_func.
    shards: the processes FSDP splits the model's state over (1 without FSDP).
    """
    arch = describe(model, model_config, lora_target_modules)
    settings = Settings(batch_size=batch_size, max_length=max_length, weight_bytes=dtype_bytes(weight_dtype),
                        load_in_4bit=load_in_4bit, lora_r=lora_r, activation_checkpointing=activation_checkpointing,
                        lora_dropout=lora_dropout, fused_lm_head=fused_lm_head, triton=triton, shards=shards)
    return estimate_from(arch, settings)


def estimate_from(arch: Architecture, settings: Settings) -> MemoryEstimate:
    return MemoryEstimate(
        weights=weight_bytes(arch, settings),
        lora=lora_bytes(arch, settings),
        activations=activation_bytes(arch, settings),
        logits=logits_bytes(arch, settings),
        overhead=FRAMEWORK_OVERHEAD_BYTES,
        gathered=gathered_bytes(arch, settings),
        architecture=arch,
        settings=settings,
    )


def dtype_bytes(dtype) -> int:
    name = str(dtype).removeprefix("torch.")
    if name not in BYTES_OF_DTYPE:
        raise ValueError(f"unknown weight dtype {dtype!r}; expected one of bfloat16, float16, float32")
    return BYTES_OF_DTYPE[name]


# ----------------------------------------------------------------------------------------------------------------
# The architecture, read from the meta-device model


def describe(model, model_config, lora_target_modules) -> Architecture:
    from torch import nn

    config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    lm_head = model.get_output_embeddings()

    names = {module: name for name, module in model.named_modules()}
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    adapted = {m for name, m in linears if is_lora_target(name, lora_target_modules, m is lm_head)}
    layers = decoder_layers(model, config.num_hidden_layers)
    largest = max(layers, key=lambda layer: sum(p.numel() for p in layer.parameters()))
    tail = {id(p): p for m in (final_norm(model, layers), lm_head) if m is not None for p in m.parameters()}
    adapted_per_layer = tuple(
        tuple((names[m].rsplit(".", 1)[-1], m.in_features) for m in layer.modules() if m in adapted)
        for layer in layers
    )
    return Architecture(
        params=sum(p.numel() for p in model.parameters()),
        quantizable_params=sum(m.weight.numel() for _, m in linears if m is not lm_head),
        layers=len(layers),
        hidden=hidden,
        intermediate=config.intermediate_size,
        heads=heads,
        q_dim=heads * head_dim,
        kv_dim=kv_heads * head_dim,
        vocab=config.vocab_size,
        lora_features=sum(m.in_features + m.out_features for m in adapted),
        adapted_per_layer=adapted_per_layer,
        layer_params=sum(p.numel() for p in largest.parameters()),
        layer_quantizable_params=sum(m.weight.numel() for m in largest.modules() if isinstance(m, nn.Linear)),
        tail_params=sum(p.numel() for p in tail.values()),
    )


def is_lora_target(name: str, targets, is_lm_head: bool = False) -> bool:
    """PEFT's rule (peft.tuners.tuners_utils.check_target_module_exists) for one nn.Linear."""
    if targets is None:
        targets = DEFAULT_TARGET_MODULES
    if isinstance(targets, str):
        if targets.lower() == "all-linear":
            return not is_lm_head
        return re.fullmatch(targets, name) is not None
    return any(name == target or name.endswith("." + target) for target in targets)


def final_norm(model, layers):
    """The norm after the last decoder layer (`model.model.norm` in Llama-style models), or None."""
    inner = getattr(model, "model", None)
    norm = getattr(inner, "norm", None) if inner is not None else None
    return None if norm is None or any(norm is layer for layer in layers) else norm


def decoder_layers(model, num_hidden_layers: int):
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_hidden_layers:
            return list(module)
    raise ValueError(f"no list of {num_hidden_layers} decoder layers in {type(model).__name__}")


# ----------------------------------------------------------------------------------------------------------------
# The parts


def stored_bytes(params: int, quantizable: int, s: Settings) -> int:
    """Bytes of `params` parameters in memory, `quantizable` of them nn.Linear weights that 4-bit packs."""
    if not s.load_in_4bit:
        return params * s.weight_bytes
    # Embeddings, norms, biases and the LM head stay in the model dtype; every other Linear weight is NF4.
    packed = quantizable * (NF4_BYTES_PER_PARAM + NF4_CONSTANT_BYTES_PER_PARAM)
    return round(packed) + (params - quantizable) * s.weight_bytes


def shard(total: int, s: Settings) -> int:
    return -(-total // s.shards)


def weight_bytes(arch: Architecture, s: Settings) -> int:
    return shard(stored_bytes(arch.params, arch.quantizable_params, s), s)


def gathered_bytes(arch: Architecture, s: Settings) -> int:
    """Whole weights FSDP2 holds at its peak besides the shards, in the backward pass: the layer computing, the
    next one it prefetches, and the final norm + LM head, which accelerate leaves gathered from the forward's
    end to the backward's start. The LoRA weights and gradients gathered with them are left out (small)."""
    if s.shards == 1:
        return 0
    layer = stored_bytes(arch.layer_params, arch.layer_quantizable_params, s)
    return 2 * layer + arch.tail_params * s.weight_bytes


def lora_param_bytes(s: Settings) -> int:
    return QLORA_BYTES if s.load_in_4bit else LORA_FP32_BYTES


def lora_bytes(arch: Architecture, s: Settings) -> int:
    params = s.lora_r * arch.lora_features
    per_param = lora_param_bytes(s)
    return shard(params * (per_param + per_param + ADAMW_STATES * per_param), s)  # weight, grad, AdamW moments


def activation_bytes(arch: Architecture, s: Settings) -> int:
    """Tensors autograd keeps for the backward pass, plus one layer's working set."""
    a = activation_element_bytes(s)
    per_layer = [layer_bytes_per_token(arch, s, adapted) for adapted in arch.adapted_per_layer]
    if s.activation_checkpointing:
        # Each layer keeps only its input; the backward pass recomputes one layer at a time.
        stored = arch.layers * arch.hidden * a + max(per_layer)
    else:
        stored = sum(per_layer)
    final_norm = rms_norm_bytes(arch)  # outside the checkpointed layers, kept either way
    working = LAYER_WORKING_TENSORS * arch.intermediate * a
    return s.tokens * (stored + final_norm + working)


def activation_element_bytes(s: Settings) -> int:
    # Autocast runs matmuls in bf16/fp16 on a half-precision model; a 4-bit one computes in the model dtype.
    return s.weight_bytes


def rms_norm_bytes(arch: Architecture) -> int:
    # Llama's RMSNorm upcasts its input to fp32 and keeps it, plus one fp32 rsqrt per token.
    return 4 * arch.hidden + 4


def layer_bytes_per_token(arch: Architecture, s: Settings, adapted: tuple[tuple[str, int], ...]) -> int:
    """Bytes one decoder layer keeps for backward per token, with frozen base weights.

    A frozen Linear needs no saved input (its weight gradient is never computed), so the base layer keeps only
    the norms' inputs, what attention keeps, and the MLP's elementwise inputs; LoRA adds its own inputs.
    """
    a = activation_element_bytes(s)
    norms = 2 * rms_norm_bytes(arch)
    # SDPA/flash attention keeps q and k (after RoPE), v, its output and an fp32 logsumexp per head; it never
    # builds the (L x L) score matrix.
    attention = a * (2 * arch.q_dim + 2 * arch.kv_dim) + 4 * arch.heads
    # SiLU keeps the gate output; the gate*up product keeps both its operands.
    mlp = 3 * arch.intermediate * a
    return norms + attention + mlp + lora_input_bytes(s, adapted)


def lora_input_bytes(s: Settings, adapted: tuple[tuple[str, int], ...]) -> int:
    a = activation_element_bytes(s)
    p = lora_param_bytes(s)
    # When the input must be cast to the LoRA dtype (autocast then runs lora_A in half precision) or goes
    # through dropout, every adapter keeps its own copy; otherwise siblings keep the one tensor they share.
    copies = p != a or s.lora_dropout > 0
    c = min(a, p)  # the copy lora_A keeps is in the narrower dtype: autocast's, or the bf16 of QLoRA adapters
    total, shared = 0, set()
    for name, in_features in adapted:
        total += s.lora_r * c  # lora_B's input
        if s.lora_dropout > 0:
            total += in_features * DROPOUT_MASK_BYTES
        if copies:
            total += in_features * c
            continue
        group = SHARED_INPUT.get(name, name)
        if group != ATTENTION_OUTPUT and group not in shared:
            shared.add(group)
            total += in_features * a
    return total


def logits_bytes(arch: Architecture, s: Settings) -> int:
    if not s.fused_lm_head:
        return s.tokens * arch.vocab * UNFUSED_LOSS_BYTES_PER_LOGIT
    a = activation_element_bytes(s)
    rows = min(s.tokens, LOSS_TOKEN_TILE)
    tiles = rows * LOSS_VOCAB_TILE * a  # the tile buffer is allocated full width, even for a smaller vocabulary
    if not s.triton:
        tiles += rows * min(arch.vocab, LOSS_VOCAB_TILE) * LOSS_FALLBACK_BYTES_PER_TILE_ELEMENT
    # The head keeps its input hidden states; backward accumulates their gradient in fp32, then casts it back.
    per_token = arch.hidden * (a + 4 + a)
    return tiles + s.tokens * per_token


# ----------------------------------------------------------------------------------------------------------------
# The check


def platform_budget_gb(platform: str, override: float | None = None) -> float | None:
    """The memory budget for a platform (None: no budget), or the config's memory_budget_gb when set."""
    return override if override is not None else PLATFORM_BUDGET_GB.get(platform)


def check_memory(estimate: MemoryEstimate, budget_gb: float | None, report, *, batch_size: int | None = None,
                 gradient_accumulation_steps: int = 1, max_length: int | None = None,
                 activation_checkpointing: bool | None = None, load_in_4bit: bool | None = None,
                 processes: int = 1, budget_source: str | None = None) -> None:
    """Add one finding to `report`: OK within 85 % of the budget, WARNING above, ERROR over it.
    `budget_source` says where the budget comes from (trainkit.preflight.gpu.memory_budget_gb).

    The keyword arguments are the run's current values (by default the ones the estimate was made with);
    `processes` train together, so an unsharded run may shard over them. A warning or error names the first
    change that, re-estimated, brings the peak under 85 % of the budget (for an error, failing that, under
    the budget).
    """
    current = {"batch_size": batch_size, "max_length": max_length,
               "activation_checkpointing": activation_checkpointing, "load_in_4bit": load_in_4bit}
    estimate = estimate.with_settings(**{k: v for k, v in current.items() if v is not None})
    if budget_gb is None:
        report.ok(f"memory: no memory budget for this platform; estimated peak {estimate}")
        return
    budget = budget_gb * GB
    share = estimate.total / budget
    summary = (f"estimated peak memory {estimate.total / GB:.1f} GB is {share:.0%} of the {budget_gb:g} GB budget"
               + (f" ({budget_source})" if budget_source else ""))
    if share <= WARNING_FRACTION:
        report.ok(f"memory: {summary}: {estimate}")
        return
    targets = [WARNING_FRACTION * budget] + ([budget] if share > 1 else [])
    for target in targets:
        advice, fixed = suggest_fix(estimate, target, gradient_accumulation_steps, processes)
        if fixed.total <= target:
            hint = f"set {', '.join(advice)} (estimated {fixed.total / GB:.1f} GB)"
            break
    else:
        tried = f"even with {', '.join(advice)}" if advice else "with these settings"
        hint = (f"{tried} the estimate is {fixed.total / GB:.1f} GB: train a smaller model, or set "
                f"memory_budget_gb if this machine has more than {budget_gb:g} GB to give")
    if share <= 1:
        report.warning(f"{summary}, above {WARNING_FRACTION:.0%}: {estimate}", f"to leave headroom, {hint}")
    else:
        report.error(f"{summary}, over budget: {estimate}", hint)


def suggest_fix(estimate: MemoryEstimate, target_bytes: float, accumulation: int = 1, processes: int = 1):
    """(advice, re-estimate) for the first change, or stack of changes, that fits within target_bytes.

    Levers go least disruptive first: checkpointing, a smaller batch and sharding over the processes (FSDP)
    leave the training result as it was, a shorter max_length truncates data, 4-bit changes the weights. One
    lever alone is preferred; failing that, they are stacked in order. When nothing fits, the advice is every
    lever at its strongest, and the re-estimate shows how far that still is from the target.
    """
    levers = list(memory_levers(estimate.settings, accumulation, processes))
    for lever in levers:
        for changes, advice in lever:
            fixed = estimate.with_settings(**changes)
            if fixed.total <= target_bytes:
                return [advice], fixed
    applied, advices = {}, []
    for lever in levers:
        for changes, advice in lever:
            fixed = estimate.with_settings(**applied, **changes)
            if fixed.total <= target_bytes:
                return advices + [advice], fixed
        strongest, advice = lever[-1]
        applied.update(strongest)
        advices.append(advice)
    return advices, estimate.with_settings(**applied)


def memory_levers(s: Settings, accumulation: int, processes: int = 1):
    """Each lever is a list of (setting changes, advice), mildest first."""
    if not s.activation_checkpointing:
        yield [({"activation_checkpointing": True}, "activation_checkpointing: true")]
    effective = s.batch_size * accumulation
    smaller = [b for b in range(s.batch_size - 1, 0, -1) if s.batch_size % b == 0]
    if smaller:
        yield [({"batch_size": b}, f"per_device_train_batch_size: {b} and gradient_accumulation_steps: "
                                   f"{effective // b} (same effective batch of {effective})") for b in smaller]
    if s.shards == 1 and processes > 1:
        # Sharding leaves the training result as it was, at the cost of gathering each layer as it computes.
        yield [({"shards": processes}, "distributed_strategy: fsdp")]
    shorter = []
    length = s.max_length // 2
    while length >= MIN_SUGGESTED_MAX_LENGTH:
        shorter.append(length)
        length //= 2
    if shorter:
        yield [({"max_length": n}, f"max_length: {n}") for n in shorter]
    if not s.load_in_4bit:
        yield [({"load_in_4bit": True}, "load_in_4bit: true")]
