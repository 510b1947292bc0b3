"""The run's W&B summary for `scripts/check_training_status.sh --wandb`, as one JSON line.

    python -m trainkit.supervise.wandb_summary OUTPUT_DIR

Prints {"path", "state", "url", "summary"} and exits 0; on any failure prints one line that
says why and exits 1 (the status command turns it into a WARNING). The run comes from
status.json's wandb_url, else wandb_run.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainkit.core.status import read_json


def run_path(output_dir: Path) -> str | None:
    url = (read_json(output_dir / "status.json") or {}).get("wandb_url")
    if isinstance(url, str):
        parts = url.split("://", 1)[-1].split("/")
        # https://wandb.ai/ENTITY/PROJECT/runs/RUN_ID
        if len(parts) >= 5 and parts[3] == "runs":
            return f"{parts[1]}/{parts[2]}/{parts[4]}"
    record = read_json(output_dir / "wandb_run.json")
    if isinstance(record, dict) and record.get("project") and record.get("run_id"):
        return f"{record['project']}/{record['run_id']}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = run_path(Path(argv[0]))
    if path is None:
        print("no W&B run recorded (no wandb_url in status.json, no wandb_run.json)")
        return 1
    try:
        import wandb
    except Exception:
        print(f"the wandb package is not importable by {sys.executable}")
        return 1
    try:
        run = wandb.Api(timeout=15).run(path)
        summary = {key: value for key, value in dict(run.summary._json_dict).items()
                   if isinstance(value, (bool, int, float, str))
                   and (not key.startswith("_") or key in ("_step", "_runtime"))}
        print(json.dumps({"path": path, "state": run.state, "url": run.url, "summary": summary}))
    except BaseException as exc:  # the API raises many kinds; the caller turns any into a WARNING
        text = str(exc).strip().splitlines()
        print(f"W&B API query for {path} failed: {exc.__class__.__name__}" + (f": {text[0][:200]}" if text else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
