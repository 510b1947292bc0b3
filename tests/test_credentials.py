"""Credentials stay secret: off command lines, out of checkpoints, W&B config, status and logs."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import yaml

from conftest import PYTHON, ROOT, SMOKE, Run, base_env, check_log, read_json
from trainkit.config import settings as config
from trainkit.config.settings import refuse_secret_flags
from trainkit.core import protocol
from trainkit.core.credentials import is_secret_name, redact
from trainkit.core.errors import ConfigError
from trainkit.core.status import EVENTS_FILE, STATUS_FILE, RunStatus

FAKE_HUB_TOKEN = "hf_fakeHubTokenFromConfig8c7d6e"
FAKE_WANDB_KEY = "fake-wandb-key-0123456789abcdef"
PRINTABLE = re.compile(rb"[\x20-\x7e]{4,}")


@pytest.mark.parametrize("name", ["WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MY_SERVICE_TOKEN",
                                  "SOME_API_KEY", "X_SECRET", "DB_PASSWORD", "PASSWORD_FILE_CONTENT", "hub_token"])
def test_credential_names_are_secret(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "WANDB_PROJECT", "WANDB_MODE", "HF_HOME", "HF_HUB_OFFLINE",
                                  "TOKENIZERS_PARALLELISM", "MONKEY", "pad_token", "eos_token", "model_name_or_path"])
def test_ordinary_names_and_text_tokens_are_not_secret(name):
    assert not is_secret_name(name)


def test_redact_names_the_variable_instead_of_its_value_and_leaves_short_and_ordinary_values():
    environ = {"HF_TOKEN": "hf_abcdefgh12345678", "X_SECRET": "short", "HF_HOME": "/home/me/.cache/hf"}
    text = "401 for https://hub/x?token=hf_abcdefgh12345678 (short) in /home/me/.cache/hf"
    assert redact(text, environ) == "401 for https://hub/x?token=<HF_TOKEN> (short) in /home/me/.cache/hf"


def test_tagged_lines_status_and_events_never_carry_a_secret_value(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "fake-service-token-0a1b2c")
    leak = "request to https://svc/?t=fake-service-token-0a1b2c failed"
    protocol.error(leak, "hint with fake-service-token-0a1b2c")
    status = RunStatus(tmp_path)
    status.update(state="failed", message=leak)
    status.event("error", message=leak, details=[leak])
    written = capsys.readouterr().out + (tmp_path / STATUS_FILE).read_text() + (tmp_path / EVENTS_FILE).read_text()
    assert "fake-service-token-0a1b2c" not in written
    assert read_json(tmp_path / STATUS_FILE)["message"] == "request to https://svc/?t=<MY_SERVICE_TOKEN> failed"


@pytest.mark.parametrize("argv", [["--hub_token", FAKE_HUB_TOKEN], [f"--hub_token={FAKE_HUB_TOKEN}"]])
def test_a_hub_token_on_the_command_line_is_refused_without_echoing_it(argv):
    with pytest.raises(ConfigError) as caught:
        refuse_secret_flags(["--max_steps", "2", *argv])
    assert "--hub_token on the command line" in caught.value.message
    assert FAKE_HUB_TOKEN not in caught.value.message + caught.value.hint
    with pytest.raises(ConfigError):
        config.parse(["--config", str(SMOKE), *argv])


def config_with_hub_token(tmp_path):
    values = yaml.safe_load(SMOKE.read_text())
    values.update(hub_token=FAKE_HUB_TOKEN, model_name_or_path=str(ROOT / "models" / "tiny-chat"),
                  train_file=str(ROOT / "data" / "sample" / "train.jsonl"),
                  validation_file=str(ROOT / "data" / "sample" / "validation.jsonl"))
    path = tmp_path / "with_hub_token.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_a_configs_hub_token_becomes_hf_token_and_leaves_the_training_args(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    parsed = config.parse(["--config", str(config_with_hub_token(tmp_path)), "--output_dir", str(tmp_path / "o")])
    assert parsed.sft.hub_token is None
    assert os.environ["HF_TOKEN"] == FAKE_HUB_TOKEN


def train(args: list[str], env: dict, logs) -> Run:
    log = logs / f"train-{time.monotonic_ns()}.log"
    with log.open("w") as fh:
        proc = subprocess.run([PYTHON, "train.py", *args], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                              timeout=300)
    return check_log(Run(proc.returncode, log.read_text(), log))


def test_a_configs_hub_token_is_in_no_file_of_a_run_that_crashed_and_resumed(tmp_path):
    """training_args.bin of every checkpoint (before and after the resume), the W&B run, status/events, the log."""
    cfg = config_with_hub_token(tmp_path)
    out = tmp_path / "run"
    args = ["--config", str(cfg), "--output_dir", str(out), "--max_steps", "4", "--save_steps", "2",
            "--report_to", "wandb"]
    env = base_env(WANDB_API_KEY=FAKE_WANDB_KEY)
    crashed = train(args, base_env(WANDB_API_KEY=FAKE_WANDB_KEY, TRAINKIT_FAULT_CRASH_AT_STEP=3), tmp_path)
    assert crashed.returncode == 70, crashed.output[-2000:]
    resumed = train(args, env, tmp_path)
    assert resumed.returncode == 0, resumed.output[-2000:]
    assert "⚠️ RESUME: Found checkpoint at step 2. Resuming training." in resumed.lines

    bins = sorted(out.glob("**/training_args.bin"))
    assert {p.parent.name for p in bins} >= {"checkpoint-2", "checkpoint-4", "final"}
    for path in bins:
        fields = b"\n".join(PRINTABLE.findall(path.read_bytes()))
        assert b"hub_token" in fields and FAKE_HUB_TOKEN.encode() not in fields, path

    import torch

    assert torch.load(out / "final" / "training_args.bin", weights_only=False).hub_token is None
    wandb_files = [p for p in (out / "wandb").rglob("*") if p.is_file()]
    assert any(b"<HUB_TOKEN>" in p.read_bytes() for p in wandb_files), "the W&B config was not written"
    for path in [*wandb_files, out / "status.json", out / "events.jsonl", out / "resume_metadata.json"]:
        data = path.read_bytes()
        assert FAKE_HUB_TOKEN.encode() not in data and FAKE_WANDB_KEY.encode() not in data, path
    for path in [p for p in out.rglob("*") if p.is_file()]:
        assert FAKE_HUB_TOKEN.encode() not in path.read_bytes(), path
    assert FAKE_HUB_TOKEN not in crashed.output + resumed.output
