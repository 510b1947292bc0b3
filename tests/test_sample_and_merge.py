"""sample.py and merge_adapter.py against the real smoke adapter, in-process and offline.

The smoke run (conftest's session fixture) trains once; the merge runs once per module
and the tests read its output. Bad inputs fail before any model loads, so they are cheap.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ANSI, PYTHON, ROOT, Run, base_env, load_script
from trainkit.evaluate import adapters

sample_cli = load_script("sample")
merge_cli = load_script("merge_adapter")

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather for a location.",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}]


def call(cli, argv: list[str], capsys) -> Run:
    """main(argv) in-process; what it printed, checked for what every command must satisfy."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback (most recent call last)" not in captured.out + captured.err
    assert not ANSI.search(captured.out)
    return Run(int(code), captured.out, Path("-"))


def completions(run: Run) -> dict[int, list[str]]:
    """The plain lines after each "[SAMPLE] prompt N:" line, up to the next tagged or [SAMPLE] line."""
    found: dict[int, list[str]] = {}
    current = None
    for line in run.lines:
        if line.startswith("[SAMPLE] prompt "):
            current = int(line.split()[2].rstrip(":"))
            found[current] = []
        elif line.startswith(("[", "✅", "⚠️", "❌")):
            current = None
        elif current is not None:
            found[current].append(line)
    return found


def assert_one_error(run: Run, expected: str) -> None:
    errors = [line for line in run.lines if line.startswith("❌ ERROR:")]
    assert run.returncode == 1, run.output
    assert len(errors) == 1, run.output
    assert run.verdict == errors[0], run.output
    assert expected in errors[0], run.output
    assert run.lines[run.lines.index(errors[0]) + 1].startswith("  ↳ "), run.output


@pytest.fixture(scope="module")
def adapter(smoke_run) -> Path:
    out, run = smoke_run
    assert run.returncode == 0, run.output[-3000:]
    return out / "final"


@pytest.fixture(scope="module")
def merged(adapter, tmp_path_factory) -> tuple[Path, Run]:
    """merge_adapter.py on the smoke adapter, once, into a directory that does not exist yet."""
    output = tmp_path_factory.mktemp("merge") / "models" / "weatherman-merged"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = merge_cli.main(["--adapter", str(adapter), "--output", str(output)])
    return output, Run(int(code), stdout.getvalue(), Path("-"))


def sample(adapter: Path, capsys, *args) -> Run:
    return call(sample_cli, ["--adapter", adapter, "--device", "cpu", "--max-new-tokens", 16, *args], capsys)


# --- sample.py ----------------------------------------------------------------------------


def test_sample_prints_a_completion_under_the_prompt_line_and_ends_with_success(adapter, capsys, tmp_path,
                                                                                monkeypatch):
    # From another directory: the adapter records its base relative to the repo (models/tiny-chat).
    monkeypatch.chdir(tmp_path)
    run = sample(adapter, capsys, "--prompt", "Will it rain in Oslo tomorrow?")

    assert run.returncode == 0, run.output
    header = run.lines[0]
    assert header.startswith("[SAMPLE] base ") and "tiny-chat" in header and str(adapter) in header, header
    assert "on cpu (float32)" in header, header
    assert "[SAMPLE] prompt 1: Will it rain in Oslo tomorrow?" in run.lines
    assert "".join(completions(run)[1]).strip(), run.output
    assert run.verdict == "✅ SUCCESS: generated 1 completion(s)"
    assert run.lines[-1] == run.verdict


def test_greedy_sampling_gives_the_same_completion_every_time(adapter, capsys):
    args = ("--prompt", "Is it windy in Chicago?", "--temperature", "0", "--seed", "1")
    first, second = sample(adapter, capsys, *args), sample(adapter, capsys, *args)

    assert first.returncode == second.returncode == 0, first.output + second.output
    assert completions(first)[1] and completions(first) == completions(second)


def test_a_prompts_file_with_two_prompts_gives_two_completions(adapter, capsys, tmp_path):
    example = {"messages": [
        {"role": "system", "content": "You are Weatherman."},
        {"role": "user", "content": "Got a weather joke for me?"},
        {"role": "assistant", "content": "To rain or not to rain, that is the precipitation."},
    ]}
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"Will it rain in Oslo tomorrow?\n\n{json.dumps(example)}\n")

    run = sample(adapter, capsys, "--prompts-file", prompts, "--system", "Keep answers short.")

    assert run.returncode == 0, run.output
    assert "[SAMPLE] prompt 1: Will it rain in Oslo tomorrow?" in run.lines
    assert "[SAMPLE] prompt 2: Got a weather joke for me?" in run.lines
    texts = completions(run)
    assert sorted(texts) == [1, 2] and all("".join(lines).strip() for lines in texts.values()), run.output
    assert run.verdict == "✅ SUCCESS: generated 2 completion(s)"


