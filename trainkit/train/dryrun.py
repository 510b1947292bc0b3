"""`train.py --dry-run`: everything up to the first optimizer step, then the plan, and nothing written.

    python train.py --config configs/smoke.yaml --dry-run          # the model on the meta device
    python train.py --config configs/smoke.yaml --dry-run=load     # the weights loaded, as a run would

Runs the preflight, reads and renders the data with the model's chat template and masks it as
TRL's SFTTrainer does, builds the LoRA model and the trainer, then prints the plan: effective
batch, steps, epochs, expected duration, checkpoint cadence, memory estimate, and where a
resume would start. On the meta device the weights are never read (a 7B model in seconds);
without a tokenizer offline the data and trainer steps are skipped with a warning. No
checkpoint, no status.json, no events: the output directory is left as it was.
"""

from __future__ import annotations

import copy
import math

from trainkit.core import protocol
from trainkit.core.protocol import ExitCode

TAG = "DRY-RUN"
MODES = ("meta", "load")


def world_size() -> int:
    """torchrun's WORLD_SIZE, else the processes scripts/train.sh --gpus N would launch."""
    from trainkit.preflight.checks import world_size as processes

    return processes()


def meta_args(sft):
    """The run's SFTConfig, except that the trainer leaves the (meta-device) model where it is."""
    args = copy.copy(sft)
    args.__class__ = type(f"DryRun{type(sft).__name__}", (type(sft),),
                          {"place_model_on_device": property(lambda self: False)})
    args.model_init_kwargs = None
    return args


def build_meta_trainer(config, data):
    """The trainer around a meta-device model, or None (with a warning) when there is no tokenizer offline."""
    from trl import get_peft_config

    from trainkit.config.model_source import load_tokenizer, locate_model
    from trainkit.core.report import Report
    from trainkit.preflight.checks import build_meta_model
    from trainkit.train.faults import Faults
    from trainkit.train.trainer import GuardedSFTTrainer

    source = locate_model(config.model.model_name_or_path)
    tokenizer = load_tokenizer(source, Report())  # the preflight has already warned about a missing one
    model = build_meta_model(source, Report())
    if tokenizer is None or model is None:
        protocol.warning(f"dry run: no tokenizer or architecture for {source.name} offline, so the data is not "
                         "rendered and no trainer is built", "the plan below counts the raw examples instead")
        return None
    trainer = GuardedSFTTrainer(model=model, args=meta_args(config.sft), train_dataset=data["train"],
                                eval_dataset=data.get("validation"), processing_class=tokenizer,
                                peft_config=get_peft_config(config.model))
    trainer.faults = Faults()
    return trainer


def dry_run(config, mode: str = "meta") -> int:
    from trainkit.core.library_warnings import quiet_progress_bars

    quiet_progress_bars()
    existed = config.output_dir.exists()
    try:
        return checked_dry_run(config, mode)
    finally:
        # Trainer creates output_dir on construction; a dry run leaves none behind that was not there.
        if not existed and config.output_dir.is_dir() and not any(config.output_dir.iterdir()):
            config.output_dir.rmdir()


def checked_dry_run(config, mode: str) -> int:
    from trainkit.core.report import Report
    from trainkit.data.loading import load_chat_data
    from trainkit.preflight.checks import preflight
    from trainkit.train import checkpoints

    protocol.section(TAG, f"{config.model.model_name_or_path} on {config.device}, model on "
                          f"{'the meta device (no weights read)' if mode == 'meta' else 'the device (weights loaded)'}")
    report = Report("PREFLIGHT")
    preflight(config, report)
    report.print_findings()
    if report.errors:
        return ExitCode.ERROR
    data = load_chat_data(config.trainkit.train_file, config.trainkit.validation_file)
    if mode == "load":
        from trainkit.train.faults import Faults
        from trainkit.train.trainer import build_trainer

        trainer = build_trainer(config, data, [], Faults())
    else:
        trainer = build_meta_trainer(config, data)
    if trainer is not None:
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
        examples = len(trainer.train_dataset)
        protocol.section(TAG, f"trainer built: {type(trainer).__name__}, {trainable:,} trainable of {total:,} "
                              f"parameters; {examples} training examples rendered, tokenized and masked")
    else:
        examples = len(data["train"])
    newest = checkpoints.newest_valid(config.output_dir)
    for line in plan(config, examples, report, newest):
        protocol.section(TAG, line)
    protocol.success(f"dry run complete: nothing trained, nothing written to {config.output_dir}")
    return ExitCode.OK


