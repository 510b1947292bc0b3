"""`make demo` trains into outputs/smoke, and deletes only a run the demo itself made there.

    python -m trainkit.supervise.demo prepare outputs/smoke   # before the demo trains
    python -m trainkit.supervise.demo finish outputs/smoke    # after the demo's run completed

The demo marks its run with OUTPUT_DIR/.trainkit-demo, touched once more when the run has
completed. `prepare` then decides, for what is in OUTPUT_DIR:

- nothing: the directory is made and marked;
- a trainer that is alive: left alone (train.sh refuses to start a second one);
- the demo's own completed run, untouched since (no file newer than the marker): removed,
  and the directory made afresh;
- anything else — a run the user trained there, or the demo's run trained further: moved
  to OUTPUT_DIR.kept-<time> with a WARNING naming it, never deleted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from trainkit.core import protocol
from trainkit.core.lock import LOCK_FILE

MARKER = ".trainkit-demo"
LOCK = LOCK_FILE
TAG = "DEMO"


def lock_owner_alive(output_dir: Path) -> bool:
    """Whether a live process holds the run's lock."""
    from trainkit.core.lock import owner

    return owner(output_dir) is not None


def newer_than_marker(output_dir: Path) -> list[Path]:
    """Files under output_dir written after the demo's marker (all of them when there is no marker)."""
    marker = output_dir / MARKER
    since = marker.stat().st_mtime if marker.is_file() else float("-inf")
    return [p for p in output_dir.rglob("*") if p != marker and p.is_file() and p.stat().st_mtime > since]


def kept_name(output_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d_%H%M%S")
    candidate, n = output_dir.with_name(f"{output_dir.name}.kept-{stamp}"), 1
    while candidate.exists():
        candidate, n = output_dir.with_name(f"{output_dir.name}.kept-{stamp}-{n}"), n + 1
    return candidate


def prepare(output_dir: Path) -> str:
    """Make output_dir ready for the demo; returns what was done: fresh, alive, removed or kept."""
    if output_dir.exists() and lock_owner_alive(output_dir):
        protocol.section(TAG, f"a trainer is alive in {output_dir}: left as it is")
        return "alive"
    action = "fresh"
    if output_dir.exists() and any(output_dir.iterdir()):
        if (output_dir / MARKER).is_file() and not newer_than_marker(output_dir):
            shutil.rmtree(output_dir)
            protocol.section(TAG, f"removed the previous demo run in {output_dir}")
            action = "removed"
        else:
            kept = kept_name(output_dir)
            output_dir.rename(kept)
            protocol.warning(f"{output_dir} holds a run make demo did not make (or one trained further): "
                             f"kept it as {kept}",
                             f"nothing was deleted; move it back with `mv {kept} {output_dir}` when the demo is done")
            action = "kept"
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / MARKER).touch()
    return action


def finish(output_dir: Path) -> None:
    """Mark the demo's completed run as the demo's, as it stands now."""
    if output_dir.is_dir():
        (output_dir / MARKER).touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainkit.supervise.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["prepare", "finish"])
    parser.add_argument("output_dir", type=Path)
    args = parser.parse_args(argv)
    prepare(args.output_dir) if args.action == "prepare" else finish(args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
