"""The run trains what it was launched with: a config edited mid-run is for the next run, never a reason for a
relaunch to refuse."""

from __future__ import annotations

import json

from conftest import ROOT, Run, base_env, check_log, read_json, train_in_process
from trainkit.supervise import status_report
from trainkit.train import snapshot


def own_config(tmp_path, **changes):
    text = (ROOT / "configs/smoke.yaml").read_text()
    for key, value in changes.items():
        text = "\n".join(f"{key}: {value}" if line.startswith(f"{key}:") else line for line in text.splitlines())
    path = tmp_path / "mine.yaml"
    path.write_text(text + "\n")
    return path


def train(tmp_path, config, *args, out=None) -> Run:
    out = out or tmp_path / "out"
    log = tmp_path / f"run-{len(list(tmp_path.glob('run-*.log')))}.log"
    argv = ["--config", str(config), "--output_dir", str(out), "--report_to", "none", *args]
    code = train_in_process(argv, base_env(), log)
    return check_log(Run(code, log.read_text(), log))


def test_a_start_keeps_the_config_as_launched_and_a_start_from_that_copy_leaves_it_alone(tmp_path, capsys):
    config = own_config(tmp_path)
    out = tmp_path / "out"
    run = train(tmp_path, config, "--max_steps", "4", "--save_steps", "2")
    assert run.returncode == 0, run.output[-2000:]
    copy = out / snapshot.SNAPSHOT_FILE
    assert copy.read_text().endswith(config.read_text())
    record = read_json(out / snapshot.RECORD_FILE)
    assert record["source"] == str(config.resolve())
    assert record["overrides"] == ["--output_dir", str(out), "--report_to", "none", "--max_steps", "4",
                                   "--save_steps", "2"]
    assert record["sources"]["learning_rate"] == f"config {config}"
    assert read_json(out / "status.json")["config_file"] == str(config.resolve())

    config.write_text(config.read_text().replace("learning_rate: 1.0e-3", "learning_rate: 5.0e-4"))
    again = train(tmp_path, copy, "--max_steps", "6", "--save_steps", "2")
    assert again.returncode == 0, again.output[-2000:]
    assert read_json(out / snapshot.RECORD_FILE) == record  # a start from the copy does not rewrite it
    assert snapshot.describe(out) == f"{config.resolve()} (changed since launch)"
    # The status command names the launched file, and that it changed since.
    status_report.render(out, status_report.Facts(session="none", log=""), as_json=False)
    assert (f"[STATUS] config: {config.resolve()} (changed since launch); relaunches read "
            f"{out / snapshot.SNAPSHOT_FILE}") in capsys.readouterr().out


def test_a_users_rerun_after_a_blocking_edit_is_refused_with_the_command_that_resumes_as_launched(tmp_path):
    config = own_config(tmp_path)
    out = tmp_path / "out"
    assert train(tmp_path, config, "--max_steps", "4", "--save_steps", "2").returncode == 0
    config.write_text(config.read_text().replace("learning_rate: 1.0e-3", "learning_rate: 5.0e-4"))
    refused = train(tmp_path, config, "--max_steps", "6", "--save_steps", "2")
    assert refused.returncode == 1
    assert refused.verdict == (f"❌ ERROR: {out} holds a run launched with another config ({config} changed since, "
                               "or a different one): learning_rate: 0.001 -> 0.0005")
    hint = refused.output.splitlines()[-1]
    resume = f"python train.py --config {out / snapshot.SNAPSHOT_FILE} --output_dir {out} --report_to none"
    assert f"resume the run as it was launched: {resume} --max_steps 4 --save_steps 2; " in hint
    assert hint.endswith("or train the edited config into a new output_dir: --output_dir outputs/<new-name>")

    # The command it gives works, with the longer run asked for (a safe change, applied with a WARNING).
    resumed = train(tmp_path, out / snapshot.SNAPSHOT_FILE, "--max_steps", "6", "--save_steps", "2")
    assert resumed.returncode == 0, resumed.output[-2000:]
    assert "⚠️ WARNING: continuing" in resumed.output and "max_steps: 4 -> 6" in resumed.output


def test_a_safe_edit_is_applied_with_a_warning_and_becomes_the_launched_config(tmp_path):
    config = own_config(tmp_path)
    out = tmp_path / "out"
    assert train(tmp_path, config, "--max_steps", "4").returncode == 0
    config.write_text(config.read_text().replace("save_steps: 10", "save_steps: 3"))
    run = train(tmp_path, config, "--max_steps", "6")
    assert run.returncode == 0, run.output[-2000:]
    assert "⚠️ WARNING: continuing" in run.output and "save_steps: 10 -> 3" in run.output
    assert "save_steps: 3" in (out / snapshot.SNAPSHOT_FILE).read_text()
    assert snapshot.describe(out) == f"{config.resolve()} (unchanged since launch)"


def test_a_relaunch_reads_the_copy_only_within_the_launch_that_made_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert snapshot.relaunch_config(out, "launch-1", "configs/mine.yaml") == "configs/mine.yaml"
    (out / snapshot.SNAPSHOT_FILE).write_text("seed: 1\n")
    (out / snapshot.RECORD_FILE).write_text(json.dumps({"source": "/x/mine.yaml", "launch_id": "launch-1"}))
    assert snapshot.relaunch_config(out, "launch-1", "configs/mine.yaml") == str(out / snapshot.SNAPSHOT_FILE)
    assert snapshot.relaunch_config(out, "launch-2", "configs/mine.yaml") == "configs/mine.yaml"
    assert snapshot.describe(out) == "/x/mine.yaml (no longer there)"


def test_the_copy_holds_no_credential_and_a_start_from_it_takes_them_from_the_launched_file(tmp_path, monkeypatch):
    from trainkit.config import settings

    token = "hf_fakeSnapshotToken1234"
    config = own_config(tmp_path)
    config.write_text(config.read_text() + f"hub_token: {token}\nenv:\n  MY_SERVICE_TOKEN: tok-4321\n  FOO: bar\n")
    out = tmp_path / "out"
    assert train(tmp_path, config, "--max_steps", "2").returncode == 0
    copy = (out / snapshot.SNAPSHOT_FILE).read_text()
    assert token not in copy and "tok-4321" not in copy and "FOO: bar" in copy
    assert read_json(out / snapshot.RECORD_FILE)["secrets_from_source"] == ["hub_token", "env.MY_SERVICE_TOKEN"]
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("MY_SERVICE_TOKEN", raising=False)
    monkeypatch.setenv("FOO", "before")  # parse exports env: keys; monkeypatch puts them back
    settings.parse(["--config", str(out / snapshot.SNAPSHOT_FILE), "--output_dir", str(out)])
    import os

    assert os.environ["HF_TOKEN"] == token and os.environ["MY_SERVICE_TOKEN"] == "tok-4321"
