"""Out of room: a full disk or an out-of-memory step becomes one verdict that says what to change.

Either is exit 1 (fix the environment or the config; the supervisor does not relaunch into the same
wall). The checks here read the exception chain only; the figures (free space, checkpoint sizes,
peak memory) come from small probes that tests replace.

    error = classify(exc, context)  # DiskFull, OutOfMemory or None
    LowSpace(...).before_save(...)  # the WARNING while there is still time to act
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from trainkit.core.errors import TrainkitError
from trainkit.core.protocol import ExitCode

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# What a full disk looks like when a library re-raises it without the OSError (safetensors' Rust
# writer, torch's zip writer, tokenizers).
FULL_TEXTS = ("no space left on device", "disk quota exceeded", "storagefull", "[errno 28]", "[errno 122]")
# CUDA (torch.OutOfMemoryError and the CUDA runtime's text), MPS, MLX on Metal, and the CPU allocator.
MEMORY_TEXTS = ("out of memory", "mps backend out of memory", "[metal::malloc]", "unable to allocate",
                "insufficient memory", "can't allocate memory", "failed to allocate")


class DiskFull(TrainkitError):
    """A write failed for want of space (ENOSPC/EDQUOT): exit 1, the run resumes once space is freed."""

    failure = "disk_full"


class OutOfMemory(TrainkitError):
    """A step did not fit the accelerator's memory: exit 1 with the lever that makes it fit."""

    failure = "out_of_memory"


def chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def full_disk_error(exc: BaseException) -> BaseException | None:
    """The link of EXC's chain that says the disk is full, or None."""
    for link in chain(exc):
        if isinstance(link, OSError) and link.errno in FULL_ERRNOS:
            return link
        if any(text in str(link).lower() for text in FULL_TEXTS):
            return link
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    for link in chain(exc):
        if isinstance(link, MemoryError) or type(link).__name__ == "OutOfMemoryError":
            return True
        if isinstance(link, RuntimeError) and any(text in str(link).lower() for text in MEMORY_TEXTS):
            return True
    return False


# --- sizes -----------------------------------------------------------------------------------


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def free_bytes(path: Path) -> int:
    """Free bytes where PATH is written (trainkit.preflight.storage's probe); TRAINKIT_FAULT_DISK_FREE_BYTES stands
    in for a nearly full disk."""
    from trainkit.preflight import storage

    injected = os.environ.get("TRAINKIT_FAULT_DISK_FREE_BYTES")
    return int(injected) if injected else storage.free_bytes(path)


def size_text(n: float) -> str:
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{int(n)} bytes"


def next_save_bytes(output_dir: Path) -> int | None:
    """What the next checkpoint will take: the newest complete one's size (None before the first)."""
    from trainkit.train import checkpoints

    newest = checkpoints.newest_valid(output_dir)
    return tree_bytes(newest.path) if newest else None


def what_to_free(output_dir: Path, limit: int | None) -> list[str]:
    """Places to free, each with its size: checkpoints beyond save_total_limit, W&B's files, the HF cache."""
    from trainkit.preflight.storage import hf_cache_dir
    from trainkit.train import checkpoints

    places = []
    found = checkpoints.checkpoint_dirs(output_dir)  # newest first
    extra = found[limit:] if limit and limit > 0 else found[2:]
    if extra:
        size = sum(tree_bytes(c.path) for c in extra)
        places.append(f"older checkpoints ({', '.join(c.path.name for c in extra[:4])}"
                      f"{' …' if len(extra) > 4 else ''}; {size_text(size)})")
    wandb = output_dir / "wandb"
    if wandb.is_dir():
        places.append(f"{wandb} ({size_text(tree_bytes(wandb))}; `wandb sync` it first if it is offline)")
    cache = hf_cache_dir()
    if cache.is_dir():
        places.append(f"unused models in the HF cache {cache} (`hf cache ls`, then `hf cache rm model/<id>`)")
    return places


# --- the verdicts ----------------------------------------------------------------------------


@dataclass
class Context:
    """What the run knows when the error arrives."""

    output_dir: Path
    save_total_limit: int | None = None
    step: int | None = None
    batch_shape: tuple[int, ...] | None = None  # (rows, tokens) of the micro-batch that was running
    device: str = "cpu"
    peak_bytes: int | None = None  # measured (trainkit.train.out_of_room.peak_memory)
    estimate: object = None  # trainkit.preflight.memory.MemoryEstimate, the preflight's
    budget_gb: float | None = None
    sft: object = None
    load_in_4bit: bool = False


