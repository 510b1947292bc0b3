"""Check free disk space, and on RunPod that outputs and the HF cache survive a pod stop.

    python scripts/check_storage.py                          # the current directory, 50 GB needed
    python scripts/check_storage.py --platform cpu           # the demo's thresholds: 1 GB, 2 recommended
    python scripts/check_storage.py --path /workspace --min-gb 50 --recommended-gb 100
    python scripts/check_storage.py --output-dir outputs/weatherman-h100

Free space under the required GB is an error, under the recommended GB a warning. Both
come from --platform (trainkit.preflight.storage.PLATFORM_DISK_GB; the default, h100, asks what a
7-8B LoRA run needs on the pod); --min-gb and --recommended-gb override them. GB are 2**30 bytes, as `df -h`
counts. On RunPod (RUNPOD_* set) each --output-dir and the HF cache (HF_HUB_CACHE,
HF_HOME, default ~/.cache/huggingface) outside /workspace is a warning: only the volume
survives a pod stop. Never imports torch. Exit 0 when there is room (warnings allowed),
1 when not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainkit.core.report import CheckerArgumentParser, Report
from trainkit.preflight.storage import PLATFORM_DISK_GB, check_free_space, check_runpod_persistence, disk_thresholds


def gigabytes(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of GB >= 0, not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = CheckerArgumentParser(prog="check_storage.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default=".", help="where training writes (default: the current directory)")
    parser.add_argument("--platform", choices=list(PLATFORM_DISK_GB), default="h100",
                        help="whose required/recommended free GB apply: " + ", ".join(
                            f"{name} {required:g}/{recommended:g}"
                            for name, (required, recommended) in PLATFORM_DISK_GB.items()) + " (default: h100)")
    parser.add_argument("--min-gb", type=gigabytes, default=None,
                        help="free GB required, else an error (default: the platform's)")
    parser.add_argument("--recommended-gb", type=gigabytes, default=None,
                        help="free GB recommended, else a warning (default: the platform's, "
                             "and never below --min-gb)")
    parser.add_argument("--output-dir", action="append", default=[], metavar="DIR",
                        help="a run's output dir to check against the RunPod volume (repeatable)")
    args = parser.parse_args(argv)

    min_gb, recommended_gb = disk_thresholds(args.platform)
    if args.min_gb is not None:
        min_gb = args.min_gb
    if args.recommended_gb is not None:
        recommended_gb = args.recommended_gb
    report = Report("PREFLIGHT")
    free = check_free_space(args.path, report, min_gb, recommended_gb)
    check_runpod_persistence(report, args.output_dir)
    return report.finish(f"storage: {free / 2**30:.1f} GB free on {args.path}")


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
