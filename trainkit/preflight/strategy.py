"""How the processes of a run hold the model: a whole copy on every GPU (DDP) or sharded over them (FSDP2).

    distributed_strategy: auto     # in a config: auto (default), ddp or fsdp

    strategy = choose(config, estimate, budget_gb)      # the one rule
    estimate.with_settings(shards=strategy.shards)      # the memory it implies on each GPU
    args = training_arguments(config.sft, strategy)     # what the trainer is built with

`choose` decides for everyone: the preflight prints its verdict next to the effective batch and checks the
per-GPU memory it implies; the trainer is built from `training_arguments` and `model_arguments` of the same
verdict (the preflight stores it on the config, and a caller without a preflight gets the verdict `choose`
gives without an estimate).

FSDP here is TrainingArguments' own FSDP support (accelerate's FSDP2 plugin), configured as the PEFT and TRL
docs set it up for LoRA: transformer-layer auto wrap, weights loaded on the first process only and sent to
the others, sharded (torch.distributed.checkpoint) checkpoints, and activation checkpointing done by FSDP
rather than by the Trainer (which refuses both at once). QLoRA under FSDP follows the PEFT/bitsandbytes
recipe: the 4-bit weights are stored in the model's dtype (bnb_4bit_quant_storage), which FSDP can shard.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from trainkit.config.settings import STRATEGIES as CHOICES
from trainkit.core.status import world_size

AUTO, DDP, FSDP = CHOICES

# Platforms whose processes run on CUDA GPUs. accelerate runs CPU processes as DistributedType.MULTI_CPU and
# attaches an FSDP plugin only to GPU-like types (accelerate/state.py), so FSDP asked for on a CPU would train
# as plain DDP without saying so; MPS runs one process.
FSDP_PLATFORMS = ("h100",)

# TrainingArguments.fsdp_config for LoRA under FSDP2; entries the config's own fsdp_config sets win.
FSDP_CONFIG = {
    "version": 2,
    # Each decoder layer (the model's _no_split_modules) is one FSDP unit: gathered for its forward and
    # backward only.
    "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
    "reshard_after_forward": True,
    # Only the first process reads the weights; the others start empty and receive their shards. Without it
    # every process holds the whole model in CPU memory while loading (8 x 140 GB for a 70B model).
    "cpu_ram_efficient_loading": True,
    # Every process writes its own shard of the adapter and optimizer state (pytorch_model_fsdp_0/,
    # optimizer_0/); a full state dict would be gathered on the first process at every save.
    "state_dict_type": "SHARDED_STATE_DICT",
}


@dataclass(frozen=True)
class Strategy:
    name: str  # DDP or FSDP; one process is DDP with nothing to exchange
    processes: int
    why: str

    @property
    def shards(self) -> int:
        """Processes the weights and optimizer state are split over; 1 when each holds all of them."""
        return self.processes if self.name == FSDP else 1

    def summary(self) -> str:
        if self.name == FSDP:
            return (f"strategy fsdp ({self.why}): the frozen weights, the LoRA weights, their gradients and the "
                    f"optimizer state are sharded over the {self.processes} processes (FSDP2)")
        return f"strategy ddp ({self.why}): each process holds the whole model"


def effective_batch(sft, processes: int | None = None) -> int | None:
    """Sequences per optimizer step: per-device batch x processes x accumulation (None unless both are
    positive whole numbers); the processes default to world_size()."""
    batch, accumulation = sft.per_device_train_batch_size, sft.gradient_accumulation_steps
    if not (isinstance(batch, int) and isinstance(accumulation, int) and batch > 0 and accumulation > 0):
        return None
    return batch * accumulation * (world_size() if processes is None else processes)


def choose(config, estimate=None, budget_gb: float | None = None) -> Strategy:
    """The strategy for this run; `estimate` is trainkit.preflight.memory's whole-model (DDP) estimate for one GPU.

    auto: DDP when one process trains, off a CUDA platform, or when a whole copy of the model fits within the
    budget's warning line (with activation checkpointing when the run may still turn it on); FSDP otherwise.
    Without an estimate or a budget there is nothing to decide on: DDP, as before auto existed.
    """
    from trainkit.preflight.memory import GB, WARNING_FRACTION

    requested, processes = config.trainkit.distributed_strategy, world_size()
    if processes == 1:
        return Strategy(DDP, 1, "one process")
    if requested != AUTO:
        return Strategy(requested, processes, f"distributed_strategy: {requested}")
    if config.platform not in FSDP_PLATFORMS:
        return Strategy(DDP, processes, f"auto: FSDP runs on CUDA GPUs only, and this run is for {config.platform}")
    if estimate is None or budget_gb is None:
        return Strategy(DDP, processes, "auto: no memory estimate to decide on")
    if config.trainkit.activation_checkpointing_auto:
        estimate = estimate.with_settings(activation_checkpointing=True)
    line = WARNING_FRACTION * budget_gb * GB
    whole = f"a whole copy of the model needs {estimate.total / GB:.1f} GB per GPU"
    if estimate.total <= line:
        return Strategy(DDP, processes, f"auto: {whole}, within {WARNING_FRACTION:.0%} of the {budget_gb:g} GB budget")
    sharded = estimate.with_settings(shards=processes)
    return Strategy(FSDP, processes, f"auto: {whole}, over {WARNING_FRACTION:.0%} of the {budget_gb:g} GB budget; "
                                     f"sharded over {processes} GPUs {sharded.total / GB:.1f} GB")


def fsdp_config(sft) -> dict:
    """FSDP_CONFIG with the config's own fsdp_config entries (TrainingArguments' names, with or without the
    fsdp_ prefix) on top."""
    given = sft.fsdp_config or {}
    if isinstance(given, str):  # a JSON file, as TrainingArguments accepts
        with open(given, encoding="utf-8") as fh:
            given = json.load(fh)
    return {**FSDP_CONFIG, **{key.removeprefix("fsdp_"): value for key, value in given.items()}}


def training_arguments(sft, strategy: Strategy):
    """The SFTConfig the trainer is built with: `sft` itself under DDP, a copy with FSDP turned on otherwise.

    A copy, because TrainingArguments works out its FSDP plugin in __post_init__; the config keeps what the
    user asked for, which the memory estimate and the fingerprint read.
    """
    if strategy.name != FSDP:
        return sft
    settings = fsdp_config(sft)
    # The Trainer refuses its own activation checkpointing next to FSDP's; FSDP's avoids a second all-gather
    # of each layer in the backward pass.
    if sft.activation_checkpointing:
        settings["activation_checkpointing"] = True
    return dataclasses.replace(sft, fsdp=True, fsdp_config=settings, activation_checkpointing=False)


def model_arguments(model_args, strategy: Strategy):
    """ModelConfig for the trainer: under FSDP, 4-bit weights stored in the model's dtype so FSDP can shard
    them (bitsandbytes' default uint8 storage cannot be; accelerate then leaves them whole on every GPU)."""
    if strategy.name != FSDP or not model_args.load_in_4bit or model_args.bnb_4bit_quant_storage:
        return model_args
    return dataclasses.replace(model_args, bnb_4bit_quant_storage=model_args.dtype)


def loading_environment(strategy: Strategy) -> dict[str, str]:
    """Environment the model must be loaded under. `accelerate launch` sets ACCELERATE_USE_FSDP from an FSDP
    config; under torchrun nobody does, and transformers reads it (with FSDP_CPU_RAM_EFFICIENT_LOADING, which
    TrainingArguments sets) to load the weights on the first process only."""
    return {"ACCELERATE_USE_FSDP": "true"} if strategy.name == FSDP else {}


def check(config, strategy: Strategy, report, *, training: bool = False) -> None:
    """What cannot work with the chosen strategy, as ERRORs (and one WARNING) in `report`."""
    requested = config.trainkit.distributed_strategy
    if getattr(config.sft, "fsdp", None):
        report.error("fsdp is set directly; trainkit turns FSDP on through distributed_strategy",
                     "set distributed_strategy: fsdp instead (fsdp_config entries are kept)")
    if FSDP in (requested, strategy.name):
        where = None
        if config.platform not in FSDP_PLATFORMS:
            where = f"this run is for {config.platform}"
        elif training and config.device != "cuda":
            where = f"this machine trains on {config.device}"
        if where:
            report.error(f"distributed_strategy: fsdp needs CUDA GPUs and {where}: accelerate runs CPU processes "
                         "as DDP (MULTI_CPU) and would not shard anything",
                         "use distributed_strategy: ddp (or auto) here; FSDP is for several GPUs")
            return
    if requested == FSDP and strategy.processes == 1:
        report.warning("distributed_strategy: fsdp has no effect with one process: it holds the whole model",
                       "launch one process per GPU (scripts/train.sh --gpus N) to shard the model over them")
    model = config.model
    if strategy.name == FSDP and model.load_in_4bit and model.bnb_4bit_quant_storage not in (None, model.dtype):
        report.error(f"load_in_4bit under FSDP needs bnb_4bit_quant_storage: {model.dtype} (the model's dtype), "
                     f"not {model.bnb_4bit_quant_storage}: FSDP shards only weights stored in a float dtype",
                     f"remove bnb_4bit_quant_storage (trainkit sets {model.dtype} under FSDP)")
