"""A real smoke run of configs/smoke.yaml, and what a finished run promises."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from conftest import ROOT, copy_run, read_json, run_train, step_losses


def test_smoke_run_completes_with_a_success_verdict(smoke_run):
    out, run = smoke_run
    assert run.returncode == 0, run.output[-3000:]
    assert run.verdict == f"✅ SUCCESS: training complete: adapter saved to {out / 'final'}"
    assert "[TRAINING-CPU-COMPLETE] step 20/20" in run.lines
    assert sorted(step_losses(out)) == list(range(1, 21))
    assert (out / "final" / "adapter_model.safetensors").is_file()


def test_smoke_run_prints_a_progress_line_every_logging_step(smoke_run):
    _, run = smoke_run
    progress = [line for line in run.lines if line.startswith("[TRAINING-CPU] step ")]
    assert [line.split()[2] for line in progress] == [f"{s}/20" for s in range(1, 21)]
    assert all(" | loss " in line and " tok/s " in line and "ETA" in line for line in progress)


def test_smoke_run_prints_one_time_estimate_after_estimate_after_steps(smoke_run):
    out, run = smoke_run
    estimates = [line for line in run.lines if line.startswith("[TRAINING-CPU] time estimate after ")]
    assert len(estimates) == 1, run.output[-3000:]
    assert re.match(r"^\[TRAINING-CPU\] time estimate after 5 steps: [0-9.]+ s/step, \d+:\d\d:\d\d to go "
                    r"for the remaining 15 steps \(done around \d{4}-\d\d-\d\d \d\d:\d\d\)$", estimates[0])
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    (estimate,) = [e for e in events if e["event"] == "estimate"]
    assert estimate["step"] == 5 and estimate["seconds_per_step"] > 0


def test_final_adapter_loads_with_peft_and_generates_text(smoke_run, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = smoke_run
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "final")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Do I need an umbrella in Lisbon?"}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True,
    )
    torch.manual_seed(0)
    generated = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    new_tokens = generated[0, prompt["input_ids"].shape[1]:]
    assert len(new_tokens) > 0
    assert isinstance(tokenizer.decode(new_tokens, skip_special_tokens=True), str)
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values()), "LoRA B matrices never left zero"


def test_status_json_and_events_match_their_schemas(smoke_run):
    out, _ = smoke_run
    status_schema = json.loads((ROOT / "docs" / "status.schema.json").read_text())
    events_schema = json.loads((ROOT / "docs" / "events.schema.json").read_text())
    status = read_json(out / "status.json")
    jsonschema.validate(status, status_schema)
    assert status["state"] == "completed" and status["step"] == status["max_steps"] == 20
    assert status["exit_code"] == 0 and status["device"] == "cpu"
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    for event in events:
        jsonschema.validate(event, events_schema)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "completed"
    assert kinds.count("checkpoint") == 2 and kinds.count("log") == 20


def test_wandb_logs_offline_under_the_persisted_run_id(smoke_run):
    out, run = smoke_run
    run_id = read_json(out / "wandb_run.json")["run_id"]
    offline_runs = list((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline_runs) == 1
    assert "⚠️ WARNING: no W&B API key found: logging offline" in run.lines


def test_relaunching_a_finished_run_trains_nothing_and_counts_nothing(smoke_run, tmp_path):
    out = copy_run(smoke_run[0], tmp_path / "done")
    before = {name: (out / name).read_bytes() for name in ("resume_metadata.json", "events.jsonl")}
    finished = read_json(out / "status.json")
    run = run_train(out)
    assert run.returncode == 0
    assert run.verdict == f"✅ SUCCESS: training already complete: step 20, adapter in {out / 'final'}"
    assert not [line for line in run.lines if " step " in line and line.startswith("[TRAINING-CPU] step")]
    assert {name: (out / name).read_bytes() for name in before} == before
    # status.json is this launch's (its pid, launch id) and keeps the finished run's figures.
    status = read_json(out / "status.json")
    assert status["state"] == "completed" and status["already_complete"] is True and status["exit_code"] == 0
    assert status["pid"] != finished["pid"] and status["launch_id"] != finished.get("launch_id")
    assert (status["step"], status["loss"], status["epoch"]) == (20, finished["loss"], finished["epoch"])


def test_a_larger_max_steps_continues_from_the_last_checkpoint(smoke_run, tmp_path):
    out = copy_run(smoke_run[0], tmp_path / "longer")
    run = run_train(out, "--max_steps", "24")
    assert run.returncode == 0, run.output[-3000:]
    assert "⚠️ RESUME: Found checkpoint at step 20. Resuming training." in run.lines
    assert sorted(step_losses(out)) == list(range(1, 25))
    assert read_json(out / "final" / "trainer_state.json")["global_step"] == 24


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--lora_alpah", "16"],
            "❌ ERROR: unknown config key(s) in the command line: lora_alpah (did you mean lora_alpha?)",
        ),
        (
            ["--train_file", "data/sample/missing.jsonl"],
            "❌ ERROR: data/sample/missing.jsonl: train_file does not exist",
        ),
        (["--model_name_or_path", "/nonexistent/model"], "❌ ERROR: model not found: /nonexistent/model"),
    ],
)
def test_bad_input_fails_with_one_error_line_and_writes_nothing(tmp_path, args, expected):
    out = tmp_path / "never"
    run = run_train(out, *args)
    assert run.returncode == 1
    errors = [line for line in run.lines if line.startswith("❌ ERROR:")]
    assert errors == [run.verdict] and run.verdict.startswith(expected)
    assert run.lines[run.lines.index(run.verdict) + 1].startswith("  ↳ ")
    assert not out.exists()