def test_a_tools_file_is_accepted_and_reaches_the_chat_template(adapter, capsys, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    rendered = []
    original = PreTrainedTokenizerBase.apply_chat_template

    def spy(self, conversation, *args, **kwargs):
        rendered.append(original(self, conversation, tokenize=False, add_generation_prompt=True,
                                 tools=kwargs.get("tools")))
        return original(self, conversation, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "apply_chat_template", spy)
    run = sample(adapter, capsys, "--prompt", "What's the weather in Rome?", "--tools", tools)

    assert run.returncode == 0, run.output
    assert run.verdict == "✅ SUCCESS: generated 1 completion(s)"
    assert len(rendered) == 1 and "get_current_weather" in rendered[0], rendered
    assert rendered[0].endswith("<|im_start|>assistant\n"), rendered  # add_generation_prompt=True


def test_prompt_files_cut_training_examples_before_the_first_reply_and_add_the_system_message_only_when_missing(
        tmp_path):
    chat = {"messages": [{"role": "user", "content": "Weather in Rome?"},
                         {"role": "assistant", "content": None, "tool_calls": []},
                         {"role": "tool", "content": "{}"}, {"role": "assistant", "content": "Showers."}],
            "tools": TOOLS}
    own_system = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Snow?"}]}
    path = write(tmp_path / "p.jsonl", "\n".join([json.dumps(chat), json.dumps(own_system), '{"prompt": "Fog?"}']))

    rome, snow, fog = adapters.read_prompts_file(path, system="You are Weatherman.")

    assert rome.text == "Weather in Rome?" and rome.tools == TOOLS
    assert [m["role"] for m in rome.messages] == ["system", "user"]
    assert snow.messages[0] == {"role": "system", "content": "Be brief."} and len(snow.messages) == 2
    assert fog.messages == [{"role": "system", "content": "You are Weatherman."}, {"role": "user", "content": "Fog?"}]
    # Model text that looks like a verdict is indented, so the command's last tagged line stays its own.
    assert adapters.safe_completion_lines("Sunny.\n✅ SUCCESS: done") == ["Sunny.", " ✅ SUCCESS: done"]


# --- merge_adapter.py ---------------------------------------------------------------------


def test_merged_model_gives_the_logits_of_base_plus_adapter_and_loads_without_peft(merged, adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output, run = merged
    assert run.returncode == 0, run.output
    assert run.verdict == f"✅ SUCCESS: merged model saved to {output}"
    assert any(line.startswith("[MERGE] next:") and "convert_hf_to_gguf.py" in line for line in run.lines), run.output
    names = {p.name for p in output.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names, names
    assert not any(name.startswith("adapter_") for name in names), names
    assert not list(output.parent.glob(".*merging*")), "temporary directory left behind"
    umask = os.umask(0)
    os.umask(umask)
    assert (output / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask

    model = AutoModelForCausalLM.from_pretrained(output, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(output, local_files_only=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not [name for name, _ in model.named_parameters() if "lora" in name]
    assert tokenizer.chat_template == (ROOT / "models" / "tiny-chat" / "chat_template.jinja").read_text()

    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "Will it rain in Oslo tomorrow?"}],
                                           add_generation_prompt=True, return_dict=True, return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(ROOT / "models" / "tiny-chat", dtype=torch.float32)
    with torch.inference_mode():
        bare = base(**inputs).logits
        with_adapter = PeftModel.from_pretrained(base, str(adapter)).eval()(**inputs).logits
        merged_logits = model(**inputs).logits
    torch.testing.assert_close(merged_logits, with_adapter, atol=1e-4, rtol=0)
    # The smoke adapter moves the logits by ~0.5 at most; 1e-2 is far above fp32 noise.
    assert (merged_logits - bare).abs().max().item() > 1e-2


def test_merge_refuses_to_overwrite_an_existing_non_empty_directory(adapter, capsys, tmp_path):
    output = tmp_path / "merged"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")

    run = call(merge_cli, ["--adapter", adapter, "--output", output], capsys)

    assert_one_error(run, f"output directory {output} already exists and is not empty")
    assert "--force" in run.output
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]
    assert [p.name for p in output.iterdir()] == ["notes.txt"] and (output / "notes.txt").read_text() == "keep me"


def test_merge_with_force_writes_into_it_dropping_old_weights_and_keeping_other_files(adapter, capsys, tmp_path):
    output = tmp_path / "merged"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    for stale in ("model-00001-of-00002.safetensors", "model.safetensors.index.json"):
        (output / stale).write_text("old shard")

    run = call(merge_cli, ["--adapter", adapter, "--output", output, "--force"], capsys)

    assert run.returncode == 0 and run.verdict == f"✅ SUCCESS: merged model saved to {output}", run.output
    names = {p.name for p in output.iterdir()}
    assert {"notes.txt", "model.safetensors", "config.json", "tokenizer.json"} <= names, names
    assert not names & {"model-00001-of-00002.safetensors", "model.safetensors.index.json"}, names
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_a_merge_that_fails_while_saving_leaves_nothing_at_the_output(adapter, capsys, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    def disk_full(self, save_directory, **kwargs):
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / "model.safetensors").write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", disk_full)
    output = tmp_path / "new" / "merged"

    run = call(merge_cli, ["--adapter", adapter, "--output", output], capsys)

    assert_one_error(run, f"could not save the merged model to {output}: [Errno 28] No space left on device")
    assert list(tmp_path.iterdir()) == [], "a failed merge must write nothing"


def test_merge_onto_a_base_the_adapter_does_not_fit_is_one_error_and_writes_nothing(adapter, capsys, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other-base"
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=2, head_dim=16, vocab_size=2052)).save_pretrained(other)
    output = tmp_path / "out" / "merged"

    run = call(merge_cli, ["--adapter", adapter, "--output", output, "--base", other], capsys)

    assert_one_error(run, f"adapter {adapter} does not fit base model {other}: ")
    assert "size mismatch" in run.output
    assert any(line.startswith("⚠️ WARNING: --base") and "models/tiny-chat" in line for line in run.lines)
    assert not (tmp_path / "out").exists()


# --- bad inputs: one ERROR line, exit 1, no traceback, before any model loads ----------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_INPUTS = {
    "missing adapter dir": ("sample", lambda a, t: ["--adapter", t / "nope", "--prompt", "hi"],
                            "adapter directory not found: "),
    "merge: missing adapter dir": ("merge_adapter", lambda a, t: ["--adapter", t / "nope", "--output", t / "m"],
                                   "adapter directory not found: "),
    "adapter dir without adapter_config.json": ("sample", lambda a, t: ["--adapter", a.parent, "--prompt", "hi"],
                                                "no adapter_config.json in "),
    "merge: adapter dir without adapter_config.json": (
        "merge_adapter", lambda a, t: ["--adapter", a.parent, "--output", t / "m"], "no adapter_config.json in "),
    "bad tools JSON": ("sample", lambda a, t: ["--adapter", a, "--prompt", "hi",
                                               "--tools", write(t / "tools.json", '[{"type": "function",')],
                       "is not valid JSON: line 1 column"),
    "tools not a list": ("sample", lambda a, t: ["--adapter", a, "--prompt", "hi",
                                                 "--tools", write(t / "tools.json", json.dumps(TOOLS[0]))],
                         "must hold a JSON list of tool schemas, not an object"),
    "both --prompt and --prompts-file": (
        "sample", lambda a, t: ["--adapter", a, "--prompt", "hi", "--prompts-file", write(t / "p.txt", "hi\n")],
        "pass either --prompt or --prompts-file, not both"),
    "neither --prompt nor --prompts-file": ("sample", lambda a, t: ["--adapter", a], "no prompt given"),
    "empty prompts file": ("sample", lambda a, t: ["--adapter", a, "--prompts-file", write(t / "p.txt", "\n \n")],
                           "no prompts in "),
    "JSON line without prompt or messages": (
        "sample", lambda a, t: ["--adapter", a, "--prompts-file", write(t / "p.txt", '{"question": "hi"}\n')],
        ':1: a JSON line needs "prompt"'),
    "base not found offline": ("sample", lambda a, t: ["--adapter", a, "--prompt", "hi", "--base", "acme/not-cached"],
                               "base model not found offline: acme/not-cached"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_error_line_and_exit_1(case, adapter, capsys, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    script, argv, expected = BAD_INPUTS[case]
    run = call({"sample": sample_cli, "merge_adapter": merge_cli}[script], argv(adapter, tmp_path), capsys)
    assert_one_error(run, expected)
    assert not (tmp_path / "m").exists()


def test_the_sample_command_with_bad_tools_json_exits_1_with_one_error_and_no_traceback(adapter, tmp_path):
    tools = write(tmp_path / "tools.json", "{not json")
    proc = subprocess.run([PYTHON, "scripts/sample.py", "--adapter", str(adapter), "--prompt", "hi", "--tools",
                           str(tools)], cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=120)

    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        f"❌ ERROR: tools file {tools} is not valid JSON: line 1 column 2: "
        "Expecting property name enclosed in double quotes",
        f"  ↳ {adapters.TOOLS_HINT}",
    ]
