"""Which card is which, decided once for trainkit/preflight/gpu.py and for the bash setup (no torch import).

    python -m trainkit.supervise.runctl is-h100-80gb "NVIDIA H100 80GB HBM3" 81559   # exit 0: yes
"""

from __future__ import annotations

GB = 2**30
H100_MIN_GB = 75  # an H100 80GB reports ~79 GB; anything under this is a smaller card


def is_h100_80gb(name: str, total_bytes: int) -> bool:
    return "H100" in name.upper() and total_bytes / GB >= H100_MIN_GB


def visible_gpu_count() -> int:
    """How many CUDA GPUs this process may use: nvidia-smi's list, narrowed by CUDA_VISIBLE_DEVICES;
    0 without a working nvidia-smi. No torch import: the launch asks before anything heavy."""
    import os
    import subprocess

    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    count = sum(1 for line in listed.splitlines() if line.startswith("GPU "))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [e for e in visible.split(",") if e.strip()]
        # CUDA stops at the first invalid entry (such as -1).
        valid = 0
        for entry in entries:
            if entry.strip().startswith("-"):
                break
            valid += 1
        count = min(count, valid)
    return count
