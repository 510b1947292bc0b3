"""deploy/skypilot.yaml: its run block, executed with SkyPilot's environment and stand-ins for conda and
the scripts it calls, hands the supervisor the node's rank, the head node's address and the GPU count."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from conftest import ROOT

TASK = ROOT / "deploy" / "skypilot.yaml"


def stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(0o755)


def run_block(tmp_path: Path, **env) -> list[str]:
    """The task's `run` on node SKYPILOT_NODE_RANK, in a workdir whose supervise.sh records its arguments."""
    task = yaml.safe_load(TASK.read_text())
    work, bin_dir, checkpoints = tmp_path / "work", tmp_path / "bin", tmp_path / "checkpoints"
    stub(work / "scripts" / "supervise.sh", 'printf "%s\\n" "$@" > "$ARGS_FILE"')
    stub(bin_dir / "conda", f'echo "{tmp_path / "conda"}"')
    (tmp_path / "conda" / "bin").mkdir(parents=True)
    (tmp_path / "conda" / "bin" / "activate").write_text("")
    stub(bin_dir / "python", 'echo "python $*" >> "$ARGS_FILE.python"')
    script = task["run"].replace("/checkpoints", str(checkpoints))
    environment = {**os.environ, **task["envs"], "PATH": f"{bin_dir}:{os.environ['PATH']}",
                   "ARGS_FILE": str(tmp_path / "args"), **env}
    subprocess.run(["bash", "-c", script], cwd=work, env=environment, check=True, timeout=30)
    return (tmp_path / "args").read_text().splitlines()


def test_the_skypilot_task_starts_each_node_s_supervisor_with_its_rank_the_head_address_and_its_gpus(tmp_path):
    args = run_block(tmp_path, SKYPILOT_NODE_RANK="1", SKYPILOT_NODE_IPS="10.0.0.7\n10.0.0.8",
                     SKYPILOT_NUM_GPUS_PER_NODE="8", SKYPILOT_NUM_NODES="2")
    assert args == ["--platform", "h100", "--config", "configs/training_config_h100.yaml",
                    "--output-dir", str(tmp_path / "checkpoints" / "run-node1"),
                    "--log", "logs/skypilot_node1.log", "--session", "",
                    "--nproc", "8", "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "10.0.0.7:29500",
                    "--", "--save_on_each_node", "true"]
    assert (tmp_path / "args.python").read_text().startswith("python scripts/validate_training_config.py")


def test_the_skypilot_task_names_only_scripts_and_supervisor_flags_that_exist():
    task = yaml.safe_load(TASK.read_text())
    usage = (ROOT / "scripts" / "supervise.sh").read_text().split("set -euo pipefail")[0]
    for flag in ("--platform", "--config", "--output-dir", "--log", "--session", "--nproc", "--nnodes",
                 "--node-rank", "--rdzv-endpoint"):
        assert flag in task["run"] and flag in usage
    for block in (task["setup"], task["run"]):
        for word in block.split():
            if word.startswith("scripts/"):
                assert (ROOT / word).is_file(), word
    assert task["resources"]["job_recovery"]["max_restarts_on_errors"] == 0
