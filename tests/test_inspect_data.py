"""inspect_data.py: the examples as the trainer receives them, with the trained text marked."""

from __future__ import annotations

import json

from conftest import ROOT, load_script

SMOKE = str(ROOT / "configs" / "smoke.yaml")
inspect_data = load_script("inspect_data")


def run(capfd, *args):
    code = inspect_data.main(["--config", SMOKE, *args])
    return code, capfd.readouterr().out


def test_json_gives_text_tokens_trained_tokens_truncated_and_trained_spans_per_example(capfd):
    code, out = run(capfd, "--line", "3", "--json")
    result = json.loads(out)
    assert code == 0 and result["ok"]
    [example] = result["examples"]
    assert {"file", "line", "text", "tokens", "trained_tokens", "truncated", "trained_spans"} <= set(example)
    assert example["line"] == 3 and example["truncated"] is False
    trained = [example["text"][start:end] for start, end in example["trained_spans"]]
    assert trained[0].startswith('<tool_call>{"name": "get_current_weather", "arguments": {"location"')
    assert all(text.endswith("<|im_end|>") for text in trained)
    assert 0 < example["trained_tokens"] < example["tokens"]
    summary = result["summary"]
    assert summary["examples"] == 320 and summary["truncated"] == 0 and summary["untrained_examples"] == []
    assert 0 < summary["trained_share"] < 50 and summary["longest"] > 0


def test_the_terminal_view_marks_the_trained_text_and_ends_with_the_verdict(capfd):
    code, out = run(capfd, "--n", "1")
    assert code == 0
    assert "<|im_start|>assistant\n⟦Good question!" in out and "rumble.<|im_end|>⟧" in out
    assert "loss mask: " in out and out.rstrip().splitlines()[-1].startswith("✅ SUCCESS:")


def test_a_truncated_example_that_trains_nothing_is_shown_and_exits_1(capfd):
    code, out = run(capfd, "--line", "3", "--max_length", "200", "--json")
    result = json.loads(out)
    assert code == 1 and not result["ok"]
    [example] = result["examples"]
    assert example["truncated"] and example["trained_tokens"] == 0 and example["tokens"] == 200
    errors = [f["message"] for f in result["findings"] if f["level"] == "error"]
    assert errors and errors[0].startswith("data/sample/train.jsonl:3: no token carries loss")


def test_a_line_that_is_not_an_example_is_an_error(capfd):
    code, out = run(capfd, "--line", "9999")
    assert code == 1 and "❌ ERROR: data/sample/train.jsonl:9999 is not an example" in out
