"""One reader for chat files: the preflight, the trainer, evaluate.py, inspect_data.py and convert_data.py accept
a BOM, CRLF and trailing blank lines alike, and refuse the same bad line with the same ERROR naming it."""

from __future__ import annotations

import pytest

from conftest import ROOT, run_train
from trainkit.core.errors import DataError
from trainkit.core.report import Report
from trainkit.data.checks import check_chat_file
from trainkit.data.loading import load_chat_data
from trainkit.data.reader import read_chat_file
from trainkit.evaluate.tool_eval import read_conversations

SAMPLE = ROOT / "data" / "sample" / "validation.jsonl"


def exported(tmp_path, name: str, *, bom=False, crlf=False, trailing_blank=False, blank_inside=False):
    """The sample validation file as an export tool might write it."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:6]
    if blank_inside:
        lines.insert(3, "")
    text = ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")
    if trailing_blank:
        text += "\n\n"
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_a_bom_crlf_file_ending_in_blank_lines_reads_the_same_everywhere(tmp_path):
    path = exported(tmp_path, "export.jsonl", bom=True, crlf=True, trailing_blank=True)
    report = Report()
    assert check_chat_file(path, "validation_file", report).examples == 6 and not report.errors
    assert [n for n, _ in read_chat_file(path, "validation_file")] == [1, 2, 3, 4, 5, 6]
    data = load_chat_data(str(SAMPLE), str(path))
    assert len(data["validation"]) == 6
    assert data["validation"][0]["messages"] == load_chat_data(str(SAMPLE), str(SAMPLE))["validation"][0]["messages"]
    assert len(read_conversations(path)) == 6


def test_a_blank_line_between_examples_is_the_same_error_naming_the_line_in_every_reader(tmp_path):
    path = exported(tmp_path, "gap.jsonl", blank_inside=True)
    report = Report()
    check_chat_file(path, "validation_file", report)
    [preflight] = report.errors
    assert preflight.message == f"{path}:4: is blank"
    with pytest.raises(DataError) as trainer:
        load_chat_data(str(SAMPLE), str(path))
    with pytest.raises(DataError) as evaluation:
        read_conversations(path)
    assert trainer.value.message == preflight.message and trainer.value.hint == preflight.hint
    assert evaluation.value.message == preflight.message


def test_train_py_evaluates_a_bom_crlf_validation_file_ending_in_blank_lines(tmp_path):
    path = exported(tmp_path, "export.jsonl", bom=True, crlf=True, trailing_blank=True)
    run = run_train(tmp_path / "out", "--max_steps", "2", "--validation_file", str(path), "--eval_strategy", "steps",
                    "--eval_steps", "2", "--tool_eval_samples", "1", "--tool_eval_max_new_tokens", "4")
    assert run.returncode == 0, run.output[-3000:]
    assert any(line.startswith("[TRAINING-CPU] eval at step 2/2:") for line in run.lines)
