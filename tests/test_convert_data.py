"""convert_data.py: ShareGPT (glaive/LLaMA-Factory), Alpaca and OpenAI data into trainkit's messages format.

tests/corpus/convert holds one small file per format (rows taken from LLaMA-Factory's demo
data and OpenAI's fine-tuning format, with the nulls exports write) and, next to each, the
expected output.
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, load_script
from trainkit.core.report import Report
from trainkit.data.checks import check_chat_file, convert_command
from trainkit.data.convert import detect

CORPUS = ROOT / "tests" / "corpus" / "convert"
CASES = {  # input file: (detected format, skipped lines)
    "sharegpt_glaive_toolcall.jsonl": ("sharegpt", [4]),
    "alpaca.jsonl": ("alpaca", []),
    "openai_functions.jsonl": ("openai-functions", []),
    "openai_string_arguments.jsonl": ("openai", [3]),
}
convert_data = load_script("convert_data")


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_format_converts_to_the_expected_messages_and_round_trips(name, tmp_path, capfd):
    fmt, skipped = CASES[name]
    source, target = CORPUS / name, tmp_path / name
    assert detect(rows(source)[0]) == fmt
    assert convert_data.main([str(source), str(target)]) == 0
    out = capfd.readouterr().out
    expected = rows(CORPUS / name.replace(".jsonl", ".expected.jsonl"))
    assert rows(target) == expected
    assert f"({fmt}) -> {target}: {len(expected)} converted, {len(skipped)} skipped" in out
    # the output is data trainkit accepts as it is ...
    report = Report()
    assert check_chat_file(target, "train_file", report).examples == len(expected) and not report.errors
    # ... and converting it again changes nothing
    again = tmp_path / "again.jsonl"
    assert convert_data.main([str(target), str(again)]) == 0
    assert rows(again) == expected


@pytest.mark.parametrize("name", [n for n, (_, skipped) in CASES.items() if skipped])
def test_a_line_that_cannot_be_converted_is_named_counted_and_kept_aside(name, tmp_path, capfd):
    _, skipped = CASES[name]
    target = tmp_path / "out.jsonl"
    convert_data.main([str(CORPUS / name), str(target)])
    out = capfd.readouterr().out
    for line in skipped:
        assert f"{CORPUS / name}:{line}: skipped: " in out
    assert f"⚠️ WARNING: {CORPUS / name}: {len(skipped)} of " in out
    aside = rows(tmp_path / "out.jsonl.skipped.jsonl")
    assert [r["line"] for r in aside] == skipped and all(r["reason"] and r["raw"] for r in aside)


def test_tool_arguments_and_tools_strings_become_objects():
    converted = rows(CORPUS / "sharegpt_glaive_toolcall.expected.jsonl")[2]
    call = converted["messages"][2]["tool_calls"][0]["function"]
    assert call == {"name": "calculate_discount", "arguments": {"original_price": 200, "discount_percentage": 20}}
    assert converted["tools"][0]["type"] == "function" and converted["tools"][0]["function"]["name"]
    assert converted["id"] == "sg-3", "keys the format does not use are kept"


def test_a_forced_format_that_does_not_match_skips_every_line_and_is_an_error(tmp_path, capfd):
    code = convert_data.main([str(CORPUS / "alpaca.jsonl"), str(tmp_path / "o.jsonl"), "--from", "sharegpt"])
    out = capfd.readouterr().out
    assert code == 1 and "alpaca.jsonl:1: skipped: is not sharegpt data (keys: input, instruction, output)" in out
    assert out.rstrip().splitlines()[-2].startswith("❌ ERROR: ")


def test_unknown_data_is_one_error_naming_the_formats(tmp_path, capfd):
    source = tmp_path / "x.jsonl"
    source.write_text('{"question": "q", "answer": "a"}\n')
    assert convert_data.main([str(source), str(tmp_path / "o.jsonl")]) == 1
    assert "pass --from with one of sharegpt, alpaca, openai-functions, openai" in capfd.readouterr().out


@pytest.mark.parametrize("name,fmt", [("sharegpt_glaive_toolcall.jsonl", "sharegpt"), ("alpaca.jsonl", "alpaca"),
                                      ("openai_functions.jsonl", "openai-functions")])
def test_the_validator_names_the_exact_convert_command_for_a_foreign_format(name, fmt, tmp_path):
    report = Report()
    check_chat_file(CORPUS / name, "train_file", report)
    [error] = report.errors
    assert convert_command(CORPUS / name, fmt) in error.hint


def test_a_json_array_as_llama_factory_ships_its_demo_data_converts_like_its_lines(tmp_path, capfd):
    name = "sharegpt_glaive_toolcall.jsonl"
    array = tmp_path / "glaive_toolcall_demo.json"
    array.write_text(json.dumps(rows(CORPUS / name), indent=2))
    assert convert_data.main([str(array), str(tmp_path / "out.jsonl")]) == 0
    assert rows(tmp_path / "out.jsonl") == rows(CORPUS / name.replace(".jsonl", ".expected.jsonl"))
    assert f"{array}:4: skipped: " in capfd.readouterr().out, "an array's examples are numbered by position"


@pytest.mark.parametrize("shape", ["parquet", "csv", "saved"])
def test_parquet_csv_and_a_saved_dataset_convert_through_datasets(shape, tmp_path, capfd):
    import datasets

    # As a Hub dataset's files hold it: the schema of every row (CSV: the flat columns only).
    flat = shape == "csv"
    lines = [r for r in rows(CORPUS / "alpaca.jsonl") if not flat or not ({"history", "system"} & set(r))]
    expected = rows(CORPUS / "alpaca.expected.jsonl")[:len(lines)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    table = datasets.load_dataset("json", data_files=str(tmp_path / "rows.jsonl"), split="train",
                                  cache_dir=str(tmp_path / "cache"))
    source = tmp_path / {"parquet": "train.parquet", "csv": "train.csv", "saved": "saved"}[shape]
    {"parquet": table.to_parquet, "csv": table.to_csv, "saved": table.save_to_disk}[shape](str(source))
    assert convert_data.main([str(source), str(tmp_path / "out.jsonl")]) == 0, capfd.readouterr().out
    assert rows(tmp_path / "out.jsonl") == expected


def test_a_conversion_with_nothing_converted_leaves_no_output_behind(tmp_path, capfd):
    target = tmp_path / "o.jsonl"
    assert convert_data.main([str(CORPUS / "alpaca.jsonl"), str(target), "--from", "sharegpt"]) == 1
    assert not target.exists() and not (tmp_path / "o.jsonl.partial").exists()


@pytest.mark.parametrize("kind", ["json-array", "parquet"])
def test_a_train_file_as_a_json_array_or_parquet_is_refused_with_the_convert_command_that_makes_it_train(
        kind, tmp_path, capsys):
    import pandas as pd

    from trainkit.data.checks import whole_file_problem

    rows = [json.loads(line) for line in (ROOT / "data/sample/train.jsonl").read_text().splitlines()]
    path = tmp_path / ("train.json" if kind == "json-array" else "train.parquet")
    if kind == "json-array":
        path.write_text(json.dumps(rows))
    else:
        pd.DataFrame({"messages": [r["messages"] for r in rows], "tools": [r.get("tools") for r in rows]}) \
            .to_parquet(path)
    what, hint = whole_file_problem(path, "train_file")
    assert what in ("is a JSON array, not JSON Lines", "is a Parquet file")
    command = hint.split("python scripts/convert_data.py ")[1].split(", and point")[0].split()
    assert convert_data.main(command) == 0
    report = Report("PREFLIGHT")
    check_chat_file(tmp_path / command[1], "train_file", report)
    assert not report.errors, report.errors
    assert hint.endswith(f"point train_file at {tmp_path / command[1]}")