def plan(config, examples: int, report, newest) -> list[str]:
    from trainkit.train.callbacks import format_duration

    sft = config.sft
    batch = sft.per_device_train_batch_size * world_size()
    effective = batch * sft.gradient_accumulation_steps
    steps_per_epoch = max(1, math.ceil(math.ceil(examples / batch) / sft.gradient_accumulation_steps))
    steps = sft.max_steps if sft.max_steps > 0 else math.ceil(sft.num_train_epochs * steps_per_epoch)
    epochs = steps / steps_per_epoch
    shape = (f"{sft.per_device_train_batch_size} per device x {sft.gradient_accumulation_steps} accumulation x "
             f"{world_size()} process(es)")
    if sft.packing:
        # A packed row holds as many examples as fit in max_length: an epoch's steps depend on their lengths.
        lines = [f"effective batch {effective} packed rows of up to {sft.max_length} tokens ({shape}); "
                 f"{steps} steps over {examples} examples, several to a row"]
    else:
        lines = [f"effective batch {effective} ({shape}); "
                 f"{steps} steps = {epochs:.2f} epochs of {examples} examples ({steps_per_epoch} steps each)"]
    if getattr(config, "duration_seconds", None) is not None:
        # The preflight's own figure (trainkit.preflight.duration): the data's token lengths, FLOPs and the chip.
        lines.append(f"expected duration ~{format_duration(config.duration_seconds)} (estimated from FLOPs and the "
                     f"chip, as the preflight's duration line; the run measures its own after "
                     f"{config.trainkit.estimate_after_steps} steps)")
    else:
        seconds, tps = expected_seconds(config, steps, effective)
        if seconds is not None:
            lines.append(f"expected duration ~{format_duration(seconds)} at ~{tps:,.0f} tokens/s (estimated from "
                         f"the model size; the run measures its own after {config.trainkit.estimate_after_steps} "
                         "steps)")
    if sft.save_strategy == "steps" and sft.save_steps:
        every = int(sft.save_steps) if sft.save_steps >= 1 else max(1, int(sft.save_steps * steps))
        lines.append(f"checkpoints every {every} steps ({steps // every} in the run, plus the last step), "
                     f"keeping the newest {sft.save_total_limit or 'all'}")
    else:
        lines.append(f"checkpoints: save_strategy={sft.save_strategy}, plus the last step")
    memory = next((f.message for f in report.findings if f.message.startswith("memory:")), None)
    if memory:
        lines.append(f"memory estimate: {memory.removeprefix('memory: ')}")
    if newest is not None:
        lines.append(f"a real run would resume from {newest.path.name} (step {newest.step})")
    return lines


def expected_seconds(config, steps: int, effective: int) -> tuple[float | None, float | None]:
    from trainkit.config.model_source import locate_model
    from trainkit.core.report import Report
    from trainkit.preflight.checks import build_meta_model
    from trainkit.preflight.suggest import DEVICE_OF_PLATFORM, PLATFORM_MEMORY_GB, Machine, tokens_per_second

    model = build_meta_model(locate_model(config.model.model_name_or_path), Report())
    if model is None:
        return None, None
    params = sum(p.numel() for p in model.parameters())
    memory = PLATFORM_MEMORY_GB.get(config.platform, 0)
    machine = Machine(config.platform, DEVICE_OF_PLATFORM.get(config.platform, config.device), memory, "")
    tps = tokens_per_second(params, machine, bool(config.sft.activation_checkpointing),
                            bool(getattr(config.model, "load_in_4bit", False)))
    tokens_per_step = effective * (config.sft.max_length or 1024) / 2  # half-full sequences on average
    return steps * tokens_per_step / tps, tps
