"""The run trains what it was launched with: a copy of the config as read at launch, in the output dir.

People edit their YAML while a run trains (the next experiment, a typo, a `git pull`). A relaunch that
read the live file would see a different run and refuse it, ending an unattended run over an edit meant
for the next one. So each start that trains writes `launch_config.yaml` (the config file's bytes as it
read them) and `launch_config.json` (where they came from, their sha256, the command-line overrides, the
launch id); the supervisor's relaunches and the stall watchdog's restarts within that launch read the
copy (trainkit.supervise.runctl launch-config), never the live file. A user's own re-run reads the live
file, as always: the fingerprint (trainkit.train.fingerprint) refuses a blocking change, with the command
that resumes as launched.

    write(config, overrides)          # rank 0 of each node, once the start may train
    read(output_dir)                  # the record, or None
    relaunch_config(output_dir, launch_id, given)  # the file a relaunch of LAUNCH_ID reads
    changed(record)                   # True / False / None (the source is gone)
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from trainkit.core.status import read_json, write_json_atomic, write_text_atomic

SNAPSHOT_FILE = "launch_config.yaml"
RECORD_FILE = "launch_config.json"
# Command-line keys that act once rather than describe the run: a relaunch gets them from its command line.
ONE_SHOT = ("--more_steps", "--dry-run", "--dry_run")


def sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def is_snapshot(config_path: str | os.PathLike | None, output_dir: Path) -> bool:
    if not config_path:
        return False
    try:
        return Path(config_path).resolve() == (Path(output_dir) / SNAPSHOT_FILE).resolve()
    except OSError:
        return False


def write(config, overrides: list[str]) -> None:
    """Record what this start trains; a start that reads the copy itself (a relaunch) leaves it as it is."""
    local_rank = os.environ.get("LOCAL_RANK", "0")
    if local_rank != "0" or not config.config_path or is_snapshot(config.config_path, config.output_dir):
        return
    source = Path(config.config_path).resolve()
    try:
        data = source.read_bytes()
    except OSError:
        return
    text = data.decode("utf-8", "replace")
    secrets = secret_keys(text)
    if secrets:
        # A credential in the config never lands in the output dir: the copy leaves it out, and a start from the
        # copy takes it from the file it came from (trainkit.config.settings: credentials do not define a run).
        text = without_secrets(text)
    out = config.output_dir
    write_text_atomic(out / SNAPSHOT_FILE, f"# The config {source} as this run was launched with it "
                                           f"({time.strftime('%Y-%m-%d %H:%M:%S')}); relaunches read this copy.\n"
                      + text)
    write_json_atomic(out / RECORD_FILE, {
        "source": str(source),
        "sha256": hashlib.sha256(data).hexdigest(),
        "overrides": [a for a in overrides if a.split("=")[0] not in ONE_SHOT],
        "sources": dict(sorted(config.sources.items())),
        "launch_id": os.environ.get("TRAINKIT_LAUNCH_ID", ""),
        "secrets_from_source": secrets,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def secret_keys(text: str) -> list[str]:
    """The credential keys of a YAML config (top level, or under env:), by name only."""
    import yaml

    from trainkit.core.credentials import is_secret_name

    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    if not isinstance(values, dict):
        return []
    found = [k for k in values if is_secret_name(str(k))]
    env = values.get("env")
    if isinstance(env, dict):
        found += [f"env.{k}" for k in env if is_secret_name(str(k))]
    return found


def without_secrets(text: str) -> str:
    import yaml

    from trainkit.core.credentials import is_secret_name

    values = yaml.safe_load(text)
    kept = {k: v for k, v in values.items() if not is_secret_name(str(k))}
    if isinstance(kept.get("env"), dict):
        kept["env"] = {k: v for k, v in kept["env"].items() if not is_secret_name(str(k))}
    return "# credentials of the launched file are left out of this copy\n" + yaml.safe_dump(kept, sort_keys=False)


def read(output_dir: Path) -> dict | None:
    record = read_json(Path(output_dir) / RECORD_FILE)
    return record if isinstance(record, dict) and (Path(output_dir) / SNAPSHOT_FILE).is_file() else None


def changed(record: dict) -> bool | None:
    """Whether the launched config file differs from it now; None when it is gone."""
    now = sha256_of(Path(record.get("source", "")))
    return None if now is None else now != record.get("sha256")


def file_changed(output_dir: Path, config_path: str | None) -> bool:
    """Whether CONFIG_PATH is another file, or other bytes, than the copy the run was launched with."""
    record = read(output_dir)
    if not record or not config_path or is_snapshot(config_path, output_dir):
        return False
    return sha256_of(Path(config_path)) != record.get("sha256")


def relaunch_config(output_dir: Path, launch_id: str, given: str) -> str:
    """The config a relaunch within LAUNCH_ID reads: the copy its first start made, else GIVEN."""
    record = read(output_dir)
    if record and launch_id and record.get("launch_id") == launch_id:
        return str(Path(output_dir) / SNAPSHOT_FILE)
    return given


def resume_command(output_dir: Path, platform: str, one_shot: list[str]) -> str:
    """The command that resumes the run as launched: train.sh's when a launch started this process."""
    snapshot = Path(output_dir) / SNAPSHOT_FILE
    record = read(output_dir) or {}
    args = " ".join([*record.get("overrides", []), *one_shot])
    if os.environ.get("TRAINKIT_LAUNCH_ID"):
        return f"scripts/train.sh --platform {platform} --config {snapshot}" + (f" -- {args}" if args else "")
    return f"python train.py --config {snapshot}" + (f" {args}" if args else "")


def describe(output_dir: Path) -> str | None:
    """'<source> (unchanged since launch)' / '(changed since launch)' / '(gone)', for the status and runs."""
    record = read(output_dir)
    if not record:
        return None
    state = {True: "changed since launch", False: "unchanged since launch", None: "no longer there"}[changed(record)]
    return f"{record.get('source')} ({state})"
