"""Which checkpoint is safe to resume from.

transformers writes `checkpoint-N/` in place, `trainer_state.json` last, and its
`get_last_checkpoint()` returns the highest number without looking inside. A kill
mid-save leaves a directory that either crashes the resume or, worse, resumes
silently with a fresh optimizer when `optimizer.pt`/`scheduler.pt` are missing.
So a checkpoint counts only when every file a resume restores is complete, and
not while it holds INCOMPLETE_MARKER: trainkit's trainer writes that file before each save and
deletes it once every process has written its part (under torchrun the first process writes
`trainer_state.json` without waiting for the others' RNG state).

Under FSDP (accelerate's save through the Trainer) the model and optimizer may be sharded:
`pytorch_model_fsdp_0/` (the adapter only, with PEFT) and `optimizer_0/` are
torch.distributed.checkpoint folders, whose `.metadata` the coordinating rank writes after every
rank's `__<rank>_0.distcp` shard, and which lists the byte range of every tensor in every shard;
such a checkpoint holds no `adapter_model.safetensors`. A full state dict is
`pytorch_model_fsdp.bin` / `optimizer.bin`. Reading `.metadata` imports torch (seconds), which
only a checkpoint with such a folder pays. With `save_only_model` the Trainer writes no
optimizer, scheduler or RNG state at all: such a checkpoint is complete without them (a resume
from it restarts the optimizer, as transformers documents).
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

# transformers.trainer_utils.PREFIX_CHECKPOINT_DIR, copied so that status checks
# need not import transformers (seconds) to list a directory.
PREFIX_CHECKPOINT_DIR = "checkpoint"
INCOMPLETE_MARKER = "checkpoint-is-incomplete.txt"
ADAPTER_FILES = ("adapter_model.safetensors", "model.safetensors")
TORCH_FILES = ("optimizer.pt", "scheduler.pt")
FSDP_MODEL_FILES = ("pytorch_model_fsdp.bin",)
FSDP_MODEL_DIR = "pytorch_model_fsdp_0"
FSDP_OPTIMIZER_FILE = "optimizer.bin"
FSDP_OPTIMIZER_DIR = "optimizer_0"
DCP_METADATA = ".metadata"
# The MLX backend's checkpoint (trainkit.train.mlx_backend): its optimizer state and step instead of torch's.
MLX_STATE_FILE = "mlx_state.json"
MLX_OPTIMIZER_FILE = "optimizer.safetensors"
MLX_ADAPTER_FILE = "mlx/adapters.safetensors"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int


def checkpoint_dirs(output_dir: Path) -> list[Checkpoint]:
    """Every checkpoint-N directory, newest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for child in output_dir.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if match and child.is_dir():
            found.append(Checkpoint(child, int(match.group(1))))
    return sorted(found, key=lambda c: c.step, reverse=True)


def safetensors_problem(path: Path) -> str | None:
    """None when the header parses and the file is as long as the header says."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return f"{path.name} is truncated"
            (header_len,) = struct.unpack("<Q", raw)
            header = json.loads(fh.read(header_len))
    except (OSError, ValueError) as exc:
        return f"{path.name} header unreadable ({exc.__class__.__name__})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if path.stat().st_size < 8 + header_len + end:
        return f"{path.name} is truncated"
    return None


def torch_file_problem(path: Path) -> str | None:
    """torch.save writes a zip whose directory sits at the end: a cut-off file has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as exc:
        return f"{path.name} is unreadable ({exc.__class__.__name__})"
    return f"{path.name} is corrupt ({bad})" if bad else None


def sharded_problem(folder: Path) -> str | None:
    """A torch.distributed.checkpoint folder is whole when its `.metadata`, written after every shard, reads,
    and every byte range it lists is on disk: a shard copied without its end, or one rank's shard lost, is not."""
    if not (folder / DCP_METADATA).is_file() or (folder / DCP_METADATA).stat().st_size == 0:
        return f"{folder.name}/{DCP_METADATA} missing (a rank was cut off while saving its shard)"
    try:
        from torch.distributed.checkpoint import FileSystemReader

        storage = FileSystemReader(str(folder)).read_metadata().storage_data or {}
    except Exception as exc:  # whatever unpickling a damaged file raises, the folder cannot be restored
        return f"{folder.name}/{DCP_METADATA} unreadable ({exc.__class__.__name__})"
    ends: dict[str, int] = {}
    for item in storage.values():
        ends[item.relative_path] = max(ends.get(item.relative_path, 0), item.offset + item.length)
    if not ends:
        return f"{folder.name} holds no .distcp shard"
    for name, end in sorted(ends.items()):
        shard = folder / name
        if not shard.is_file():
            return f"{folder.name}/{name} missing (one rank's shard)"
        if shard.stat().st_size < end:
            return f"{folder.name}/{name} is truncated"
    return None


