"""What `train.py --help` prints: the keys people set, grouped; `--help-all` prints every key TRL takes.

    python train.py --help        # usage with --config, trainkit's keys, ~25 common TRL keys
    python train.py --help-all    # TRL's full parser help (SFTConfig + ModelConfig + trainkit)

TRL's own help lists some 300 keys (~860 lines) and never mentions --config, so the
default help is a short, grouped page; the defaults shown are read from the dataclasses.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap

HELP_FLAGS = ("-h", "--help")
HELP_ALL_FLAG = "--help-all"

USAGE = """\
usage: python train.py --config FILE.yaml [--KEY VALUE ...]

Fine-tune a chat model with LoRA (TRL's SFTTrainer). The YAML config holds flat KEY: VALUE
pairs; any key can also be given as --KEY VALUE, which overrides the config. Resumes by
itself from the newest complete checkpoint in output_dir.

  python train.py --config configs/smoke.yaml
  python train.py --config configs/training_config_h100.yaml --max_steps 2000 --output_dir outputs/x

  --config FILE.yaml    the config to train with (configs/smoke.yaml, configs/training_config_h100.yaml, ...)
  -h, --help            this page: trainkit's keys and the TRL keys people set (--help-all: all ~300 keys)
"""

# The TRL keys people set, by group, with a one-line help of our own (TRL's run to paragraphs).
COMMON_TRL_KEYS: dict[str, list[tuple[str, str]]] = {
    "model": [
        ("model_name_or_path", "hub id or local directory of the base model"),
        ("attn_implementation", "auto (default: flash-attn 3/2 from the Hub on CUDA, else sdpa), sdpa, eager, "
                                "flash_attention_2"),
    ],
    "steps and batch": [
        ("learning_rate", "peak learning rate of AdamW"),
        ("lr_scheduler_type", "learning-rate schedule: linear, cosine, constant, ..."),
        ("warmup_steps", "steps of linear warmup (a float below 1 is a fraction of all steps)"),
        ("per_device_train_batch_size", "examples per device per step"),
        ("gradient_accumulation_steps", "steps whose gradients are summed before an update"),
        ("max_steps", "optimizer updates to train for; overrides num_train_epochs when > 0"),
        ("num_train_epochs", "passes over the training data (when max_steps is -1)"),
        ("max_length", "tokens per example; longer examples are truncated"),
        ("activation_checkpointing", "recompute activations to save memory (~20% slower), or auto"),
        ("bf16", "bfloat16 mixed precision (default: chosen for the device)"),
    ],
    "LoRA": [
        ("lora_r", "rank of the LoRA matrices"),
        ("lora_alpha", "LoRA scaling (alpha / r multiplies the update)"),
        ("lora_dropout", "dropout on the LoRA input"),
        ("lora_target_modules", "modules that get adapters, e.g. q_proj k_proj v_proj o_proj (default: the model's)"),
    ],
    "data and loss": [
        ("assistant_only_loss", "train only on the assistant's turns"),
        ("packing", "pack several examples into one max_length sequence"),
    ],
    "saving, evaluation and logging": [
        ("output_dir", "where checkpoints, the final adapter and status.json go"),
        ("save_steps", "save a checkpoint every N steps"),
        ("save_total_limit", "checkpoints to keep (older ones are deleted)"),
        ("eval_strategy", "when to evaluate on validation_file: no, steps or epoch"),
        ("eval_steps", "evaluate every N steps (with eval_strategy: steps)"),
        ("logging_steps", "print and log the loss every N steps"),
        ("report_to", "none or wandb (the W&B project is wandb_project)"),
        ("seed", "random seed"),
    ],
}


def fields_by_name() -> dict[str, dataclasses.Field]:
    from trainkit.config.settings import _dataclass_types

    return {f.name: f for dc in _dataclass_types() for f in dataclasses.fields(dc)}


def default_of(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if value is None or value == [] or value == {}:
        return ""
    value = getattr(value, "value", value)  # enums such as SchedulerType
    return f" (default: {value})"


def key_line(name: str, text: str, width: int = 100) -> str:
    head = f"  --{name}"
    # Every line of the description gets the same width-32 columns beside the key column.
    body = ("\n" + " " * 32).join(textwrap.wrap(" ".join(text.split()), width=width - 32))
    return f"{head:<31} {body}" if len(head) < 31 else f"{head}\n{' ' * 32}{body}"


# trainkit keys a config sets through another key's value; --help-all lists them.
SET_THROUGH_ANOTHER_KEY = {"activation_checkpointing_auto": "activation_checkpointing: auto"}


def short_help() -> str:
    from trainkit.config.settings import TrainkitArguments

    fields = fields_by_name()
    out = [USAGE, "trainkit's keys:"]
    for f in dataclasses.fields(TrainkitArguments):
        if f.name in SET_THROUGH_ANOTHER_KEY:
            continue
        text = f.metadata.get("help", "")
        if "choices" in f.metadata:
            text += f" One of: {', '.join(f.metadata['choices'])}."
        out.append(key_line(f.name, text + default_of(f)))
    for group, keys in COMMON_TRL_KEYS.items():
        out.append(f"\nTRL keys people set: {group}")
        for name, text in keys:
            out.append(key_line(name, text + default_of(fields[name])))
    out.append("\nEvery other TRL SFTConfig/ModelConfig key works too: python train.py --help-all lists them.")
    out.append("Docs: README.md (configs), docs/AGENT_PROTOCOL.md (exit codes and tagged lines).")
    return "\n".join(out) + "\n"


def answer_help(argv: list[str]) -> int | None:
    """Print the help asked for in argv and return 0, or None when no help was asked for."""
    if HELP_ALL_FLAG in argv:
        from trainkit.config.settings import _parser

        _parser().print_help(sys.stdout)
        return 0
    if any(flag in argv for flag in HELP_FLAGS):
        sys.stdout.write(short_help())
        return 0
    return None
