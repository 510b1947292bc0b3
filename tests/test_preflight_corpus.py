"""Every bad input in tests/corpus fails fast, the same way, in the validator and in train.py.

The bar for each: exit 1, exactly one ❌ ERROR line and it is the last tagged line, it
names the problem (file:line for data), a ↳ hint follows it, no traceback, and nothing
is written to output_dir. Both commands run in-process through their main(), so the
seventy-odd cases cost one import of the libraries; test_train_smoke.py runs a few of
the same failures as real subprocesses.
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, TAGGED, load_script
from trainkit.core import signals
from trainkit.preflight import environment
from trainkit.train import run

CORPUS = ROOT / "tests" / "corpus"
CONFIG_CASES = json.loads((CORPUS / "configs" / "EXPECTED.json").read_text())
DATA_CASES = json.loads((CORPUS / "data" / "EXPECTED.json").read_text())
SMOKE = ROOT / "configs" / "smoke.yaml"


VALIDATOR = load_script("validate_training_config").main


@pytest.fixture(autouse=True)
def offline_machine(monkeypatch):
    """No HF token, no signal handlers left behind in the test process."""
    monkeypatch.setattr(environment, "hf_token_present", lambda: False)
    monkeypatch.setattr(signals.StopRequest, "install", lambda self: None)
    monkeypatch.chdir(ROOT)


def run_in_process(command, argv, capfd):
    code = command(argv)
    out, err = capfd.readouterr()
    return int(code), out, err


def assert_fails_cleanly(code, out, err, expected, output_dir):
    lines = out.splitlines()
    tagged = [line for line in lines if TAGGED.match(line)]
    errors = [line for line in lines if line.startswith("❌ ERROR:")]
    assert code == 1, out + err
    assert len(errors) == 1 and errors[0] == tagged[-1], out
    for part in expected:
        assert part in errors[0], f"{part!r} not in {errors[0]!r}"
    following = lines[lines.index(errors[0]) + 1:]
    assert following and following[0].startswith("  ↳ "), "every ERROR says what to do next"
    assert "Traceback" not in out + err
    assert not output_dir.exists(), "a refused run writes nothing"


COMMANDS = {"validate_training_config.py": VALIDATOR, "train.py": run.main}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_bad_config_is_refused_before_training(case, command, capfd, tmp_path):
    out_dir = tmp_path / "out"
    argv = ["--config", str(CORPUS / "configs" / case), "--output_dir", str(out_dir)]
    assert_fails_cleanly(*run_in_process(COMMANDS[command], argv, capfd), CONFIG_CASES[case], out_dir)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_a_bad_data_file_is_refused_with_its_line(case, command, capfd, tmp_path):
    out_dir = tmp_path / "out"
    argv = ["--config", str(SMOKE), "--output_dir", str(out_dir), "--report_to", "none",
            "--train_file", str(CORPUS / "data" / case)]
    assert_fails_cleanly(*run_in_process(COMMANDS[command], argv, capfd), DATA_CASES[case], out_dir)


def test_the_corpus_holds_at_least_thirty_distinct_bad_inputs():
    files = [p for p in (CORPUS / "configs").iterdir() if p.suffix == ".yaml"]
    files += [p for p in (CORPUS / "data").iterdir() if p.suffix == ".jsonl"]
    assert len(files) >= 30
    assert sorted(p.name for p in files) == sorted([*CONFIG_CASES, *DATA_CASES])
    assert len({p.read_bytes() for p in files}) == len(files)
