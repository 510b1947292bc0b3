"""Tool-call figures during a real (tiny) training run, and scripts/evaluate.py on its adapter."""

from __future__ import annotations

import json
import re
import subprocess

import jsonschema
import pytest

from conftest import PYTHON, ROOT, SMOKE, Run, base_env, check_log, load_script, read_json
from trainkit.evaluate import tool_eval as evaluation
from trainkit.evaluate.toolcalls import FIGURES
from trainkit.train import eval_callback

VALIDATION = ROOT / "data" / "sample" / "validation.jsonl"
EVAL_LINE = re.compile(
    r"^\[TRAINING-CPU\] eval at step 4/4: tool_call_parse_rate (\d\.\d\d|n/a) \| tool_args_exact (\d\.\d\d|n/a) \| "
    r"eval_loss \d+\.\d{4} \| (\d+\.\d) s \(eval loss \d+\.\d s, "
    r"tool calls \d+\.\d s on \d+ turns of 4 conversations\), "
    r"\d+% of training time so far$"
)


def schema(name: str) -> dict:
    return json.loads((ROOT / "docs" / name).read_text())


@pytest.fixture(scope="module")
def eval_run(runs_dir) -> tuple:
    """4 steps of the smoke config with one evaluation at step 4 on 4 conversations, W&B offline."""
    out = runs_dir / "tool-eval"
    log = runs_dir / "tool-eval.log"
    cmd = [PYTHON, "train.py", "--config", str(SMOKE), "--output_dir", str(out), "--max_steps", "4",
           "--eval_strategy", "steps", "--eval_steps", "4", "--tool_eval_samples", "4",
           "--tool_eval_max_new_tokens", "16", "--report_to", "wandb"]
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=base_env(), stdout=fh, stderr=subprocess.STDOUT, timeout=600)
    return out, check_log(Run(proc.returncode, log.read_text(), log))


def test_an_evaluation_step_writes_the_tool_call_figures_to_status_json(eval_run):
    out, run = eval_run
    assert run.returncode == 0, run.output[-3000:]
    status = read_json(out / "status.json")
    jsonschema.validate(status, schema("status.schema.json"))
    block = status["eval"]
    assert block["step"] == 4 and block["format"] == "hermes" and block["conversations"] == 4
    assert set(FIGURES) <= set(block)
    assert block["turns"] == block["call_turns"] + block["text_turns"] > 0
    assert block["eval_loss"] > 0 and block["seconds"] >= block["tool_eval_seconds"] > 0
    assert 0 < block["share_of_training"] <= 1


def test_a_random_tiny_model_gets_no_tool_call_right(eval_run):
    block = read_json(eval_run[0] / "status.json")["eval"]
    assert block["tool_args_exact"] in (0.0, None) and block["tool_name_accuracy"] in (0.0, None)


def test_the_eval_event_carries_the_same_figures_as_status_json(eval_run):
    out, _ = eval_run
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    for event in events:
        jsonschema.validate(event, schema("events.schema.json"))
    (event,) = [e for e in events if e["event"] == "eval"]
    assert {k: v for k, v in event.items() if k not in ("time", "event")} == read_json(out / "status.json")["eval"]


def test_the_eval_line_shows_the_two_headline_figures_and_how_long_evaluation_took(eval_run):
    out, run = eval_run
    lines = [line for line in run.lines if line.startswith("[TRAINING-CPU] eval at step")]
    assert len(lines) == 1 and EVAL_LINE.match(lines[0]), run.output[-3000:]
    block = read_json(out / "status.json")["eval"]
    assert float(EVAL_LINE.match(lines[0]).group(3)) == pytest.approx(block["seconds"], abs=0.06)


