"""Return a run to an earlier checkpoint: the next start resumes from it.

# Usage: scripts/rollback.py --output-dir DIR (--to-step S | --to-checkpoint NAME)

    python scripts/rollback.py --output-dir outputs/weatherman-h100 --to-step 1500
    python scripts/rollback.py --output-dir outputs/weatherman-h100 --to-checkpoint checkpoint-1500

The checkpoints newer than the target, and final/, move into DIR/rolled_back/<timestamp>/ (never
deleted; move them back by hand to undo). The rollback is recorded in DIR/resume_metadata.json
(the crash-loop counter reset) and DIR/events.jsonl, and status.json says interrupted at step S.
Refused while a trainer runs on DIR: stop it first (scripts/runs.py stop NAME). Then re-run the
same launch command; it resumes from step S. Use it after a divergence (exit 3), or to undo steps
that trained on bad data.

Exit codes: 0 rolled back, 1 input error (no such checkpoint, incomplete checkpoint, a live trainer).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.core import protocol
from trainkit.core.errors import ConfigError
from trainkit.core.protocol import ExitCode
from trainkit.core.report import CheckerArgumentParser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return ExitCode.OK
    parser = CheckerArgumentParser(prog="rollback.py", add_help=False)
    parser.add_argument("--output-dir", required=True)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-step", type=int)
    target.add_argument("--to-checkpoint")
    args = parser.parse_args(argv)
    from trainkit.supervise.rollback import roll_back

    try:
        done = roll_back(Path(args.output_dir), to_step=args.to_step, to_checkpoint=args.to_checkpoint)
    except ConfigError as exc:
        protocol.error(exc.message, exc.hint)
        return ExitCode.ERROR
    if done.moved:
        protocol.section("ROLLBACK", f"moved {', '.join(done.moved)} to {done.into}")
    else:
        protocol.section("ROLLBACK", f"nothing newer than {done.target.path.name}: nothing moved")
    protocol.success(f"rolled back {args.output_dir} to {done.target.path.name}: the next start resumes "
                     f"from step {done.target.step}")
    return ExitCode.OK


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
