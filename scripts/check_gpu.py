"""Check the accelerator: what it is, that it computes correctly, and what it can train.

    python scripts/check_gpu.py                  # whatever is here; no GPU is a warning
    python scripts/check_gpu.py --env h100       # needs CUDA; warns unless an H100 80GB
    python scripts/check_gpu.py --env m4         # needs MPS
    python scripts/check_gpu.py --require-gpu    # any GPU, else an error

CUDA: name, memory, compute capability and a 512x512 matmul checked against float64.
MPS: chip, unified memory and the same matmul. Memory is graded INSUFFICIENT (< 20 GB,
an error), LOW (20-24 GB, a warning), ADEQUATE (24-70 GB) or EXCELLENT (>= 70 GB), and
the shipped config for it is recommended. GB are 2**30 bytes, as nvidia-smi counts.
Exit 0 when usable (warnings allowed), 1 on any error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainkit.core.report import CheckerArgumentParser, Report
from trainkit.preflight.environment import PLATFORMS
from trainkit.preflight.gpu import check_gpu

VERDICT = {"cuda": "CUDA GPU ready", "mps": "Apple GPU (MPS) ready", "cpu": "CPU checked (no GPU)"}


def main(argv: list[str] | None = None) -> int:
    parser = CheckerArgumentParser(prog="check_gpu.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=[*PLATFORMS, "auto"], default="auto",
                        help="platform whose accelerator is required: h100 needs CUDA, m4 needs MPS (default: auto)")
    parser.add_argument("--require-gpu", action="store_true", help="fail when there is no GPU at all")
    args = parser.parse_args(argv)

    report = Report("PREFLIGHT")
    device = check_gpu(report, env=args.env, require_gpu=args.require_gpu)
    return report.finish(VERDICT[device])


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
