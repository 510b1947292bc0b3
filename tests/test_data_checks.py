"""Data validation before training: every line, duplicates, and templated token lengths.

The corpus in tests/corpus/data holds one bad file per problem; EXPECTED.json lists the
substrings its single ERROR must contain (file:line where a line applies).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT
from trainkit.core.report import Report
from trainkit.data.checks import check_chat_file, check_duplicates
from trainkit.data.token_checks import check_token_lengths, suggest_max_length
from trainkit.data.training_view import resolve_view

SAMPLE = ROOT / "data" / "sample"
TRAIN, VALIDATION = SAMPLE / "train.jsonl", SAMPLE / "validation.jsonl"
CORPUS = ROOT / "tests" / "corpus" / "data"
EXPECTED = json.loads((CORPUS / "EXPECTED.json").read_text())
SAMPLE_LINES = TRAIN.read_text().splitlines()
TOOL_LINE = json.loads(SAMPLE_LINES[2])  # user asks, assistant calls a tool, tool answers, assistant replies


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ROOT / "models" / "tiny-chat")


def write(tmp_path: Path, *lines, name="data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def checked(path, key="train_file"):
    report = Report()
    return check_chat_file(path, key, report), report


def only_error(report: Report) -> str:
    assert [f.level for f in report.findings] == ["error"], report.findings
    assert report.errors[0].hint, "every error says how to fix it"
    return report.errors[0].message


def chat(*turns, **extra) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns], **extra}


# ---------------------------------------------------------------------------
# Lines


def test_the_sample_data_passes_with_one_ok_line_per_file():
    train, report = checked(TRAIN)
    validation, _ = checked(VALIDATION, "validation_file")
    assert not report.errors and not report.warnings
    assert report.findings[0].message == f"train_file {TRAIN}: 320 examples (144 with tool calls)"
    assert (train.examples, train.with_tool_calls, train.bad_lines, train.valid) == (320, 144, 0, True)
    assert validation.examples == 40 and validation.valid


def test_the_corpus_has_an_expectation_for_every_file_and_at_least_twenty_files():
    files = {p.name for p in CORPUS.glob("*.jsonl")}
    assert files == set(EXPECTED)
    assert len(files) >= 20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_corpus_file_gives_exactly_one_error_naming_the_problem(name):
    summary, report = checked(CORPUS / name)
    message = only_error(report)
    for part in EXPECTED[name]:
        assert part in message
    assert not summary.valid


def test_a_missing_file_is_one_error_naming_the_file_and_the_key(tmp_path):
    _, report = checked(tmp_path / "nope.jsonl", "validation_file")
    assert only_error(report) == f"{tmp_path / 'nope.jsonl'}: validation_file does not exist"


def test_a_directory_is_refused_as_not_a_file(tmp_path):
    _, report = checked(tmp_path)
    assert "is not a file" in only_error(report)


def test_a_tool_result_without_a_preceding_call_names_its_line(tmp_path):
    orphan = chat(("user", "Weather in Oslo?"), ("tool", "{\"temperature\": 3}"), ("assistant", "3 degrees."))
    path = write(tmp_path, *SAMPLE_LINES[:4], orphan)
    _, report = checked(path)
    assert only_error(report).startswith(f"{path}:5: messages[1] (tool) is a tool result with no tool call")


def test_a_tool_result_may_follow_another_tool_result_of_the_same_turn(tmp_path):
    example = json.loads(json.dumps(TOOL_LINE))
    example["messages"].insert(4, dict(example["messages"][3]))
    _, report = checked(write(tmp_path, example))
    assert not report.errors


def test_a_tool_result_after_a_later_user_turn_is_an_orphan(tmp_path):
    example = json.loads(json.dumps(TOOL_LINE))
    example["messages"].append({"role": "user", "content": "And tomorrow?"})
    example["messages"].append(dict(example["messages"][3]))
    _, report = checked(write(tmp_path, SAMPLE_LINES[0], example))
    assert "2: messages[6] (tool) is a tool result with no tool call" in only_error(report)


def test_one_error_names_the_first_bad_line_and_lists_the_others_with_their_reasons(tmp_path):
    path = write(tmp_path, SAMPLE_LINES[0], "{oops", SAMPLE_LINES[1], {"messages": []}, "", SAMPLE_LINES[2])
    summary, report = checked(path)
    message = only_error(report)
    assert message.startswith(f"{path}:2: is not valid JSON")
    assert message.endswith("(and 2 more bad lines: line 4: \"messages\" is an empty list; line 5: is blank)")
    assert (summary.examples, summary.bad_lines) == (3, 3)


def test_one_other_bad_line_is_counted_in_the_singular(tmp_path):
    _, report = checked(write(tmp_path, SAMPLE_LINES[0], "[]", "{}"))
    assert only_error(report).endswith(":2: is a list, not a JSON object (and 1 more bad line: line 3: "
                                       "has no \"messages\" list (keys: none))")


def test_a_blank_line_in_the_middle_is_an_error_but_trailing_blank_lines_are_not(tmp_path):
    _, report = checked(write(tmp_path, SAMPLE_LINES[0], "  ", SAMPLE_LINES[1]))
    assert only_error(report).endswith(":2: is blank")
    _, report = checked(write(tmp_path, SAMPLE_LINES[0], SAMPLE_LINES[1], "", "   "))
    assert not report.errors


def test_a_utf8_byte_order_mark_and_windows_line_endings_are_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(SAMPLE_LINES[:4]).encode() + b"\r\n")
    summary, report = checked(path)
    assert not report.errors and summary.examples == 4


def test_null_keys_as_dataset_exports_write_them_are_accepted(tmp_path):
    example = json.loads(json.dumps(TOOL_LINE))
    for message in example["messages"]:
        message.setdefault("tool_calls", None)
        message.setdefault("name", None)
        message.setdefault("content", None)
    plain = chat(("user", "Hi"), ("assistant", "Hello!"), tools=None)
    plain["messages"][1]["tool_calls"] = []  # an empty list next to text content means no calls
    _, report = checked(write(tmp_path, example, plain))
    assert not report.errors


def test_arguments_and_tools_given_as_json_strings_are_accepted(tmp_path):
    example = json.loads(json.dumps(TOOL_LINE))
    function = example["messages"][2]["tool_calls"][0]["function"]
    function["arguments"] = json.dumps(function["arguments"])
    example["tools"] = json.dumps(example["tools"])
    _, report = checked(write(tmp_path, example))
    assert not report.errors


def test_a_tool_call_without_type_is_accepted_since_templates_read_only_function(tmp_path):
    example = json.loads(json.dumps(TOOL_LINE))
    del example["messages"][2]["tool_calls"][0]["type"]
    _, report = checked(write(tmp_path, example))
    assert not report.errors


def test_extra_keys_on_a_message_are_fine(tmp_path):
    example = chat(("user", "Hi"), ("assistant", "Hello!"))
    example["messages"][1]["weight"] = 1.0
    _, report = checked(write(tmp_path, example))
    assert not report.errors


def test_the_summary_keeps_a_line_number_and_hash_per_valid_example(tmp_path):
    summary, _ = checked(write(tmp_path, SAMPLE_LINES[0], "", SAMPLE_LINES[1], "{oops"))
    assert [line for line, _ in summary.hashes] == [1, 3]
    assert all(isinstance(h, bytes) and len(h) == 16 for _, h in summary.hashes)
    assert (summary.examples, summary.bad_lines, summary.valid) == (2, 2, False)


# ---------------------------------------------------------------------------
# Duplicates


def test_duplicates_within_a_file_are_one_warning_with_the_first_pair_of_lines(tmp_path):
    path = write(tmp_path, SAMPLE_LINES[0], SAMPLE_LINES[1], SAMPLE_LINES[0], SAMPLE_LINES[2], SAMPLE_LINES[1])
    summary, report = checked(path)
    check_duplicates(summary, None, report)
    [warning] = report.warnings
    assert warning.message == (f"{path}: 2 examples are an exact duplicate of an earlier one "
                               "(first: line 3 repeats line 1)")
    assert warning.hint


def test_the_same_example_with_keys_reordered_and_spaced_differently_is_a_duplicate(tmp_path):
    example = json.loads(SAMPLE_LINES[0])
    reordered = {"messages": [{"content": m["content"], "role": m["role"]} for m in example["messages"]]}
    path = write(tmp_path, SAMPLE_LINES[0], json.dumps(reordered, indent=None, separators=(",", ":")))
    summary, report = checked(path)
    check_duplicates(summary, None, report)
    assert "1 example is an exact duplicate" in report.warnings[0].message


def test_validation_examples_also_in_train_are_one_warning_with_the_first_line(tmp_path):
    train, report = checked(TRAIN)
    path = write(tmp_path, chat(("user", "New?"), ("assistant", "Yes.")), SAMPLE_LINES[10], SAMPLE_LINES[20])
    validation, _ = checked(path, "validation_file")
    check_duplicates(train, validation, report)
    [warning] = report.warnings
    assert warning.message == (f"{validation.path}: 2 of 3 validation examples also appear in {TRAIN} "
                               "(first: line 2, train line 11)")
    assert "unseen" in warning.hint


def test_data_without_duplicates_gets_an_ok_line():
    train, report = checked(TRAIN)
    validation, _ = checked(VALIDATION, "validation_file")
    check_duplicates(train, validation, report)
    assert not report.warnings
    assert report.findings[-1].message == "no duplicate examples and no train/validation overlap"


# ---------------------------------------------------------------------------
# Token lengths


def trl_lengths(tokenizer, path) -> list[int]:
    """Token counts the way TRL's SFTTrainer computes them, one example at a time."""
    lengths = []
    for line in Path(path).read_text().splitlines():
        example = json.loads(line)
        ids = tokenizer.apply_chat_template(example["messages"], tools=example.get("tools"), tokenize=True,
                                            return_dict=True)["input_ids"]
        lengths.append(len(ids))
    return lengths


