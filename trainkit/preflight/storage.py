"""Enough disk for the run, and on RunPod, on the disk that survives a pod stop.

    report = Report("PREFLIGHT")
    check_free_space(".", report, min_gb=50, recommended_gb=100)
    needed = disk_needed_bytes(model_bytes=15 * GB, model_cached=False, save_total_limit=3,
                               checkpoint_bytes=lora_checkpoint_bytes(40_000_000))
    check_disk_for_run("outputs/run", needed, report)    # or check_run_disk(...), split by disk
    check_runpod_persistence(report, output_dirs=["outputs/run"])

scripts/check_storage.py is the CLI. The only probe is `disk_usage(path)`, so tests
inject a full disk. This module never imports torch: it must answer in milliseconds.

GB here is 2**30 bytes, as `df -h` counts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from trainkit.core.report import Report

GB = 2**30
# Free disk each platform needs, in GB: (required, recommended). One table, so the setup and
# train scripts (which pass --platform to check_storage.py) and the docs agree.
PLATFORM_DISK_GB = {
    "h100": (50, 100),  # SPEC: the 7-8B model (~15 GB), the conda env (~10 GB), checkpoints, the data cache
    "m4": (30, 50),  # the model in the HF cache, .venv-local/ (~3 GB), checkpoints
    "cpu": (1, 2),  # the demo: a tiny random model and a 20-step run, a few MB
}
DEFAULT_MIN_GB, DEFAULT_RECOMMENDED_GB = PLATFORM_DISK_GB["h100"]
DEFAULT_MARGIN_BYTES = 5 * GB  # logs, the datasets cache, the final adapter, W&B files
MIN_MARGIN_BYTES = 256 * 2**20


def margin_for(model_bytes: int) -> int:
    """The margin a run keeps free beside its checkpoints, sized from the model: a 7B gets DEFAULT_MARGIN_BYTES, a
    tiny model a few hundred MB (the logs, caches and final adapter of a tiny run are small too)."""
    return max(MIN_MARGIN_BYTES, min(DEFAULT_MARGIN_BYTES, model_bytes))
TOKENIZER_BYTES = 50 * 2**20  # tokenizer files copied into every checkpoint (~10-30 MB for 7B chat models)
PERSISTENT_VOLUME = Path("/workspace")


# --- probe -----------------------------------------------------------------------------


def disk_usage(path: str | os.PathLike):
    """shutil.disk_usage of an existing path: (total, used, free) in bytes."""
    return shutil.disk_usage(path)


# --- space -------------------------------------------------------------------------------


def disk_thresholds(platform: str) -> tuple[float, float]:
    """(required, recommended) free GB for a platform: h100, m4 or cpu."""
    try:
        return PLATFORM_DISK_GB[platform]
    except KeyError:
        raise ValueError(f"unknown platform {platform!r}: one of {', '.join(PLATFORM_DISK_GB)}") from None


def gb(n_bytes: float) -> float:
    return n_bytes / GB


def existing_parent(path: str | os.PathLike) -> Path:
    """The path itself or its nearest existing ancestor: an output dir is often not made yet."""
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike) -> int:
    return disk_usage(existing_parent(path)).free


def check_free_space(path: str | os.PathLike, report: Report, min_gb: float = DEFAULT_MIN_GB,
                     recommended_gb: float = DEFAULT_RECOMMENDED_GB) -> int:
    """ERROR below `min_gb` free, WARNING below `recommended_gb`; returns the free bytes."""
    usage = disk_usage(existing_parent(path))
    free = gb(usage.free)
    text = f"{free:.1f} GB free of {gb(usage.total):.1f} GB on {path}"
    recommended_gb = max(recommended_gb, min_gb)
    if free < min_gb:
        report.error(f"only {text}; training needs at least {min_gb:g} GB",
                     "free space (old runs in outputs/, `hf cache rm model/<id>` for unused models), "
                     "or point --path and output_dir at a bigger disk")
    elif free < recommended_gb:
        report.warning(f"{text}: enough for one run, below the recommended {recommended_gb:g} GB",
                       "lower save_total_limit or clean old outputs/ to keep room for checkpoints")
    else:
        report.ok(text)
    return usage.free


def lora_checkpoint_bytes(trainable_params: int, tokenizer_bytes: int = TOKENIZER_BYTES) -> int:
    """One LoRA checkpoint: the adapter in float32 (PEFT upcasts it) plus AdamW's two float32 moments.

    Scheduler, RNG and trainer state are kilobytes.
    """
    return trainable_params * (4 + 2 * 4) + tokenizer_bytes


def disk_needed_bytes(model_bytes: int, model_cached: bool, save_total_limit: int, checkpoint_bytes: int,
                      margin: int = DEFAULT_MARGIN_BYTES) -> int:
    """Disk a run still needs: the base model if not yet cached, the checkpoints kept at once, a margin.

    `save_total_limit` is how many checkpoints are kept; when the config sets none, pass
    max_steps // save_steps. Trainer writes a new checkpoint before rotating the oldest
    away, so one more than the limit exists for a moment.
    """
    return (0 if model_cached else model_bytes) + (save_total_limit + 1) * checkpoint_bytes + margin


def write_probe(directory: Path) -> None:
    """Create and remove a file in `directory`: the only test of writability that root, ACLs,
    read-only mounts and network filesystems all answer truthfully. Raises OSError."""
    probe = directory / f".trainkit-write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def check_writable_dir(path: str | os.PathLike, what: str, report: Report) -> bool:
    """ERROR unless `path` exists as a writable directory or can be created as one (nothing is created)."""
    path = Path(path).expanduser().absolute()
    parent = existing_parent(path)
    if not parent.is_dir():
        report.error(f"{what} {path} cannot be created: {parent} is a file, not a directory",
                     "use a directory path there")
        return False
    try:
        write_probe(parent)
    except OSError as exc:
        where = "" if parent == path else f" (its nearest existing parent {parent} is not writable)"
        report.error(f"{what} {path} is not writable{where}: {exc.strerror or exc}",
                     "point it at a writable disk (--output_dir ...), or fix the permissions "
                     "(a read-only mount cannot hold checkpoints)")
        return False
    return True


def check_disk_for_run(path: str | os.PathLike, needed_bytes: int, report: Report) -> bool:
    """ERROR when the filesystem holding `path` has less than `needed_bytes` free."""
    free = free_bytes(path)
    if free < needed_bytes:
        report.error(f"{path} needs about {gb(needed_bytes):.1f} GB for this run, but only {gb(free):.1f} GB is free",
                     "free space, lower save_total_limit, or set output_dir (and HF_HOME) on a bigger disk")
        return False
    report.ok(f"disk: about {gb(needed_bytes):.1f} GB needed, {gb(free):.1f} GB free for {path}")
    return True


def check_run_disk(output_dir: str | os.PathLike, report: Report, *, model_bytes: int, model_cached: bool,
                   save_total_limit: int, checkpoint_bytes: int, margin: int = DEFAULT_MARGIN_BYTES,
                   environ: Mapping[str, str] | None = None) -> bool:
    """check_disk_for_run for a whole run, split by filesystem.

    The base model lands in the HF cache and the checkpoints in `output_dir`; when the two
    are on different disks each is checked for its own share.
    """
    cache = hf_cache_dir(environ)
    model_share = 0 if model_cached else model_bytes
    total = disk_needed_bytes(model_bytes, model_cached, save_total_limit, checkpoint_bytes, margin)
    if not model_share or same_filesystem(output_dir, cache):
        return check_disk_for_run(output_dir, total, report)
    ok_cache = check_disk_for_run(cache, model_share, report)
    return check_disk_for_run(output_dir, total - model_share, report) and ok_cache


def same_filesystem(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return existing_parent(a).stat().st_dev == existing_parent(b).stat().st_dev


# --- RunPod --------------------------------------------------------------------------------


def on_runpod(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return any(key.startswith("RUNPOD_") for key in environ)


def hf_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where huggingface_hub downloads models, resolved the way it does, from the environment now."""
    environ = os.environ if environ is None else environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(key):
            return Path(os.path.expandvars(environ[key])).expanduser()
    if environ.get("HF_HOME"):
        home = Path(os.path.expandvars(environ["HF_HOME"])).expanduser()
    else:
        home = Path(environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "huggingface"
    return home / "hub"


def inside(path: str | os.PathLike, volume: Path) -> bool:
    """Whether `path`, with symlinks followed, lies on `volume`."""
    resolved, root = Path(path).expanduser().resolve(), volume.resolve()
    return resolved == root or root in resolved.parents


def check_runpod_persistence(report: Report, output_dirs: Iterable[str | os.PathLike] = (),
                             environ: Mapping[str, str] | None = None, volume: Path | None = None) -> None:
    """On RunPod, WARNING for each output dir, and the HF cache, outside the persistent volume.

    Only /workspace survives a pod stop; the container disk is wiped, with the
    checkpoints (and the 15 GB model download) on it. A no-op off RunPod.
    """
    if not on_runpod(environ):
        return
    volume = volume or PERSISTENT_VOLUME
    if not volume.is_dir():
        report.warning(f"RunPod pod without a volume at {volume}: everything is lost when the pod stops",
                       f"attach a network or pod volume mounted at {volume}, and keep outputs and HF_HOME on it")
        return
    for output_dir in output_dirs:
        if inside(output_dir, volume):
            report.ok(f"output dir {output_dir} is on the persistent volume {volume}")
        else:
            report.warning(f"output dir {output_dir} is outside {volume}: its checkpoints vanish when the pod stops",
                           f"set output_dir under {volume} (keep the repo in {volume}, or pass "
                           f"--output_dir {volume}/outputs/<run>)")
    cache = hf_cache_dir(environ)
    if inside(cache, volume):
        report.ok(f"HF cache {cache} is on the persistent volume {volume}")
    else:
        report.warning(f"HF cache {cache} is outside {volume}: the model is downloaded again after every pod stop",
                       f"export HF_HOME={volume}/hf (add it to ~/.bashrc) before downloading")
