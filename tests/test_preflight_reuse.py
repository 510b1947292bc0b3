"""A launch right after setup recalls the config preflight that just passed instead of repeating it."""

from __future__ import annotations

import os
import shutil
import time

from conftest import ROOT, load_script
from trainkit.preflight import passed


def validate(capsys, *argv: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = load_script("validate_training_config").main(list(argv))
    return code, capsys.readouterr().out.splitlines()


def smoke_copy(tmp_path, *extra_lines: str):
    config = tmp_path / "smoke.yaml"
    config.write_text((ROOT / "configs/smoke.yaml").read_text() + "".join(f"{line}\n" for line in extra_lines))
    data = tmp_path / "train.jsonl"
    shutil.copy(ROOT / "data/sample/train.jsonl", data)
    return config, data


def test_a_second_check_of_the_same_inputs_prints_one_line_and_the_warnings_of_the_pass(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    config, data = smoke_copy(tmp_path, "lora_alpha: 4")
    args = ("--config", str(config), "--train_file", str(data), "--output_dir", str(tmp_path / "out"),
            "--remember", str(tmp_path / "passes"))
    code, first = validate(capsys, *args)
    assert code == 0 and first[-1] == "✅ SUCCESS: training config is valid"
    warnings = [line for line in first if line.startswith("⚠️ WARNING:")]
    assert warnings and len([line for line in first if line.startswith("[PREFLIGHT]")]) > 8

    code, second = validate(capsys, *args)
    assert code == 0
    assert second[0].startswith("[PREFLIGHT] unchanged since this check passed ")
    # The run's shape stays on screen; the other checks' lines do not repeat.
    shape = [line.split(":")[0] for line in second[1:] if line.startswith("[PREFLIGHT]")]
    assert shape == ["[PREFLIGHT] effective batch", "[PREFLIGHT] memory",
                     "[PREFLIGHT] duration estimate (from FLOPs, not measured)"]
    assert [line for line in second if line.startswith("⚠️ WARNING:")] == warnings
    assert second[-1] == "✅ SUCCESS: training config is valid (unchanged)"


def test_an_edited_config_or_data_file_or_another_flag_checks_everything_again(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    config, data = smoke_copy(tmp_path)
    args = ["--config", str(config), "--train_file", str(data), "--remember", str(tmp_path / "passes")]
    assert validate(capsys, *args)[0] == 0

    later = time.time() + 5
    os.utime(data, (later, later))
    assert validate(capsys, *args)[1][-1] == "✅ SUCCESS: training config is valid"
    config.write_text(config.read_text() + "seed: 7\n")
    assert validate(capsys, *args)[1][-1] == "✅ SUCCESS: training config is valid"
    assert validate(capsys, *args, "--max_steps", "7")[1][-1] == "✅ SUCCESS: training config is valid"
    assert validate(capsys, *args)[1][-1] == "✅ SUCCESS: training config is valid (unchanged)"


def test_a_failed_check_is_never_recalled_and_its_error_comes_again(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    config, data = smoke_copy(tmp_path)
    data.write_text(data.read_text() + '{"messages": []}\n')
    args = ("--config", str(config), "--train_file", str(data), "--remember", str(tmp_path / "passes"))
    for _ in range(2):
        code, out = validate(capsys, *args)
        errors = [line for line in out if line.startswith("❌ ERROR:")]
        assert code == 1 and len(errors) == 1 and "train.jsonl:321" in errors[0]
    assert not list((tmp_path / "passes").glob("*.json"))


def test_a_pass_older_than_an_hour_or_without_its_data_checked_is_not_recalled(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    config, data = smoke_copy(tmp_path)
    args = ["--config", str(config), "--train_file", str(data)]
    folder = tmp_path / "passes"
    assert validate(capsys, *args, "--no-data", "--remember", str(folder))[0] == 0
    assert passed.recalled(folder, args) is None
    assert validate(capsys, *args, "--remember", str(folder))[0] == 0
    assert passed.recalled(folder, args) is not None
    assert passed.recalled(folder, args, now=time.time() + passed.MAX_AGE_SECONDS + 1) is None
