"""Every run under outputs/, and stopping one cleanly.

# Usage: scripts/runs.py list [--root DIR] [--json]
#        scripts/runs.py stop NAME [--root DIR] [--timeout SECONDS] [--no-wait]

    python scripts/runs.py list
    python scripts/runs.py list --json
    python scripts/runs.py stop weatherman-h100

list: one line per run directory under --root (default outputs/): state, step/max, last
checkpoint, loss, ETA, W&B URL. A run whose status.json says running but whose process is gone
shows as dead. --json prints the same as a JSON list.

stop NAME: sends SIGTERM to the run's supervisor (its whole tmux process group, as Ctrl-C in the
pane would) or to a train.py started by hand; the trainer saves a checkpoint at the end of the
step and exits 75 (interrupted). Waits up to --timeout (600) seconds for it to finish saving;
--no-wait returns once the signal is sent. Re-run the launch command to resume.

Exit codes: 0 listed / stopped, 1 input error (no such run, nothing running on it, or still
running after --timeout).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.core import protocol
from trainkit.core.errors import ConfigError
from trainkit.core.protocol import ExitCode
from trainkit.core.report import CheckerArgumentParser

TAG = "RUNS"


def parse_args(argv):
    parser = CheckerArgumentParser(prog="runs.py", add_help=False)
    parser.add_argument("command", choices=["list", "stop"])
    parser.add_argument("name", nargs="?")
    parser.add_argument("--root", default="outputs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-wait", action="store_true")
    return parser.parse_args(argv)


def show(runs) -> None:
    from trainkit.supervise.monitor import duration

    for run in runs:
        step = f"{run.step if run.step is not None else '?'}/{run.max_steps or '?'}"
        loss = f"{run.loss:.4f}" if isinstance(run.loss, (int, float)) else "-"
        eta = duration(run.eta_seconds) if run.eta_seconds is not None else "-"
        print(f"{run.name:<28} {run.state:<12} step {step:<12} ckpt {run.last_checkpoint or '-':<18} "
              f"loss {loss:<8} ETA {eta:<9} {run.wandb_url or ''}".rstrip())
        if run.config:
            print(f"{'':<28} config {run.config}")


def stop(name: str, root: Path, timeout: float, wait: bool) -> int:
    from trainkit.core.status import STATUS_FILE, read_json
    from trainkit.supervise.runs import live_owner, resolve, send_stop, wait_stopped

    output_dir = resolve(name, root)
    if not output_dir.is_dir():
        protocol.error(f"no run {name} under {root}", "see the names: scripts/runs.py list")
        return ExitCode.ERROR
    owner = live_owner(output_dir)
    if owner is None:
        state = (read_json(output_dir / STATUS_FILE) or {}).get("state", "unknown")
        protocol.error(f"nothing is training on {output_dir} (state {state})", "nothing to stop")
        return ExitCode.ERROR
    try:
        kind, pid = send_stop(owner)
    except ConfigError as exc:
        protocol.error(exc.message, exc.hint)
        return ExitCode.ERROR
    protocol.section(TAG, f"SIGTERM sent to {'process group' if kind == 'group' else 'pid'} {pid}")
    if not wait:
        protocol.success(f"stop requested for {output_dir.name}: it saves a checkpoint and exits 75")
        return ExitCode.OK
    if not wait_stopped(output_dir, timeout):
        protocol.error(f"{output_dir.name} is still running {timeout:g}s after SIGTERM",
                       "a checkpoint save can take minutes on a large model: check again with "
                       "scripts/runs.py list, or wait longer with --timeout")
        return ExitCode.ERROR
    status = read_json(output_dir / STATUS_FILE) or {}
    protocol.success(f"stopped {output_dir.name} at step {status.get('step')} (state {status.get('state')}, "
                     f"last checkpoint {status.get('last_checkpoint')}); re-run the launch command to resume")
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return ExitCode.OK
    args = parse_args(argv)
    root = Path(args.root)
    if args.command == "stop":
        if not args.name:
            protocol.error("runs.py stop needs a run NAME", "see the names: scripts/runs.py list")
            return ExitCode.ERROR
        return stop(args.name, root, args.timeout, not args.no_wait)
    from trainkit.supervise.runs import list_runs

    runs = list_runs(root)
    if args.json:
        print(json.dumps([r.as_dict() for r in runs], indent=2))
        return ExitCode.OK
    show(runs)
    protocol.success(f"{len(runs)} run(s) under {root}")
    return ExitCode.OK


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
