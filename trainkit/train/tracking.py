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


def start_wandb(output_dir: Path, project: str, report_to: list[str], timeout: float, status, warn) -> str | None:
    """Start the run's W&B run before the trainer does (rank 0): online when W&B answers within TIMEOUT, else
    offline under the same run id, with one WARNING and the sync command. Returns the mode, or None when off.

    transformers' WandbCallback then logs into this run (it starts one only when none is live).
    """
    if "wandb" not in (report_to or []) or not is_main_process():
        return None
    import wandb

    from trainkit.core.wandb_reach import probe

    run_id = os.environ.get("WANDB_RUN_ID")
    mode = os.environ.get("WANDB_MODE", "online")
    kwargs = dict(project=os.environ.get("WANDB_PROJECT", project), id=run_id, resume="allow",
                  dir=os.environ.get("WANDB_DIR", str(output_dir)))
    bounded = wandb.Settings(init_timeout=timeout, finish_timeout=timeout, finish_timeout_raises=True)
    reason = None
    if mode not in ("offline", "disabled", "dryrun"):
        reach = probe(timeout)
        if reach.ok:
            try:
                wandb.init(**kwargs, settings=bounded)
                status.update(wandb_mode="online")
                return "online"
            except Exception as exc:  # any refusal or timeout: the run goes on offline
                reason = " ".join(f"{exc.__class__.__name__}: {exc}".split())[:200]
                wandb.teardown()
        else:
            reason = reach.detail
    if mode == "disabled":
        return None
    os.environ["WANDB_MODE"] = "offline"
    try:
        run = wandb.init(**kwargs, mode="offline", settings=wandb.Settings(finish_timeout=timeout,
                                                                           finish_timeout_raises=True))
    except Exception as exc:  # not even offline: training does not need W&B
        detail = " ".join(f"{exc.__class__.__name__}: {exc}".split())[:200]
        warn(f"W&B could not start, even offline ({detail}): training goes on without it",
             "status.json and events.jsonl hold the same figures")
        status.update(wandb_mode="off", wandb_url=None)
        return None
    folder = Path(run.dir).parent
    status.update(wandb_mode="offline", wandb_url=None)
    if reason:
        warn(f"W&B is not answering ({reason}): the run logs offline in {folder} under run id {run_id}",
             f"training goes on; upload it later with: wandb sync {folder} (it continues the same W&B run), "
             "or relaunch once W&B answers: it logs online again under the same id")
        status.event("wandb_offline", reason=reason, path=str(folder), run_id=run_id)
    return "offline"


def finish_wandb(timeout: float, warn) -> None:
    """End the live W&B run within TIMEOUT: a finished run never waits on uploads that cannot complete."""
    import sys

    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None:
        return
    folder = Path(run.dir).parent
    try:
        run.finish()
    except Exception as exc:  # finish_timeout_raises: uploads still pending after the wait
        detail = " ".join(f"{exc.__class__.__name__}: {exc}".split())[:160]
        warn(f"W&B did not finish uploading within {timeout:g} s ({detail}): what did not upload is in {folder}",
             f"upload it with: wandb sync {folder}")
