"""What the trainer trains on: arguments as objects, loss on the assistant only, and a preflight that agrees.

These build TRL's SFTTrainer in-process on the tiny model (no training step) and read the
tokens it prepared (`trainer.train_dataset`), so they check what trains, not a re-render.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, load_script
from trainkit.core.report import Report
from trainkit.data.training_view import load_view, tokenized_file

TRL_TEMPLATES = Path(__import__("trl").__file__).parent / "chat_templates"
QWEN25 = TRL_TEMPLATES / "qwen2_5.jinja"
SAMPLE = ROOT / "data" / "sample" / "train.jsonl"
# OpenAI fine-tuning format as the cookbook writes it: arguments as a JSON string, content null.
OPENAI_ROWS = [
    {"messages": [
        {"role": "system", "content": "You are a drone pilot assistant."},
        {"role": "user", "content": "Take off to 100 meters."},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "takeoff_drone", "arguments": "{\"altitude\": 100}"}}]},
    ]},
    {"messages": [
        {"role": "user", "content": "Forecast for Oslo, three days?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_2", "type": "function", "function": {
            "name": "get_forecast", "arguments": "{\"location\": \"Oslo, Norway\", \"days\": 3}"}}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "{\"high\": 4}"},
        {"role": "assistant", "content": "Chilly: highs of 4°C."},
    ]},
]


def config_for(tmp_path, *args):
    from trainkit.config.settings import parse

    return parse(["--config", str(ROOT / "configs" / "smoke.yaml"), "--output_dir", str(tmp_path / "out"),
                  "--report_to", "none", "--validation_file", "", *args])


def trainer_for(config):
    from trainkit.data.loading import load_chat_data
    from trainkit.train.faults import Faults
    from trainkit.train.trainer import build_trainer

    return build_trainer(config, load_chat_data(config.trainkit.train_file, None), [], Faults())


def write_rows(tmp_path, rows) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def trained_runs(row, tokenizer) -> list[str]:
    """The decoded text of each run of tokens that carry loss."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != -100:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    return [tokenizer.decode(run) for run in runs]


@pytest.fixture(scope="module")
def sample_trainer(tmp_path_factory):
    config = config_for(tmp_path_factory.mktemp("sample"), "--train_file", str(SAMPLE))
    return config, trainer_for(config)


def test_string_arguments_train_as_objects_on_the_tokens_the_trainer_gets(tmp_path):
    config = config_for(tmp_path, "--train_file", str(write_rows(tmp_path, OPENAI_ROWS)))
    trainer = trainer_for(config)
    texts = [trainer.processing_class.decode(row["input_ids"]) for row in trainer.train_dataset]
    assert '{"name": "takeoff_drone", "arguments": {"altitude": 100}}' in texts[0]
    assert '{"name": "get_forecast", "arguments": {"location": "Oslo, Norway", "days": 3}}' in texts[1]
    assert not any('"arguments": "' in text for text in texts)
    # the keys of one row's arguments do not leak into the other's (no null-filled union struct)
    assert "days" not in texts[0] and "altitude" not in texts[1] and "null" not in "".join(texts)


def test_assistant_only_masking_trains_only_assistant_tokens_and_nothing_of_system_user_or_tool_turns(sample_trainer):
    config, trainer = sample_trainer
    assert trainer.args.assistant_only_loss
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    assert len(trainer.train_dataset) == len(rows)
    tool_call_runs = 0
    for example, row in zip(rows, trainer.train_dataset, strict=True):
        runs = trained_runs(row, trainer.processing_class)
        assistant = [m for m in example["messages"] if m["role"] == "assistant"]
        assert len(runs) == len(assistant)
        for message, run in zip(assistant, runs, strict=True):
            assert run.endswith("<|im_end|>"), "the end-of-turn token is trained"
            assert not run.startswith("<|im_start|>"), "the turn header is context"
            calls = "".join(
                "<tool_call>" + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
                                           ensure_ascii=False) + "</tool_call>"
                for c in message.get("tool_calls") or [])
            assert run == (message.get("content") or "") + calls + "<|im_end|>"
            tool_call_runs += bool(calls)
        # every run is one assistant turn exactly, so system, user and tool text is all in the untrained part
        untrained = trainer.processing_class.decode([t for t, label in zip(row["input_ids"], row["labels"],
                                                                           strict=True) if label == -100])
        for message in example["messages"]:
            if message["role"] != "assistant":
                assert message["content"] in untrained
    assert tool_call_runs >= 100


