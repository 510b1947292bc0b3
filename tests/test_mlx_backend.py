"""backend: mlx — trainkit's loop over mlx-lm (MLX's CPU build here), with the torch backend's guarantees:
the same trained tokens, complete checkpoints, exact resume after kills, the same exit codes, and a
final/ adapter that PEFT loads on the torch base and that behaves as the MLX model did."""

from __future__ import annotations

import json
import math
import shutil
import signal

import numpy as np
import pytest

from conftest import ROOT, base_env, copy_run, finish, read_json, run_train, start_train, status_step, wait_for
from trainkit.train import checkpoints

pytest.importorskip("mlx_lm", reason="MLX is pinned for Linux and macOS; make setup installs it")

# Two sequences a step: MLX's CPU build is the slow part of these tests, and nothing here depends on the batch.
MLX = ("--backend", "mlx", "--per_device_train_batch_size", "2")
STEPS = ("--max_steps", "6", "--save_steps", "2")


def adapter(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_adapter(a, b, tolerance=1e-5):
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert worst <= tolerance, f"adapters differ by {worst}"


# One evaluation at the last step: a capped eval loss at eval batch 1 and the tool-call figures on two conversations.
EVAL = ("--eval_strategy", "steps", "--eval_steps", "6", "--per_device_eval_batch_size", "1",
        "--eval_max_examples", "4", "--tool_eval_samples", "2", "--tool_eval_max_new_tokens", "16")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Six MLX steps straight through, a checkpoint every two, evaluated at the end."""
    out = tmp_path_factory.mktemp("mlx") / "straight"
    run = run_train(out, *MLX, *STEPS, *EVAL)
    assert run.returncode == 0, run.output[-3000:]
    return out, run


def test_an_mlx_run_trains_checkpoints_and_ends_with_a_peft_adapter(straight):
    out, run = straight
    assert run.verdict == f"✅ SUCCESS: training complete: adapter saved to {out / 'final'}"
    assert "[PREFLIGHT] backend: mlx (trainkit's loop over mlx-lm; the same trained tokens, checkpoints and " \
           "adapter format)" in run.lines
    steps = [line for line in run.lines if line.startswith("[TRAINING-CPU] step ")]
    assert steps[-1].startswith("[TRAINING-CPU] step 6/6")
    status = read_json(out / "status.json")
    assert (status["state"], status["step"], status["exit_code"], status["backend"]) == ("completed", 6, 0, "mlx")
    assert status["tokens_per_second"] and status["tokens_per_second"] > 0
    saved = checkpoints.checkpoint_dirs(out)
    assert [c.step for c in saved] == [6, 4, 2]
    assert all(checkpoints.problems(c) == [] for c in saved)
    weights = adapter(out / "final")
    assert weights and all(".lora_A.weight" in k or ".lora_B.weight" in k for k in weights)
    assert all(k.startswith("base_model.model.model.layers.") for k in weights)
    config = read_json(out / "final" / "adapter_config.json")
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16)
    assert (out / "final" / "mlx" / "adapters.safetensors").is_file()
    assert read_json(out / "final" / "trainer_state.json")["global_step"] == 6
    losses = [e["loss"] for e in read_json(out / "final" / "trainer_state.json")["log_history"] if "loss" in e]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)


def test_mlx_trains_the_tokens_and_loss_mask_trl_trains_for_tool_calls_given_as_strings(tmp_path):
    from test_training_view import OPENAI_ROWS, config_for, trainer_for, write_rows

    from trainkit.train.mlx_backend import MlxBackend

    config = config_for(tmp_path, "--train_file", str(write_rows(tmp_path, OPENAI_ROWS)))
    trl_rows = list(trainer_for(config).train_dataset)
    mlx_rows = MlxBackend().load_data(config)["train"]
    assert len(mlx_rows) == len(trl_rows) == 2
    for row, (ids, mask) in zip(trl_rows, mlx_rows, strict=True):
        assert list(ids) == list(row["input_ids"])
        assert list(mask) == [int(label != -100) for label in row["labels"]]


def test_eval_max_examples_caps_the_eval_loss_to_the_same_fixed_sample_on_both_backends(tmp_path):
    from test_training_view import config_for

    from trainkit.core.report import Report
    from trainkit.data.training_view import load_view
    from trainkit.train.backend import TorchBackend
    from trainkit.train.mlx_backend import MlxBackend

    config = config_for(tmp_path, "--validation_file", str(ROOT / "data" / "sample" / "validation.jsonl"),
                        "--eval_max_examples", "3")
    by_torch = TorchBackend().load_data(config)["validation"]
    by_mlx = MlxBackend().load_data(config)["validation"]
    assert len(by_torch) == len(by_mlx) == 3
    encoded = load_view(config, Report("T")).tokenize([dict(row) for row in by_torch])
    assert [t.input_ids for t in encoded] == [list(ids) for ids, _ in by_mlx]
    later = config_for(tmp_path, "--validation_file", str(ROOT / "data" / "sample" / "validation.jsonl"),
                       "--eval_max_examples", "3")
    assert MlxBackend().load_data(later)["validation"] == by_mlx, "the same sample at every evaluation"


def test_an_mlx_adapter_under_peft_on_the_torch_base_gives_the_mlx_models_logits_and_completions(straight):
    import mlx.core as mx
    import torch
    from mlx_lm import load
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = straight
    base = ROOT / "models" / "tiny-chat"
    tokenizer = AutoTokenizer.from_pretrained(base)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Weather in Oslo tomorrow?"}],
                                           add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt)["input_ids"]
    mlx_model, _ = load(str(base), adapter_path=str(out / "final" / "mlx"))
    mlx_model.eval()
    torch_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "final").eval()

    mlx_logits = np.array(mlx_model(mx.array([ids])).astype(mx.float32))[0]
    with torch.no_grad():
        torch_logits = torch_model(torch.tensor([ids])).logits[0].numpy()
    assert np.max(np.abs(mlx_logits - torch_logits)) < 1e-3

    def greedy(step, tokens, n=12):
        tokens = list(tokens)
        for _ in range(n):
            tokens.append(int(np.argmax(step(tokens))))
        return tokens[len(ids):]

    with torch.no_grad():
        by_torch = greedy(lambda t: torch_model(torch.tensor([t])).logits[0, -1].numpy(), ids)
    by_mlx = greedy(lambda t: np.array(mlx_model(mx.array([t]))[0, -1].astype(mx.float32)), ids)
    assert by_torch == by_mlx


def test_an_mlx_run_evaluates_to_the_figures_torch_gives_for_its_adapter(straight, tmp_path):
    import torch
    from mlx_lm import load
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainkit.evaluate import tool_eval
    from trainkit.train.mlx_backend import generation_config

    out, run = straight
    status = read_json(out / "status.json")
    block = status["eval"]
    assert block["step"] == 6 and block["conversations"] == 2
    assert any(line.startswith("[TRAINING-CPU] eval at step 6/6: tool_call_parse_rate ") for line in run.lines)
    history = read_json(out / "final" / "trainer_state.json")["log_history"]
    assert [e["step"] for e in history if "eval_loss" in e] == [6]

    base = ROOT / "models" / "tiny-chat"
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "final").eval()
    # The eval loss: the mean over the same four validation examples of each one's per-token loss, under torch.
    from test_training_view import config_for

    from trainkit.train.mlx_backend import MlxBackend

    config = config_for(tmp_path, "--backend", "mlx", "--validation_file", str(ROOT / "data" / "sample" /
                        "validation.jsonl"), "--eval_max_examples", "4")
    losses = []
    with torch.no_grad():
        for ids, mask in MlxBackend().load_data(config)["validation"]:
            ids, mask = torch.tensor([ids]), torch.tensor(mask)
            labels = torch.where(mask.bool(), ids[0], -100)[None]
            losses.append(float(torch_model(ids, labels=labels).loss))
    assert len(losses) == 4
    assert block["eval_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-3)

    # The tool-call figures: generation through mlx-lm replies as torch+PEFT does, turn by turn.
    conversations = tool_eval.sample(tool_eval.read_conversations(ROOT / "data" / "sample" / "validation.jsonl"), 2)
    mlx_model, _ = load(str(base), adapter_path=str(out / "final" / "mlx"))
    mlx_model.generation_config = generation_config(base)
    by_mlx = tool_eval.evaluate(mlx_model, tokenizer, conversations, max_new_tokens=16)
    by_torch = tool_eval.evaluate(torch_model, tokenizer, conversations, max_new_tokens=16)
    assert [r["generated"] for r in by_mlx.rows()] == [r["generated"] for r in by_torch.rows()]
    figures = {k: v for k, v in by_torch.summary().items() if "seconds" not in k}
    assert {k: block[k] for k in figures} == figures


def test_an_mlx_run_killed_mid_save_and_at_a_random_step_resumes_to_the_straight_runs_adapter(straight, tmp_path):
    out = tmp_path / "chaos"
    # Killed while writing checkpoint-4: it keeps its incomplete marker, and the resume starts at 2.
    killed = run_train(out, *MLX, *STEPS, env=base_env(TRAINKIT_FAULT_KILL_IN_SAVE_AT_STEP=4), process=True)
    assert killed.returncode == -signal.SIGKILL
    assert checkpoints.problems(checkpoints.Checkpoint(out / "checkpoint-4", 4))
    proc, log = start_train(out, *MLX, *STEPS, env=base_env(TRAINKIT_FAULT_STEP_DELAY=0.3))
    wait_for(lambda: "[TRAINING-CPU] step 3/6" in log.read_text(), proc, what="step 3")
    proc.send_signal(signal.SIGKILL)
    assert finish(proc, log).returncode == -signal.SIGKILL
    assert "⚠️ RESUME: Found checkpoint at step 2. Resuming training." in log.read_text()
    resumed = run_train(out, *MLX, *STEPS)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert any(line.startswith("⚠️ RESUME: Found checkpoint at step") for line in resumed.lines)
    assert_same_adapter(adapter(out / "final"), adapter(straight[0] / "final"))


def test_sigterm_to_an_mlx_run_saves_exits_75_and_the_rerun_resumes_there(tmp_path):
    out = tmp_path / "term"
    proc, log = start_train(out, *MLX, "--max_steps", "8", "--save_steps", "100",
                            env=base_env(TRAINKIT_FAULT_STEP_DELAY=0.2))
    wait_for(lambda: status_step(out) >= 3, proc, what="step 3")
    proc.send_signal(signal.SIGTERM)
    stopped = finish(proc, log)
    assert stopped.returncode == 75, stopped.output[-3000:]
    [saved] = checkpoints.checkpoint_dirs(out)
    assert checkpoints.problems(saved) == []
    assert stopped.verdict == f"❌ ERROR: interrupted by SIGTERM: checkpoint saved at step {saved.step}"
    rerun = run_train(out, *MLX, "--max_steps", "8", "--save_steps", "100")
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert f"⚠️ RESUME: Found checkpoint at step {saved.step}. Resuming training." in rerun.lines


def test_an_mlx_run_crashing_at_the_same_step_is_a_crash_loop_exit_2(straight, tmp_path):
    out = copy_run(straight[0], tmp_path / "loop")
    for path in [out / "final", *[c.path for c in checkpoints.checkpoint_dirs(out) if c.step > 4]]:
        shutil.rmtree(path)
    crash = base_env(TRAINKIT_FAULT_CRASH_AT_STEP=5)
    codes = [run_train(out, *MLX, *STEPS, env=crash).returncode for _ in range(4)]
    assert codes == [70, 70, 70, 2]
    assert read_json(out / "status.json")["state"] == "crash_loop"


def test_a_nan_loss_under_mlx_is_exit_3_with_the_last_good_state_saved_and_finite(tmp_path):
    out = tmp_path / "nan"
    run = run_train(out, *MLX, *STEPS, env=base_env(TRAINKIT_FAULT_NAN_AT_STEP=4))
    assert run.returncode == 3, run.output[-3000:]
    assert run.verdict == ("❌ ERROR: loss became nan at step 4: training diverged; "
                           "last good state saved in checkpoint-3")
    for saved in checkpoints.checkpoint_dirs(out):
        assert checkpoints.problems(saved) == []
        assert all(np.isfinite(v).all() for v in adapter(saved.path).values())
    assert read_json(out / "status.json")["state"] == "diverged"


def test_non_finite_weights_under_mlx_are_never_saved_and_the_newest_periodic_checkpoint_is_named(tmp_path):
    out = tmp_path / "nan-weights"
    run = run_train(out, *MLX, *STEPS, env=base_env(TRAINKIT_FAULT_NAN_WEIGHTS_AT_STEP=4))
    assert run.returncode == 3, run.output[-3000:]
    assert run.verdict.startswith("❌ ERROR: trainable weights became non-finite (model.layers.0.")
    assert run.verdict.endswith(") at step 4: training diverged; the weights are no longer finite, so no checkpoint "
                                "was saved: the newest periodic checkpoint is checkpoint-2")
    assert [c.step for c in checkpoints.checkpoint_dirs(out)] == [2]
    assert all(np.isfinite(v).all() for v in adapter(out / "checkpoint-2").values())


def test_load_in_4bit_under_mlx_trains_lora_over_a_4_bit_base(tmp_path):
    import mlx.nn as nn
    from mlx_lm.tuner.lora import LoRALinear
    from test_training_view import config_for

    from trainkit.train.faults import Faults
    from trainkit.train.mlx_backend import QUANT_BITS, MlxBackend

    config = config_for(tmp_path, *MLX, "--load_in_4bit", "true")
    session = MlxBackend().build(config, MlxBackend().load_data(config), [], Faults())
    q_proj = session.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, LoRALinear) and isinstance(q_proj.linear, nn.QuantizedLinear)
    assert q_proj.linear.bits == QUANT_BITS

    out = tmp_path / "q4"
    run = run_train(out, *MLX, "--load_in_4bit", "true", "--max_steps", "3", "--save_steps", "100")
    assert run.returncode == 0, run.output[-3000:]
    assert json.loads((out / "final" / "mlx" / "adapter_config.json").read_text())["quantize"] is True
    losses = [e["loss"] for e in read_json(out / "final" / "trainer_state.json")["log_history"] if "loss" in e]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_an_mlx_run_logs_to_w_and_b_and_its_resume_continues_the_same_run(tmp_path):
    out = tmp_path / "wandb"
    args = (*MLX, "--max_steps", "4", "--save_steps", "2", "--report_to", "wandb")
    crashed = run_train(out, *args, env=base_env(TRAINKIT_FAULT_CRASH_AT_STEP=3,
                                                 TRAINKIT_FAULT_ONCE=tmp_path / "crashed-once"))
    assert crashed.returncode == 70, crashed.output[-3000:]
    resumed = run_train(out, *args)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert "⚠️ RESUME: Found checkpoint at step 2. Resuming training." in resumed.lines
    run_id = read_json(out / "wandb_run.json")["run_id"]
    assert len(list((out / "wandb").glob(f"offline-run-*-{run_id}"))) == 2, "both starts log to the same W&B run"


def test_more_steps_under_mlx_continues_the_finished_run_on_a_new_warmup_and_cosine_segment(straight, tmp_path):
    from trainkit.train.continuation import Continuation

    out = copy_run(straight[0], tmp_path / "more")
    run = run_train(out, *MLX, *STEPS, "--more_steps", "4")
    assert run.returncode == 0, run.output[-3000:]
    assert "⚠️ RESUME: Found checkpoint at step 6. Resuming training." in run.lines
    assert any(line.startswith("[CONTINUE] steps 6 -> 10 (+4)") for line in run.lines)
    state = read_json(out / "final" / "trainer_state.json")
    assert state["global_step"] == 10
    segment = Continuation(from_step=6, more_steps=4, warmup_steps=0)  # warmup: at most a tenth of 4
    rates = {e["step"]: e["learning_rate"] for e in state["log_history"] if "loss" in e and e["step"] > 6}
    assert rates == {step: pytest.approx(1e-3 * segment.factor(step - 1)) for step in (7, 8, 9, 10)}
    again = run_train(out, *MLX, *STEPS, "--more_steps", "4")
    assert again.returncode == 0 and read_json(out / "final" / "trainer_state.json")["global_step"] == 14