def view_of(tokenizer, max_length, **sft):
    report = Report()
    view = resolve_view(tokenizer, SimpleNamespace(max_length=max_length, **{"assistant_only_loss": True, **sft}),
                        report)
    assert not report.errors, report.errors
    return view


def test_a_tokenizer_without_a_chat_template_is_an_error():
    report = Report()
    resolve_view(SimpleNamespace(chat_template=None, name_or_path="base-model"), SimpleNamespace(max_length=512),
                 report)
    message = only_error(report)
    assert message.startswith("base-model has no chat template")
    assert "chat_template_path" in report.errors[0].hint


def test_examples_longer_than_max_length_are_one_warning_with_a_suggested_value(tokenizer):
    lengths = trl_lengths(tokenizer, TRAIN) + trl_lengths(tokenizer, VALIDATION)
    over, longest = sum(n > 256 for n in lengths), max(lengths)
    report = Report()
    stats = check_token_lengths(view_of(tokenizer, 256), [TRAIN, VALIDATION, None], report)
    [warning] = report.warnings
    assert warning.message.startswith(
        f"{over} of 360 examples are longer than max_length=256 (longest {longest} tokens, ")
    assert warning.message.endswith("); they will be truncated")
    suggested = 64 * -(-longest // 64)
    assert f"set max_length: {suggested}" in warning.hint
    assert (stats.over, stats.longest, stats.suggested_max_length) == (over, longest, suggested)


def test_data_that_fits_gets_an_ok_line_with_the_share_of_tokens_trained(tokenizer):
    report = Report()
    stats = check_token_lengths(view_of(tokenizer, 2048), [TRAIN], report)
    assert not report.warnings and stats.over == 0
    fit = f"token lengths: all 320 examples fit max_length=2048 (longest {stats.longest} tokens)"
    assert report.findings[-1].message == fit
    share = f"{stats.trained:,} of {stats.tokens:,} tokens trained ({100 * stats.trained / stats.tokens:.1f}%)"
    assert report.findings[-2].message.startswith(f"loss mask: {share}, the assistant's turns only")
    assert report.findings[-2].message.endswith(f"; 0 of {stats.turns} assistant turns cut by max_length=2048")
    assert 0 < stats.trained < stats.tokens / 2


def test_an_example_the_template_cannot_render_is_an_error_with_its_line(tokenizer, monkeypatch):
    template = ("{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tool turns') }}{% endif %}"
                "{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}")
    monkeypatch.setattr(tokenizer, "chat_template", template)
    report = Report()
    check_token_lengths(view_of(tokenizer, 512), [TRAIN], report)
    message = only_error(report)
    assert message.startswith(f"{TRAIN}:3: the chat template cannot render this example: ")
    assert "no tool turns" in message and message.endswith("(and 143 more)")


def test_bad_lines_are_left_out_of_the_length_check(tokenizer, tmp_path):
    path = write(tmp_path, SAMPLE_LINES[0], "{oops", {"messages": []}, SAMPLE_LINES[1])
    stats = check_token_lengths(view_of(tokenizer, 2048), [path], Report())
    assert stats.examples == 2


def test_a_long_tail_suggests_the_length_that_fits_99_percent():
    over = sorted([600] * 50 + [2000])  # of 1000 examples, 51 exceed 512; one is far longer than the rest
    value, hint = suggest_max_length(1000, over, 512)
    assert value == 640 and "99%" in hint


def test_a_handful_of_outliers_are_suggested_for_dropping():
    value, hint = suggest_max_length(1000, [900, 3000], 512)
    assert value == 3008 and "outliers" in hint


def test_past_ten_bad_lines_the_rest_are_counted_not_listed(tmp_path):
    path = write(tmp_path, SAMPLE_LINES[0], *(["[]"] * 13))
    message = only_error(checked(path)[1])
    assert message.count("; line ") == 8 and message.endswith("; 3 more not listed)")