def test_turning_assistant_only_loss_off_trains_every_token(tmp_path):
    config = config_for(tmp_path, "--train_file", str(write_rows(tmp_path, OPENAI_ROWS)),
                        "--assistant_only_loss", "false")
    trainer = trainer_for(config)
    assert all(label != -100 for row in trainer.train_dataset for label in row["labels"])
    report = Report()
    view = load_view(config, report)
    assert not view.assistant_only_loss
    assert all(r.trained == r.tokens for _, _, r in tokenized_file(view, config.trainkit.train_file))


def test_assistant_only_loss_is_on_by_default_and_in_every_shipped_config(tmp_path):
    import yaml

    assert config_for(tmp_path).sft.assistant_only_loss
    for name in ("smoke.yaml", "training_config_h100.yaml", "training_config_m4.yaml"):
        assert yaml.safe_load((ROOT / "configs" / name).read_text())["assistant_only_loss"] is True


def test_preflight_token_counts_equal_the_trainers_with_chat_template_path(tmp_path):
    from trl.chat_template_utils import qwen2_5_training_chat_template

    # Qwen2.5's own template has no generation marks: TRL swaps in its qwen2_5_training version.
    config = config_for(tmp_path, "--train_file", str(SAMPLE), "--chat_template_path", str(QWEN25),
                        "--max_length", "512")
    trainer = trainer_for(config)
    assert trainer.chat_template == qwen2_5_training_chat_template
    report = Report()
    view = load_view(config, report)
    assert view.chat_template == qwen2_5_training_chat_template and not report.errors
    mine = [r for _, _, r in tokenized_file(view, SAMPLE)]
    assert any(r.truncated for r in mine), "the comparison covers truncation"
    assert len(mine) == len(trainer.train_dataset)
    for tokenized, row in zip(mine, trainer.train_dataset, strict=True):
        assert tokenized.input_ids == row["input_ids"]
        assert tokenized.mask == [int(label != -100) for label in row["labels"]]
    # and the preflight's own numbers are those of the rows
    from trainkit.data.token_checks import check_token_lengths

    stats = check_token_lengths(view, [SAMPLE], Report())
    assert stats.tokens == sum(len(row["input_ids"]) for row in trainer.train_dataset)
    assert stats.trained == sum(label != -100 for row in trainer.train_dataset for label in row["labels"])


def test_an_example_whose_assistant_turns_are_all_cut_by_max_length_is_an_error_with_its_line(tmp_path, capfd):
    short = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    long = {"messages": [{"role": "system", "content": "You are Weatherman. " * 60},
                         {"role": "user", "content": "Rain today?"},
                         {"role": "assistant", "content": "Bring a brolly."}]}
    path = write_rows(tmp_path, [short, long, short])
    validate = load_script("validate_training_config")
    code = validate.main(["--config", str(ROOT / "configs" / "smoke.yaml"), "--train_file", str(path),
                          "--validation_file", "", "--max_length", "64", "--output_dir", str(tmp_path / "o")])
    out = capfd.readouterr().out
    assert code == 1
    assert (f"❌ ERROR: {path}:2: no token carries loss: its assistant turn is cut by max_length=64 (the example has"
            in out)
    assert "the trainer would drop it silently" in out


def test_a_template_without_generation_marks_that_trl_cannot_patch_is_an_error(tmp_path, capfd):
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    validate = load_script("validate_training_config")
    code = validate.main(["--config", str(ROOT / "configs" / "smoke.yaml"), "--chat_template_path", str(template),
                          "--output_dir", str(tmp_path / "o")])
    out = capfd.readouterr().out
    assert code == 1
    assert "assistant_only_loss needs {% generation %}…{% endgeneration %} marks around the assistant's turns" in out
    assert "assistant_only_loss: false" in out