def optimizer_problems(path: Path) -> list[str] | None:
    """The FSDP optimizer layout's problems; None when the checkpoint has no FSDP optimizer."""
    if (path / FSDP_OPTIMIZER_DIR).is_dir():
        problem = sharded_problem(path / FSDP_OPTIMIZER_DIR)
    elif (path / FSDP_OPTIMIZER_FILE).exists():
        problem = torch_file_problem(path / FSDP_OPTIMIZER_FILE)
    else:
        return None
    return [problem] if problem else []


def problems(checkpoint: Checkpoint, save_only_model: bool = False) -> list[str]:
    """Why a resume from this checkpoint would crash or silently lose state; empty when sound.

    `save_only_model`: the run saves no optimizer or scheduler (TrainingArguments.save_only_model)."""
    path = checkpoint.path
    if (path / INCOMPLETE_MARKER).exists():
        return [f"{INCOMPLETE_MARKER} present (killed while saving)"]
    if not any(path.iterdir()):
        return ["directory is empty"]
    found = []
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        if state.get("global_step") != checkpoint.step:
            found.append(f"trainer_state.json says step {state.get('global_step')}, directory says {checkpoint.step}")
    except FileNotFoundError:
        found.append("trainer_state.json missing")
    except (OSError, ValueError):
        found.append("trainer_state.json unreadable")
    adapters = [path / name for name in ADAPTER_FILES if (path / name).exists()]
    # Under FSDP the optimizer is saved the way the model is: a folder beside a folder, a file beside a file.
    fsdp_optimizer_name = None
    if (path / FSDP_MODEL_DIR).is_dir():
        fsdp_optimizer_name = FSDP_OPTIMIZER_DIR
        found += [p for p in [sharded_problem(path / FSDP_MODEL_DIR)] if p]
    elif any((path / name).exists() for name in FSDP_MODEL_FILES):
        fsdp_optimizer_name = FSDP_OPTIMIZER_FILE
        found += [p for p in (torch_file_problem(path / n) for n in FSDP_MODEL_FILES if (path / n).exists()) if p]
    elif not adapters:
        found.append("no adapter_model.safetensors")
    found += [p for p in map(safetensors_problem, adapters) if p]
    if (path / MLX_STATE_FILE).exists():
        for name in (MLX_ADAPTER_FILE, MLX_OPTIMIZER_FILE):
            if not (path / name).exists():
                found.append(f"{name} missing (a resume would restart the adapter or optimizer)")
            elif problem := safetensors_problem(path / name):
                found.append(problem)
        return found
    if save_only_model:
        return found
    fsdp_optimizer = optimizer_problems(path)
    if fsdp_optimizer is None and fsdp_optimizer_name:
        fsdp_optimizer = [f"{fsdp_optimizer_name} missing (a resume would restart the optimizer and LR schedule)"]
    for name in TORCH_FILES:
        if name == "optimizer.pt" and fsdp_optimizer is not None:
            found += fsdp_optimizer
        elif not (path / name).exists():
            found.append(f"{name} missing (a resume would restart the optimizer and LR schedule)")
        elif problem := torch_file_problem(path / name):
            found.append(problem)
    return found


def newest_valid(output_dir: Path, on_skip=None, save_only_model: bool = False,
                 at_most: int | None = None) -> Checkpoint | None:
    """The newest checkpoint that passes `problems`, of step `at_most` or earlier when given;
    `on_skip(checkpoint, reasons)` hears about the rest."""
    for checkpoint in checkpoint_dirs(output_dir):
        if at_most is not None and checkpoint.step > at_most:
            continue
        reasons = problems(checkpoint, save_only_model)
        if not reasons:
            return checkpoint
        if on_skip:
            on_skip(checkpoint, reasons)
    return None


def newest_valid_on_every_rank(output_dir: Path, gather, on_skip=None,
                               save_only_model: bool = False) -> tuple[Checkpoint | None, list[int]]:
    """The newest checkpoint complete on every rank, and what each rank found first.

    Ranks on several nodes resume from node-local copies (`save_on_each_node`), and a node
    preempted mid-save holds an older newest checkpoint than the others: ranks resuming from
    different steps would train out of step and hang at the end. `gather(step)` returns every
    rank's value (torch.distributed.all_gather_object); each round lowers the bound to the
    oldest newest step, until every rank names the same one (a step, or -1 for none)."""
    newest = newest_valid(output_dir, on_skip, save_only_model)
    first = found = gather(newest.step if newest else -1)
    while len(set(found)) > 1:
        bound = min(found)
        newest = None if bound < 0 else newest_valid(output_dir, None, save_only_model, at_most=bound)
        found = gather(newest.step if newest else -1)
    return newest, first