def test_the_offline_wandb_run_holds_the_figures_and_a_table_of_turns(eval_run):
    out, _ = eval_run
    run_id = read_json(out / "wandb_run.json")["run_id"]
    (run_dir,) = (out / "wandb").glob(f"offline-run-*-{run_id}")
    history = next(run_dir.glob("run-*.wandb")).read_bytes()
    for name in ("tool_call_parse_rate", "tool_name_accuracy", "tool_args_exact", "tool_args_keys", "false_call_rate"):
        assert f"eval/{name}".encode() in history, name
    (table_file,) = run_dir.glob("files/media/table/eval/tool_calls_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["step", "conversation_id", "turn", "verdict", "expected", "generated"]
    assert len(table["data"]) == read_json(out / "status.json")["eval"]["turns"]
    assert {row[0] for row in table["data"]} == {4}
    assert all(row[1].startswith("validation.jsonl:") for row in table["data"])


def test_the_sample_is_the_same_conversations_every_time_and_not_just_the_first_ones():
    every = evaluation.read_conversations(VALIDATION)
    first, again = evaluation.sample(every, 8), evaluation.sample(every, 8)
    assert [c.id for c in first] == [c.id for c in again]
    assert [c.id for c in first] != [c.id for c in every[:8]]
    assert evaluation.sample(every, 1000) == every


def test_each_assistant_turn_is_prompted_with_the_conversation_before_it():
    (conversation,) = [c for c in evaluation.read_conversations(VALIDATION) if c.id == "validation.jsonl:4"]
    turns = evaluation.turns_of([conversation])
    assert [t.index for t in turns] == [1, 3]
    assert turns[0].expected[0].name == "get_current_weather" and turns[1].expected == ()
    assert [m["role"] for m in turns[1].prompt] == ["user", "assistant", "tool"] and turns[1].tools


def test_evaluation_is_off_unless_the_config_evaluates(tmp_path):
    from trainkit.config.settings import parse
    from trainkit.core.status import RunStatus

    status = RunStatus(tmp_path, enabled=False)
    argv = ["--config", str(SMOKE), "--output_dir", str(tmp_path / "out")]
    assert eval_callback.eval_callbacks(parse(argv), status, print, lambda: False, verbose=False) == []
    (callback,) = eval_callback.eval_callbacks(parse([*argv, "--eval_strategy", "steps"]), status, print, lambda: False,
                                            verbose=False)
    assert len(callback.conversations) == 16 and callback.max_new_tokens == 128


def evaluate_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = load_script("evaluate").main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_json_of_an_adapter_matches_its_schema_and_the_tagged_lines_go_to_stderr(eval_run, capsys):
    out, _ = eval_run
    code, stdout, stderr = evaluate_cli(capsys, "--adapter", str(out / "final"), "--data", str(VALIDATION),
                                        "--n", "3", "--max-new-tokens", "8", "--device", "cpu", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    jsonschema.validate(document, schema("evaluate.schema.json"))
    assert document["adapter"] == str(out / "final") and not document["base_only"]
    assert document["counts"]["conversations"] == 3 and len(document["turns"]) == document["counts"]["turns"]
    assert stderr.splitlines()[-1].startswith("✅ SUCCESS: evaluated ")


def test_evaluate_base_only_scores_the_bare_base_model_with_a_verdict(tiny_model, capsys):
    code, stdout, _ = evaluate_cli(capsys, "--base", str(tiny_model), "--base-only", "--data", str(VALIDATION),
                                   "--n", "2", "--max-new-tokens", "8", "--device", "cpu")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith(f"[EVALUATE] base {tiny_model} on cpu (float32): 2 of 40 conversations")
    assert any(line.startswith("[EVALUATE] tool_call_parse_rate ") for line in lines)
    assert re.match(r"^✅ SUCCESS: evaluated \d+ assistant turns of 2 conversations in [0-9.]+ s: "
                    r"tool_call_parse_rate (\d\.\d\d|n/a), tool_args_exact (\d\.\d\d|n/a)$", lines[-1])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--data", str(VALIDATION)],
         "❌ ERROR: no model to evaluate: pass --adapter DIR, or --base-only with --base MODEL"),
        (["--base", "models/tiny-chat", "--base-only", "--data", "data/sample/missing.jsonl"],
         "❌ ERROR: evaluation data not found: data/sample/missing.jsonl"),
        (["--adapter", "outputs/never-trained/final", "--data", str(VALIDATION)],
         "❌ ERROR: adapter directory not found: outputs/never-trained/final"),
    ],
)
def test_evaluate_refuses_bad_input_with_one_error_line_and_exit_1(capsys, argv, expected):
    code, stdout, _ = evaluate_cli(capsys, *argv)
    assert code == 1
    lines = stdout.splitlines()
    assert lines[-2] == expected and lines[-1].startswith("  ↳ ")


