"""Return a run to an earlier checkpoint, so that the next start resumes from it.

    moved = roll_back(Path("outputs/weatherman-h100"), to_step=1500)

Nothing is deleted: the checkpoints newer than the target (and final/, which belongs to a later
state) move into OUTPUT_DIR/rolled_back/<timestamp>/. The rollback is recorded in
resume_metadata.json (with the crash-loop counter reset, so the restart from an earlier step is not
taken for a crash) and in events.jsonl; status.json says the run is interrupted at the target step,
which is what it now is: re-run the same command to resume. Refused while a trainer runs on the
directory (trainkit.supervise.runs.live_owner).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from trainkit.core.errors import ConfigError
from trainkit.core.status import EVENTS_FILE, STATUS_FILE, now_iso, read_json, write_json_atomic
from trainkit.train.checkpoints import Checkpoint, checkpoint_dirs, problems
from trainkit.train.resume import METADATA_FILE, read_metadata

ROLLED_BACK_DIR = "rolled_back"
FINAL_DIR = "final"


@dataclass
class Rollback:
    target: Checkpoint
    moved: list[str]
    into: Path | None


def find_target(output_dir: Path, to_step: int | None, to_checkpoint: str | None) -> Checkpoint:
    found = checkpoint_dirs(output_dir)
    name = Path(to_checkpoint).name if to_checkpoint else f"checkpoint-{to_step}"
    target = next((c for c in found if c.path.name == name), None)
    if target is None:
        have = ", ".join(c.path.name for c in reversed(found)) or "none"
        raise ConfigError(f"no {name} in {output_dir} (checkpoints: {have})",
                          "pick one of those: --to-step N or --to-checkpoint checkpoint-N")
    reasons = problems(target)
    if reasons:
        raise ConfigError(f"{name} is not a complete checkpoint: {'; '.join(reasons)}",
                          "roll back to an earlier, complete one")
    return target


def roll_back(output_dir: Path, *, to_step: int | None = None, to_checkpoint: str | None = None) -> Rollback:
    from trainkit.supervise.runs import live_owner

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise ConfigError(f"no run directory {output_dir}", "pass the run's output_dir: --output-dir outputs/<run>")
    owner = live_owner(output_dir)
    if owner:
        where = f"tmux session {owner['session']}, " if owner.get("session") else ""
        raise ConfigError(f"a trainer is running on {output_dir} ({where}pid {owner.get('pid') or '?'}): "
                          "not rolling back",
                          f"stop it first: scripts/runs.py stop {output_dir.name} (it saves a checkpoint)")
    target = find_target(output_dir, to_step, to_checkpoint)
    newer = [c.path for c in checkpoint_dirs(output_dir) if c.step > target.step]
    if (output_dir / FINAL_DIR).exists():
        newer.append(output_dir / FINAL_DIR)
    into = None
    if newer:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        into = output_dir / ROLLED_BACK_DIR / stamp
        into.mkdir(parents=True, exist_ok=False)
        for path in newer:
            shutil.move(str(path), str(into / path.name))
    moved = [p.name for p in newer]
    record(output_dir, target, moved, into)
    return Rollback(target, moved, into)


def record(output_dir: Path, target: Checkpoint, moved: list[str], into: Path | None) -> None:
    entry = {"time": now_iso(), "to_step": target.step, "checkpoint": target.path.name, "moved": moved,
             "into": str(into) if into else None}
    metadata = read_metadata(output_dir) or {}
    metadata.update(last_checkpoint=str(target.path), last_step=target.step, resume_count=0, clean_exit=True,
                    rollbacks=[*metadata.get("rollbacks", []), entry])
    write_json_atomic(output_dir / METADATA_FILE, metadata)
    with (output_dir / EVENTS_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": entry["time"], "event": "rollback", "step": target.step,
                             "path": str(target.path), "moved": moved, "into": entry["into"]}) + "\n")
    status = read_json(output_dir / STATUS_FILE)
    if status is not None:
        status.update(state="interrupted", step=target.step, last_checkpoint=str(target.path), exit_code=None,
                      eta_seconds=None, updated_at=now_iso(),
                      message=f"rolled back to {target.path.name}; re-run the same command to resume from it")
        write_json_atomic(output_dir / STATUS_FILE, status)
