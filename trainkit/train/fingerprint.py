"""What defines a run, recorded at its first start, so a resume cannot quietly continue a different one.

    recorded = read(output_dir)                  # None before the first start
    current = fingerprint(config)
    changes = compare(recorded, current)        # Changes(blocking=[...], safe=[...])
    write(output_dir, current)                  # rank 0, once the run may go on

A resume restores the adapter, optimizer and schedule from a checkpoint; continuing it
with another model, other data, another LoRA shape or other optimizer settings trains a
model that matches neither config, and "already complete" would describe a run that
never happened; under another distributed strategy (DDP or FSDP) the checkpoint does not
load at all. Those keys block (exit 1). Keys that only change how often the run
logs, saves or evaluates, where it reports, or that let it run longer, are safe to
change and only warn.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from trainkit.core.status import read_json, write_json_atomic
from trainkit.preflight.strategy import effective_batch

FINGERPRINT_FILE = "run_fingerprint.json"
# Keys whose change is safe to continue with, whatever the new value.
CADENCE_KEYS = ("logging_steps", "save_steps", "save_total_limit", "eval_strategy", "eval_steps", "report_to")
# Keys that may grow (the run goes on for longer) but not shrink (the schedule and "complete" change).
LENGTH_KEYS = ("max_steps", "num_train_epochs")


def plain(value):
    """JSON-comparable form of a config value (enums, tuples, sets)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple, set)):
        items = [plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set) else items
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in sorted(value.items())}
    return value


def file_digest(path: str | None) -> str | None:
    """"sha256:<hex> (<bytes> bytes)" of a data file: its content defines the run, not its path."""
    if not path:
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        size = Path(path).stat().st_size
    except OSError:
        return "unreadable"
    return f"sha256:{digest.hexdigest()} ({size} bytes)"


def fingerprint(config) -> dict:
    sft, model, args = config.sft, config.model, config.trainkit
    targets = model.lora_target_modules
    defining = {
        "model_name_or_path": model.model_name_or_path,
        "model_revision": model.model_revision,
        "train_file": file_digest(args.train_file),
        "validation_file": file_digest(args.validation_file),
        "lora_r": model.lora_r,
        "lora_alpha": model.lora_alpha,
        "lora_dropout": model.lora_dropout,
        "lora_target_modules": sorted(targets) if isinstance(targets, (list, tuple)) else targets,
        "use_rslora": model.use_rslora,
        "use_dora": model.use_dora,
        "learning_rate": sft.learning_rate,
        "lr_scheduler_type": sft.lr_scheduler_type,
        "lr_scheduler_kwargs": sft.lr_scheduler_kwargs,
        "warmup_steps": sft.warmup_steps,
        "weight_decay": sft.weight_decay,
        "optim": sft.optim,
        "max_grad_norm": sft.max_grad_norm,
        # Sequences per optimizer step, whatever the GPU count and micro-batch: a resume on more GPUs with
        # the accumulation divided (effective_batch_size does it) trains the same run; one that keeps the
        # accumulation trains a larger batch under the same learning rate.
        "effective_batch_size": effective_batch(sft),
        "seed": sft.seed,
        "max_length": sft.max_length,
        "packing": sft.packing,
        "assistant_only_loss": sft.assistant_only_loss,
        "completion_only_loss": sft.completion_only_loss,
        # The strategy the preflight chose: DDP and FSDP checkpoints hold the adapter and optimizer in
        # different layouts, and neither resumes under the other (transformers raises mid-start).
        "distributed_strategy": getattr(getattr(config, "strategy", None), "name", None),
    }
    # The cached snapshot a hub model loads from: a cache updated under a run must not change its weights.
    if getattr(config, "model_snapshot", None):
        defining["model_snapshot"] = config.model_snapshot
    # A checkpoint holds one backend's optimizer state; torch runs recorded before the key existed match.
    if getattr(args, "backend", "torch") != "torch":
        defining["backend"] = args.backend
    length = {
        "max_steps": sft.max_steps,
        # TRL ignores the epochs once max_steps is set.
        "num_train_epochs": sft.num_train_epochs if sft.max_steps == -1 else None,
    }
    cadence = {key: getattr(sft, key) for key in CADENCE_KEYS}
    return plain({"defining": defining, "length": length, "cadence": cadence})


@dataclass
class Changes:
    blocking: list[str] = field(default_factory=list)  # "key: old -> new"
    safe: list[str] = field(default_factory=list)
    earlier: list[str] = field(default_factory=list)  # back to a length this run had before it was extended


def describe(key: str, old, new) -> str:
    return f"{key}: {old} -> {new}"


def compare(recorded: dict | None, current: dict) -> Changes:
    """What changed since the recorded start; an unrecorded run (older trainkit) has no changes."""
    changes = Changes()
    if not recorded:
        return changes
    before, now = recorded.get("defining", {}), current["defining"]
    for key in now:
        if key in before and before[key] != now[key]:
            changes.blocking.append(describe(key, before[key], now[key]))
    old_length, new_length = recorded.get("length", {}), current["length"]
    for key in LENGTH_KEYS:
        old, new = old_length.get(key), new_length.get(key)
        if old == new or key not in old_length:
            continue
        if old is not None and new is not None and (old == -1) == (new == -1) and new > old:
            changes.safe.append(describe(key, old, new))
        elif key == "max_steps" and new in old_length.get("earlier_max_steps", []):
            # The command that trained the run before --more_steps (or a longer max_steps) extended it.
            changes.earlier.append(describe(key, old, new))
        else:
            changes.blocking.append(describe(key, old, new))
    old_cadence = recorded.get("cadence", {})
    for key, new in current["cadence"].items():
        if key in old_cadence and old_cadence[key] != new:
            changes.safe.append(describe(key, old_cadence[key], new))
    return changes


def resume_flags(blocking: list[str]) -> str:
    """The command-line flags that give back the recorded values of simple keys ("key: old -> new" entries)."""
    flags = []
    for change in blocking:
        key, _, values = change.partition(": ")
        old = values.split(" -> ")[0]
        if old and " " not in old and not old.startswith(("[", "{")) and old != "None":
            flags.append(f"--{'model_revision' if key == 'model_snapshot' else key} {old}")
    return " ".join(flags)


def with_history(current: dict, recorded: dict | None) -> dict:
    """`current`, carrying the lengths the recorded run had before it grew (earlier_max_steps)."""
    if not recorded:
        return current
    old = recorded.get("length", {})
    earlier = set(old.get("earlier_max_steps", []))
    new_max, old_max = current["length"].get("max_steps"), old.get("max_steps")
    if isinstance(old_max, int) and isinstance(new_max, int) and new_max > old_max > 0:
        earlier.add(old_max)
    if not earlier:
        return current
    return {**current, "length": {**current["length"], "earlier_max_steps": sorted(earlier)}}


def read(output_dir: Path) -> dict | None:
    return read_json(output_dir / FINGERPRINT_FILE)


def write(output_dir: Path, current: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / FINGERPRINT_FILE, current)
