"""Which accelerator this machine has, whether it computes correctly, and what it can train.

    report = Report("PREFLIGHT")
    device = check_gpu(report, env="h100")     # "auto", "h100", "m4" or "cpu"
    sys.exit(report.finish(f"{device} ready"))

scripts/check_gpu.py is the CLI. CUDA: name, memory, compute capability and a small
matmul checked against a float64 reference; MPS: unified memory and the same matmul;
CPU: no accelerator, an error only when the platform demands one. The memory is
graded (INSUFFICIENT < 20 GB, LOW 20-24, ADEQUATE 24-70, EXCELLENT >= 70) and the
matching config recommended.

GB here is 2**30 bytes, as nvidia-smi and macOS count: a "24 GB" card reports a
little under 24 of them, an H100 80GB about 79.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from trainkit.config import settings as config
from trainkit.core.report import Report
from trainkit.preflight.gpu_models import H100_MIN_GB, is_h100_80gb  # noqa: F401 (H100_MIN_GB: the threshold's name here)

GB = 2**30
INSUFFICIENT, LOW, ADEQUATE, EXCELLENT = "INSUFFICIENT", "LOW", "ADEQUATE", "EXCELLENT"
LOW_GB, ADEQUATE_GB, EXCELLENT_GB = 20, 24, 70
# Unified memory for a 7B on a Mac: the 4-bit base through MLX from 16 GB, bf16 weights from 48 GB.
MAC_MIN_GB, MAC_BF16_GB = 16, 48
MATMUL_TOLERANCE = 1e-2  # relative; TF32 matmuls land near 1e-3, a broken device far above
H100_CONFIG = "configs/training_config_h100.yaml"
M4_CONFIG = "configs/training_config_m4.yaml"
SMOKE_CONFIG = "configs/smoke.yaml"


@dataclass(frozen=True)
class GpuProperties:
    name: str
    total_memory: int  # bytes
    compute_capability: tuple[int, int]


# --- probes: the only functions that touch the hardware ------------------------------


def gpu_count() -> int:
    """CUDA devices this process sees (after CUDA_VISIBLE_DEVICES)."""
    import torch

    return torch.cuda.device_count()


def gpu_properties(index: int = 0) -> GpuProperties:
    """CUDA device `index` as torch sees it."""
    import torch

    props = torch.cuda.get_device_properties(index)
    return GpuProperties(props.name, props.total_memory, (props.major, props.minor))


def unified_memory_bytes() -> int:
    """Physical memory, which on Apple Silicon the GPU shares (what `sysctl hw.memsize` says)."""
    import psutil

    return psutil.virtual_memory().total


def recommended_working_set_bytes(backend: str) -> int | None:
    """The GPU memory macOS lets one process keep resident on Apple Silicon (Metal's recommended working
    set), as the backend's library reports it; None off a Mac or when it cannot say."""
    if sys.platform != "darwin":
        return None
    try:
        if backend == "mlx":
            import mlx.core as mx

            return int(mx.metal.device_info()["max_recommended_working_set_size"])
        import torch

        return int(torch.mps.recommended_max_memory()) if torch.backends.mps.is_available() else None
    except Exception:  # no Metal device, an older library: the platform default applies
        return None


def memory_budget_gb(run) -> tuple[float | None, str]:
    """The memory the parsed config `run` may use, in the memory model's GB (1e9 bytes, not this module's
    2**30), and where the figure comes from: memory_budget_gb when set; on a Mac the GPU's recommended
    working set; else the platform's default (h100 70 GB, m4 28 GB, cpu none)."""
    from trainkit.preflight import memory

    if run.trainkit.memory_budget_gb is not None:
        return run.trainkit.memory_budget_gb, "set by memory_budget_gb"
    if run.platform == "m4":
        found = recommended_working_set_bytes(getattr(run.trainkit, "backend", "torch"))
        if found:
            return round(found / memory.GB, 1), "the GPU's recommended working set"
    return memory.platform_budget_gb(run.platform), f"the {run.platform} default"


