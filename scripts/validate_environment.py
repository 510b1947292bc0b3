"""Check that this machine can run trainkit: Python, pinned packages, accelerator, credentials.

    python scripts/validate_environment.py --env=h100     # RunPod pod: CUDA >= 12.1, flash-attn
    python scripts/validate_environment.py --env=m4       # Apple Silicon: MPS
    python scripts/validate_environment.py --env=cpu      # anywhere: packages and credentials only

Checks Python >= 3.10; torch, transformers, peft, trl, accelerate, datasets and wandb
against the pins in requirements-local.txt (a different version warns, a missing one
fails); for h100 CUDA >= 12.1 and flash-attn (else SDPA, a warning); for m4 MPS and
PYTORCH_ENABLE_MPS_FALLBACK=1; a W&B key and a Hugging Face token (warnings: offline
logging, public models only). Secrets are never printed. Exit 0 when ready (warnings
allowed), 1 on any error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainkit.config import settings as config
from trainkit.core.report import CheckerArgumentParser, Report
from trainkit.preflight.environment import PLATFORMS, REQUIREMENTS, validate_environment


def main(argv: list[str] | None = None) -> int:
    parser = CheckerArgumentParser(prog="validate_environment.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=[*PLATFORMS, "auto"], default="auto",
                        help="platform to check for; auto picks it from the device (default: auto)")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS,
                        help="requirements file holding the version pins (default: requirements-local.txt)")
    args = parser.parse_args(argv)

    env = config.PLATFORM_OF_DEVICE[config.detect_device()] if args.env == "auto" else args.env
    report = Report("PREFLIGHT")
    validate_environment(env, report, args.requirements)
    return report.finish(f"environment ready for {env}")


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
