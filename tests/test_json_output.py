"""--json means JSON only on stdout, whatever the libraries print: each --json command with W&B offline, whose
import makes transformers print a notice on stdout."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import PYTHON, ROOT, base_env


@pytest.mark.parametrize("command", [
    ["scripts/inspect_data.py", "--config", "configs/smoke.yaml", "--line", "3", "--json"],
    ["scripts/inspect_data.py", "--config", "configs/missing.yaml", "--json"],
    ["scripts/evaluate.py", "--base", "models/tiny-chat", "--base-only", "--data", "data/sample/validation.jsonl",
     "--n", "1", "--max-new-tokens", "4", "--json"],
    ["scripts/runs.py", "list", "--root", "outputs", "--json"],
])
def test_a_json_command_prints_only_json_on_stdout_with_w_and_b_offline(command):
    proc = subprocess.run([PYTHON, *command], cwd=ROOT, env=base_env(WANDB_MODE="offline"), capture_output=True,
                          text=True, timeout=300)
    assert proc.stdout.strip(), proc.stderr[-2000:]
    json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert "[INFO] Running in WANDB offline mode" not in proc.stdout