def disk_full(link: BaseException, ctx: Context) -> DiskFull:
    from trainkit.train import checkpoints

    out = ctx.output_dir
    where = getattr(link, "filename", None) or out
    free = free_bytes(Path(where))
    need = next_save_bytes(out)
    newest = checkpoints.newest_valid(out)
    kept = (f"the newest complete checkpoint, {newest.path.name}, is untouched" if newest
            else "no complete checkpoint exists yet")
    needs = f", the next save needs ~{size_text(need)}" if need else ""
    message = (f"the disk is full: writing {where} failed ({os.strerror(errno.ENOSPC)}); {size_text(free)} free"
               f"{needs}; {kept}")
    places = what_to_free(out, ctx.save_total_limit)
    hint = ("free space (" + "; ".join(places) + ")" if places else "free space on that disk") + \
        ", or move output_dir to a bigger volume; then re-run the same command: it resumes" + \
        (f" from {newest.path.name}" if newest else "")
    return DiskFull(message, hint)


MEANINGFUL_CUT = 0.10  # a lever the memory model credits with less than this is not worth its cost


def lever(ctx: Context) -> str:
    """The change that makes the step fit, by the memory model: of recomputing activations, half the micro-batch
    with twice the accumulation, a shorter max_length and a 4-bit base, the first (in that order of cost) the
    estimate credits with a real cut, else the one it credits most."""
    sft = ctx.sft
    batch = getattr(sft, "per_device_train_batch_size", 1) or 1
    accumulation = getattr(sft, "gradient_accumulation_steps", 1) or 1
    length = getattr(sft, "max_length", None)
    levers = []
    if sft is not None and not getattr(sft, "activation_checkpointing", False):
        levers.append(("set activation_checkpointing: true (recompute activations in the backward pass)",
                       {"activation_checkpointing": True}))
    if batch > 1:
        half = batch // 2
        levers.append((f"halve the micro-batch and keep the effective batch: per_device_train_batch_size: {half}, "
                       f"gradient_accumulation_steps: {accumulation * batch // half}", {"batch_size": half}))
    if length and length > 256:
        shorter = max(256, length // 2)
        levers.append((f"lower max_length to {shorter} (longer examples are cut; inspect_data.py shows how many)",
                       {"max_length": shorter}))
    if not ctx.load_in_4bit:
        levers.append(("set load_in_4bit: true (QLoRA; CUDA with bitsandbytes, or backend: mlx on a Mac)",
                       {"load_in_4bit": True}))
    if not levers:
        return "train a smaller model, or on a machine with more accelerator memory"
    est = ctx.estimate
    if est is None:
        return levers[0][0]
    totals = []
    for text, changes in levers:
        try:
            totals.append((text, est.with_settings(**changes).total))
        except (TypeError, ValueError):
            totals.append((text, est.total))
    text, total = next(((t, n) for t, n in totals if n <= (1 - MEANINGFUL_CUT) * est.total),
                       min(totals, key=lambda pair: pair[1]))
    return f"{text} (the estimate: {size_text(total)} instead of {size_text(est.total)})"


def out_of_memory(link: BaseException, ctx: Context) -> OutOfMemory:
    shape = " x ".join(str(n) for n in ctx.batch_shape) if ctx.batch_shape else "?"
    rows_tokens = f"a micro-batch of {shape} (rows x tokens)"
    peak = f"peak {size_text(ctx.peak_bytes)} measured" if ctx.peak_bytes else "peak not measured"
    estimate = f" against the preflight's estimate of {size_text(ctx.estimate.total)}" if ctx.estimate else ""
    budget = f" (budget {ctx.budget_gb:g} GB)" if ctx.budget_gb else ""
    first = " ".join(str(link).split())[:160]
    message = (f"out of memory on {ctx.device} at step {ctx.step if ctx.step is not None else '?'}: {rows_tokens} "
               f"did not fit; {peak}{estimate}{budget} ({type(link).__name__}: {first})")
    return OutOfMemory(message, f"{lever(ctx)}; then re-run the same command: it resumes from the last checkpoint")


def classify(exc: BaseException, ctx: Context) -> TrainkitError | None:
    """DiskFull or OutOfMemory for EXC, or None when it is neither."""
    if isinstance(exc, TrainkitError):
        return None
    link = full_disk_error(exc)
    if link is not None:
        return disk_full(link, ctx)
    if is_out_of_memory(exc):
        return out_of_memory(exc, ctx)
    return None


def peak_memory(device: str) -> int | None:
    """The run's peak memory so far: CUDA's allocator, MPS's driver, MLX's, else this process's peak RSS."""
    try:
        if device == "cuda":
            import torch

            return int(torch.cuda.max_memory_allocated())
        if device == "mps":
            import torch

            return int(torch.mps.driver_allocated_memory())
        if device == "mlx":
            import mlx.core as mx

            return int(mx.get_peak_memory())
        from trainkit.preflight.device_figures import process_peak_rss

        return process_peak_rss()
    except Exception:  # a figure for the message; its absence is said
        return None


def remove_half_written(folder: Path, marker: str) -> bool:
    """Delete FOLDER when it carries the incomplete marker (a save that failed); a complete one is never removed."""
    if (folder / marker).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        return True
    return False


LOW_SPACE_SAVES = 2  # warn while the disk still holds this many more checkpoints, not after the one that fails


def low_space(output_dir: Path) -> tuple[int, int] | None:
    """(free, next save) when fewer than LOW_SPACE_SAVES more checkpoints fit; None when there is room (or no
    checkpoint yet to size the next from)."""
    need = next_save_bytes(output_dir)
    if not need:
        return None
    free = free_bytes(output_dir)
    return (free, need) if free < LOW_SPACE_SAVES * need else None


def low_space_watch(output_dir: Path, status, warn):
    """A callback that, before each save, warns once (plus the `disk_low` event and notification) when the disk
    is running out."""
    from transformers import TrainerCallback

    from trainkit.core.status import is_main_process
    from trainkit.train.notifications import announce

    class LowSpaceWatch(TrainerCallback):
        warned = False

        def on_step_end(self, args, state, control, **kwargs):
            if not control.should_save or self.warned or not is_main_process():
                return
            found = low_space(output_dir)
            if found is None:
                return
            self.warned = True
            free, need = found
            message = (f"low disk space: {size_text(free)} free where {output_dir} is written, and each checkpoint "
                       f"takes ~{size_text(need)}: fewer than {LOW_SPACE_SAVES} more saves fit (step "
                       f"{state.global_step})")
            places = what_to_free(output_dir, args.save_total_limit)
            warn(message, "free space now (" + "; ".join(places or ["files on that disk"]) + "), or a full disk "
                          "will end the run at its next save; lower save_total_limit to keep fewer checkpoints")
            status.event("disk_low", free_bytes=free, next_save_bytes=need, step=state.global_step)
            announce("disk_low", status, message, free_bytes=free, next_save_bytes=need)

    return LowSpaceWatch()


OOM_RETRY_FILE = "oom_retry.json"


class OomRetry(TrainkitError):
    """An out-of-memory step under oom_retry_with_checkpointing: exit 70, and the relaunch recomputes activations."""

    failure = "out_of_memory"
    exit_code = ExitCode.CRASHED


def retry_with_checkpointing(error: OutOfMemory, ctx: Context) -> OomRetry:
    """Record that the next start turns activation checkpointing on, and say so."""
    import json

    from trainkit.core.status import is_main_process

    if is_main_process():
        (ctx.output_dir / OOM_RETRY_FILE).write_text(json.dumps({"step": ctx.step, "batch_shape": ctx.batch_shape,
                                                                 "activation_checkpointing": True}) + "\n")
    return OomRetry(error.message, "oom_retry_with_checkpointing is on: the next start (the supervisor's relaunch, "
                                   "or the same command by hand) turns activation_checkpointing on and resumes from "
                                   "the last checkpoint")


def apply_retry(config) -> int | None:
    """At a start after OomRetry: activation checkpointing on (the preflight's auto decision included); the step
    that ran out, or None when there is nothing to apply."""
    import json

    path = config.output_dir / OOM_RETRY_FILE
    if not config.trainkit.oom_retry_with_checkpointing or not path.is_file():
        return None
    if config.sft.activation_checkpointing and not config.trainkit.activation_checkpointing_auto:
        return None
    config.sft.activation_checkpointing = True
    config.trainkit.activation_checkpointing_auto = False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("step")
    except (OSError, ValueError, AttributeError):
        return 0
