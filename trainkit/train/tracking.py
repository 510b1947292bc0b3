"""Weights & Biases: one run per output_dir, continued across crashes and resumes.

The run id is persisted in output_dir/wandb_run.json and handed to the SDK through
WANDB_RUN_ID + WANDB_RESUME=allow, which transformers' WandbCallback passes on.
Without a key the run logs offline (sync later with `wandb sync`), never prompts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from trainkit.core import protocol
from trainkit.core.credentials import wandb_key_present
from trainkit.core.status import is_main_process, read_json, write_json_atomic

RUN_FILE = "wandb_run.json"


def prepare_wandb(output_dir: Path, project: str, report_to: list[str], warn=protocol.warning) -> str | None:
    """Set the environment for a W&B run that resumes; returns the run id, or None when off.

    Only rank 0 records the run id (transformers' WandbCallback logs from rank 0 alone):
    every rank writing its own random id left the file to whichever rank came last.
    """
    if "wandb" not in (report_to or []):
        return None
    record = read_json(output_dir / RUN_FILE) or {}
    run_id = record.get("run_id") or secrets.token_hex(4)
    if not record and is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_dir / RUN_FILE, {"run_id": run_id, "project": project})
    os.environ["WANDB_RUN_ID"] = run_id
    os.environ["WANDB_RESUME"] = "allow"
    os.environ.setdefault("WANDB_PROJECT", project)
    os.environ.setdefault("WANDB_DIR", str(output_dir))
    os.environ.setdefault("WANDB_SILENT", "true")
    if "WANDB_MODE" not in os.environ and not wandb_key_present():
        os.environ["WANDB_MODE"] = "offline"
        warn(
            "no W&B API key found: logging offline",
            f"export WANDB_API_KEY=... (or `wandb login`) to log online; sync this run later with "
            f"`wandb sync {output_dir}/wandb/offline-run-*`",
        )
    return run_id
