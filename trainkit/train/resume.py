"""resume_metadata.json and the crash-loop verdict.

Every start records the step it resumes from. Starting again from the same step
after an unclean exit means the last attempt made no checkpointed progress; after
`crash_loop_limit` such starts we stop (exit 2) instead of burning GPU hours. A
clean exit (finished, or interrupted after saving) is not a crash and resets the count.
Under torchrun rank 0 hears a peer's crash as a SIGTERM and exits as if stopped; the
supervisor then records the group's crash here (`record_crash`), so the count still sees it.
"""

from __future__ import annotations

from pathlib import Path

from trainkit.core.errors import CrashLoop
from trainkit.core.status import now_iso, read_json, write_json_atomic

METADATA_FILE = "resume_metadata.json"


def read_metadata(output_dir: Path) -> dict | None:
    return read_json(output_dir / METADATA_FILE)


def record_start(output_dir: Path, step: int, checkpoint: Path | None) -> dict:
    """Count this start: one more if it resumes from the step the last unclean start did."""
    previous = read_metadata(output_dir) or {}
    same_step = previous.get("last_step") == step and not previous.get("clean_exit", False)
    metadata = {
        **previous,  # what others recorded (rollbacks, a --more_steps continuation) stays
        "last_checkpoint": str(checkpoint) if checkpoint else None,
        "last_step": step,
        "resume_count": previous.get("resume_count", 0) + 1 if same_step else 0,
        "last_resume_time": now_iso(),
        "clean_exit": False,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / METADATA_FILE, metadata)
    return metadata


def check_crash_loop(output_dir: Path, metadata: dict, limit: int) -> None:
    """Raise CrashLoop when this is the limit-th start without progress."""
    count, step = metadata["resume_count"], metadata["last_step"]
    if count >= limit:
        where = f"step {step}" if step else "the start (no checkpoint yet)"
        raise CrashLoop(
            f"Crash loop detected: resumed {count} times from {where} without progress",
            f"read the traceback in the log, fix the cause, then delete {output_dir / METADATA_FILE} and re-run",
        )


def record_clean_exit(output_dir: Path) -> None:
    metadata = read_metadata(output_dir)
    if metadata is not None:
        metadata["clean_exit"] = True
        write_json_atomic(output_dir / METADATA_FILE, metadata)


def record_crash(output_dir: Path) -> None:
    """The last start ended in a crash, whatever its own process made of it (see the module docstring)."""
    metadata = read_metadata(output_dir)
    if metadata is not None and metadata.get("clean_exit"):
        metadata["clean_exit"] = False
        write_json_atomic(output_dir / METADATA_FILE, metadata)
