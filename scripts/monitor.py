"""A live terminal view of a training run: progress, loss trend, speed, ETA, checkpoints, accelerator.

# Usage: scripts/monitor.py [--output-dir DIR] [--interval SECONDS] [--once] [--plain]

    python scripts/monitor.py --output-dir outputs/weatherman-h100
    python scripts/monitor.py --output-dir outputs/smoke --once --plain

Redraws from DIR/status.json and DIR/events.jsonl every --interval (2) seconds: step/max with a
progress bar, the loss (and eval loss) as a sparkline, learning rate, tokens/s, ETA, the last
checkpoint, recent warnings, and the accelerator's utilisation, memory, temperature and power
(status.json's gpu figures). It only reads, so Ctrl-C quits the view and never the run; it works
over SSH and inside tmux. Without --output-dir it shows the most recently updated run under
outputs/. When stdout is not a terminal (or with --plain) it prints plain text lines, once per
update, and ends when the run does; NO_COLOR turns colour off. --once draws one frame and exits.

Exit codes: 0 shown, 1 input error (no status.json in DIR).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.core import protocol
from trainkit.core.protocol import ExitCode
from trainkit.core.report import CheckerArgumentParser


def newest_run(root: Path) -> Path | None:
    found = sorted(root.glob("*/status.json"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return found[-1].parent if found else None


def follow_plain(output_dir: Path, interval: float, once: bool) -> int:
    from trainkit.supervise.monitor import TERMINAL_STATES, Snapshot, plain_lines

    seen = None
    while True:
        snap = Snapshot.read(output_dir)
        if snap is not None and snap.status.get("updated_at") != seen:
            seen = snap.status.get("updated_at")
            print("\n".join(plain_lines(snap)), flush=True)
        if once or (snap is not None and snap.state in TERMINAL_STATES):
            protocol.success(f"monitor ended: {output_dir.name} is {snap.state if snap else 'unknown'}")
            return ExitCode.OK
        time.sleep(interval)


def follow_live(output_dir: Path, interval: float, once: bool) -> int:
    from rich.console import Console
    from rich.live import Live

    from trainkit.supervise.monitor import Snapshot, render

    console = Console()
    snap = Snapshot.read(output_dir)
    if once:
        console.print(render(snap))
        return ExitCode.OK
    try:
        with Live(render(snap), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval)
                snap = Snapshot.read(output_dir) or snap
                live.update(render(snap))
    except KeyboardInterrupt:
        return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return ExitCode.OK
    parser = CheckerArgumentParser(prog="monitor.py", add_help=False)
    parser.add_argument("--output-dir")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--plain", action="store_true")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir) if args.output_dir else newest_run(Path("outputs"))
    if output_dir is None or not (output_dir / "status.json").is_file():
        protocol.error(f"no status.json in {output_dir or 'any run under outputs/'}",
                       "pass the run's output_dir: --output-dir outputs/<run> (see scripts/runs.py list)")
        return ExitCode.ERROR
    if args.plain or not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return follow_plain(output_dir, args.interval, args.once)
    return follow_live(output_dir, args.interval, args.once)


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