class FakeTokenizer:
    chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"


def test_a_chat_template_without_a_known_call_format_turns_the_figures_off_with_a_warning(tmp_path):
    from trainkit.core.status import RunStatus

    warnings = []
    conversations = evaluation.sample(evaluation.read_conversations(VALIDATION), 2)
    callback = eval_callback.EvalCallback(RunStatus(tmp_path), "TRAINING-CPU", lambda *a: warnings.append(a),
                                       conversations=conversations, max_new_tokens=8, verbose=False)
    state = type("State", (), {"global_step": 0, "max_steps": 8})()
    callback.on_train_begin(None, state, None, processing_class=FakeTokenizer())
    assert callback.parser is None
    assert warnings[0][0] == ("the chat template renders no tool-call format trainkit can parse: "
                              "tool-call figures are off")
    state = type("State", (), {"global_step": 6, "max_steps": 8})()
    metrics = {"eval_loss": 2.5, "eval_runtime": 0.4}
    callback.on_evaluate(None, state, None, metrics=metrics, model=object(), processing_class=FakeTokenizer())
    block = read_json(tmp_path / "status.json")["eval"]
    assert block["step"] == 6 and block["eval_loss"] == 2.5 and "tool_call_parse_rate" not in block
    jsonschema.validate(read_json(tmp_path / "status.json"), schema("status.schema.json"))


def test_ranks_other_than_zero_neither_generate_nor_write(tmp_path, monkeypatch):
    from trainkit.core.status import RunStatus

    monkeypatch.setenv("RANK", "1")
    callback = eval_callback.EvalCallback(RunStatus(tmp_path, enabled=False), "TRAINING-CPU", print,
                                       conversations=[], max_new_tokens=8, verbose=False)
    state = type("State", (), {"global_step": 6, "max_steps": 8})()
    callback.on_evaluate(None, state, None, metrics={"eval_loss": 1.0}, model=None, processing_class=None)
    assert not (tmp_path / "status.json").exists() and callback.eval_seconds == 0.0


def test_a_stop_request_ends_generation_before_the_next_batch(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    conversations = evaluation.sample(evaluation.read_conversations(VALIDATION), 2)
    assert evaluation.evaluate(model, tokenizer, conversations, max_new_tokens=4, should_stop=lambda: True) is None
    result = evaluation.evaluate(model, tokenizer, conversations, max_new_tokens=4)
    assert result.family == "hermes" and len(result.results) == result.figures.turns > 0


def test_a_resumed_run_keeps_its_latest_evaluation_in_status_json(eval_run, tmp_path):
    from trainkit.config.settings import parse
    from trainkit.core.status import RunStatus

    out = tmp_path / "resumed"
    out.mkdir()
    (out / "events.jsonl").write_bytes((eval_run[0] / "events.jsonl").read_bytes())
    status = RunStatus(out)
    config = parse(["--config", str(SMOKE), "--output_dir", str(out), "--eval_strategy", "steps"])
    eval_callback.eval_callbacks(config, status, print, lambda: False, verbose=False)
    status.update(state="running")
    assert read_json(out / "status.json")["eval"] == read_json(eval_run[0] / "status.json")["eval"]