def apple_chip() -> str | None:
    """The chip's name, e.g. "Apple M4 Pro"; None when sysctl cannot say."""
    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                             timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_matmul(device: str) -> float:
    """Multiply two 512x512 matrices on `device`; the relative error against float64 on the CPU."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 512, generator=gen), torch.randn(512, 512, generator=gen)
    expected = a.double() @ b.double()
    got = (a.to(device) @ b.to(device)).to("cpu", torch.float64)  # the copy back waits for the device
    return ((got - expected).abs().max() / expected.abs().max()).item()


# --- decisions -------------------------------------------------------------------------


def gb(n_bytes: int) -> float:
    return n_bytes / GB


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def memory_level(memory_bytes: int) -> str:
    """INSUFFICIENT < 20 GB <= LOW <= 24 GB < ADEQUATE < 70 GB <= EXCELLENT (24 GB cards and Macs are LOW)."""
    size = gb(memory_bytes)
    if size < LOW_GB:
        return INSUFFICIENT
    if size <= ADEQUATE_GB:
        return LOW
    if size < EXCELLENT_GB:
        return ADEQUATE
    return EXCELLENT


def recommended_config(device: str, memory_bytes: int = 0) -> tuple[str, str | None]:
    """The shipped config for this device and memory, and what to change in it (or None)."""
    if device == "mps":
        return M4_CONFIG, None
    if device != "cuda":
        return SMOKE_CONFIG, "a CPU trains only the tiny smoke model"
    level = memory_level(memory_bytes)
    if level == EXCELLENT:
        return H100_CONFIG, None
    if level == ADEQUATE:
        return H100_CONFIG, ("halve per_device_train_batch_size and double gradient_accumulation_steps "
                             "until validate_training_config.py's memory estimate fits")
    if level == LOW:
        return M4_CONFIG, "its batch 1 x 8 accumulation at max_length 1024 is sized for about 24-28 GB"
    return SMOKE_CONFIG, "a 7B LoRA does not fit: use a GPU with 24 GB or more"


def check_memory(memory_bytes: int, report: Report, what: str = "GPU memory") -> str:
    level = memory_level(memory_bytes)
    text = f"{what}: {gb(memory_bytes):.1f} GB ({level})"
    if level == INSUFFICIENT:
        report.error(f"{text}: a 7B LoRA needs at least {LOW_GB} GB",
                     "use a machine with 24 GB or more (RunPod H100 80GB, or a 32 GB Mac)")
    elif level == LOW:
        report.warning(f"{text}: a 7B LoRA fits only with batch 1, short sequences and gradient checkpointing",
                       f"start from {M4_CONFIG}; check the estimate with scripts/validate_training_config.py")
    else:
        report.ok(text)
    return level


def check_matmul(device: str, report: Report) -> bool:
    try:
        error = run_matmul(device)
    except RuntimeError as exc:  # CUDA/MPS failures (no kernel image, ECC error, driver mismatch)
        report.error(f"a matmul on {device} failed: {first_line(exc)}",
                     "check the driver with `nvidia-smi` (or restart the pod); reinstall torch for this CUDA"
                     if device == "cuda" else "update macOS and reinstall torch (scripts/setup_m4_local.sh)")
        return False
    if not error <= MATMUL_TOLERANCE:  # also catches NaN
        report.error(f"a matmul on {device} gave wrong results (relative error {error:.2g})",
                     "the device is faulty or misconfigured: restart the machine, or ask for another pod")
        return False
    report.ok(f"matmul test on {device} passed (relative error {error:.1e})")
    return True


def check_h100(props: GpuProperties, report: Report) -> None:
    """The H100 configs are sized for 80 GB: say what was found instead."""
    size = gb(props.total_memory)
    if "H100" in props.name.upper() and size >= H100_MIN_GB:
        report.ok(f"{props.name} is an H100 with {size:.0f} GB")
        return
    report.warning(f"expected an H100 80GB, found {props.name} with {size:.1f} GB",
                   f"{H100_CONFIG} is sized for 80 GB: check scripts/validate_training_config.py's memory estimate, "
                   "or start an H100 80GB pod")


def check_cuda_devices(report: Report, env: str, count: int) -> None:
    """Every visible GPU: each must answer, compute correctly, and all must be one model with one memory size,
    since a multi-GPU run splits each batch over all of them and waits for the slowest and smallest."""
    found: list[GpuProperties] = []
    unusable: list[str] = []
    for index in range(count):
        try:
            props = gpu_properties(index)
        except RuntimeError as exc:
            report.error(f"cannot query CUDA GPU {index}: {first_line(exc)}",
                         "check the driver with `nvidia-smi`, or restart the pod")
            unusable.append(str(index))
            continue
        major, minor = props.compute_capability
        report.ok(f"CUDA GPU {index}: {props.name}, {gb(props.total_memory):.1f} GB, "
                  f"compute capability {major}.{minor}")
        found.append(props)
        if not check_matmul(f"cuda:{index}", report):
            unusable.append(str(index))
    if unusable:
        healthy = ",".join(str(i) for i in range(count) if str(i) not in unusable)
        report.error(f"{len(unusable)} of the {count} visible GPUs failed the health check (GPU {', '.join(unusable)})",
                     f"a multi-GPU run needs every GPU it uses: leave them out with CUDA_VISIBLE_DEVICES={healthy} "
                     f"and --gpus {count - len(unusable)}, or ask for another pod")
    if not found:
        return
    kinds = sorted({(p.name, round(gb(p.total_memory))) for p in found})
    if len(kinds) > 1:
        listed = "; ".join(f"{sum(1 for p in found if (p.name, round(gb(p.total_memory))) == kind)} x {kind[0]} "
                           f"{kind[1]} GB" for kind in kinds)
        report.error(f"the {count} visible GPUs are not all the same: {listed}",
                     "a multi-GPU run waits for the slowest and is sized for the smallest: choose identical GPUs "
                     "with CUDA_VISIBLE_DEVICES, or launch with --gpus 1")
    else:
        report.ok(f"{count} identical GPUs: {kinds[0][0]}, {kinds[0][1]} GB each")
    smallest = min(found, key=lambda p: p.total_memory)
    if min(p.compute_capability for p in found) < (8, 0):
        major, minor = min(p.compute_capability for p in found)
        report.warning(f"compute capability {major}.{minor} has no bf16 or flash-attn (both need 8.0+, Ampere)",
                       "set bf16: false and fp16: true in the config; attention falls back to SDPA")
    check_memory(smallest.total_memory, report, "memory per GPU")
    if env == "h100":
        check_h100(smallest, report)
    recommend("cuda", smallest.total_memory, report)


def check_cuda_device(report: Report, env: str) -> None:
    count = gpu_count()
    if count > 1:
        check_cuda_devices(report, env, count)
        return
    try:
        props = gpu_properties()
    except RuntimeError as exc:  # the driver answers is_available() but not a real query
        report.error(f"cannot query the CUDA GPU: {first_line(exc)}",
                     "check the driver with `nvidia-smi`, or restart the pod")
        return
    major, minor = props.compute_capability
    report.ok(f"CUDA GPU: {props.name}, {gb(props.total_memory):.1f} GB, compute capability {major}.{minor}")
    if (major, minor) < (8, 0):
        report.warning(f"compute capability {major}.{minor} has no bf16 or flash-attn (both need 8.0+, Ampere)",
                       "set bf16: false and fp16: true in the config; attention falls back to SDPA")
    check_matmul("cuda", report)
    check_memory(props.total_memory, report)
    if env == "h100":
        check_h100(props, report)
    recommend("cuda", props.total_memory, report)


def check_mps_device(report: Report) -> None:
    memory = unified_memory_bytes()
    report.ok(f"Apple GPU (MPS): {apple_chip() or 'Apple Silicon'}, {gb(memory):.1f} GB unified memory")
    check_matmul("mps", report)
    check_metal(report)
    check_mac_memory(memory, report)
    recommend("mps", memory, report)


def check_mac_memory(memory_bytes: int, report: Report) -> None:
    """A Mac trains a 7B under MLX with a 4-bit base: ~9.4 GB with activation checkpointing fits the GPU working
    set of a 16 GB Mac (about two thirds of it); bf16 weights want 48 GB and more."""
    size = gb(memory_bytes)
    text = f"unified memory: {size:.1f} GB"
    if size < MAC_MIN_GB:
        report.error(f"{text}: a 7B LoRA needs at least {MAC_MIN_GB} GB on a Mac, even with a 4-bit base",
                     "train a smaller model, or on a RunPod H100 (scripts/setup_runpod_h100.sh)")
    elif size < MAC_BF16_GB:
        report.ok(f"{text}: a 7B trains with the 4-bit base through MLX (the m4 config's backend: mlx, "
                  "load_in_4bit); the preflight's estimate decides activation checkpointing")
    else:
        report.ok(f"{text}: room for a 7B in bf16 as well (load_in_4bit: false)")


def mlx_metal_probe() -> dict | None:
    """MLX's view of the Mac's GPU: device_info plus the error of a small matmul on it (None: it matched float64);
    None when MLX is not installed."""
    import importlib.util

    if importlib.util.find_spec("mlx") is None:
        return None
    import mlx.core as mx
    import numpy as np

    if not mx.metal.is_available():
        return {"available": False}
    info = dict(mx.metal.device_info())
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
    with mx.stream(mx.gpu):
        product = np.array(mx.array(a, dtype=mx.float32) @ mx.array(b, dtype=mx.float32))
    info["available"] = True
    info["matmul_error"] = float(np.max(np.abs(product - a @ b)) / np.max(np.abs(a @ b)))
    return info


def check_metal(report: Report) -> None:
    """backend: mlx (the m4 config's) trains through Metal: MLX must see the GPU and compute on it correctly."""
    try:
        info = mlx_metal_probe()
    except Exception as exc:  # a broken MLX install: say what it raised
        report.error(f"MLX could not use the GPU: {exc.__class__.__name__}: {exc}",
                     "reinstall the pinned mlx: .venv-local/bin/pip install --force-reinstall -r "
                     "requirements-local.txt")
        return
    if info is None:
        report.warning("MLX is not installed: backend: mlx (the m4 config's) cannot train here",
                       "install the pinned versions: scripts/setup_m4_local.sh, or pip install -r "
                       "requirements-local.txt; backend: torch trains on MPS without it")
    elif not info["available"]:
        report.error("MLX is installed but sees no Metal GPU",
                     "use macOS 14+ on Apple Silicon in a native arm64 shell, and the mlx from requirements-local.txt")
    elif info["matmul_error"] > 1e-3:
        report.error(f"a matmul through MLX on Metal gave wrong results (relative error {info['matmul_error']:.1e})",
                     "update macOS and reinstall the pinned mlx; until then set backend: torch")
    else:
        working_set = info.get("max_recommended_working_set_size")
        report.ok(f"MLX on Metal: {info.get('device_name') or 'Apple GPU'}"
                  + (f", recommended working set {gb(int(working_set)):.1f} GB (the memory budget)" if working_set
                     else "") + "; matmul test passed")


def recommend(device: str, memory_bytes: int, report: Report) -> None:
    path, note = recommended_config(device, memory_bytes)
    report.ok(f"recommended config: {path}" + (f" ({note})" if note else ""))


def check_gpu(report: Report, env: str = "auto", require_gpu: bool = False) -> str:
    """Check the accelerator `env` expects ("auto": whichever is here); returns the device checked."""
    cuda, mps = config.cuda_available(), config.mps_available()
    if env == "h100" and not cuda:
        report.error("no CUDA GPU found, but the h100 platform needs one",
                     "check `nvidia-smi`; on RunPod start a GPU pod and install the CUDA build of torch")
        return "cpu"
    if env == "m4" and not mps:
        report.error("MPS is not available, but the m4 platform needs the Apple GPU",
                     "use an Apple-Silicon Mac on macOS 14+ with the torch from requirements-local.txt")
        return "cpu"
    if cuda and env != "m4":
        check_cuda_device(report, env)
        return "cuda"
    if mps:
        check_mps_device(report)
        return "mps"
    if require_gpu:
        report.error("no GPU found (neither CUDA nor MPS), and one is required",
                     "run on the RunPod H100 pod or an Apple-Silicon Mac, or drop --require-gpu")
    elif env == "cpu":
        report.ok("no GPU: the cpu platform trains the smoke model on the CPU")
    else:
        report.warning("no GPU found (neither CUDA nor MPS): only the CPU smoke config can train here",
                       f"use {SMOKE_CONFIG} here, or run on the RunPod H100 pod or an Apple-Silicon Mac")
    if not report.errors:
        recommend("cpu", 0, report)
    return "cpu"
