"""Which card is which, decided once for trainkit/gpu.py and for the bash setup (no torch import).

    python -m trainkit.runctl is-h100-80gb "NVIDIA H100 80GB HBM3" 81559   # exit 0: yes
"""

from __future__ import annotations

GB = 2**30
H100_MIN_GB = 75  # an H100 80GB reports ~79 GB; anything under this is a smaller card


def is_h100_80gb(name: str, total_bytes: int) -> bool:
    return "H100" in name.upper() and total_bytes / GB >= H100_MIN_GB
