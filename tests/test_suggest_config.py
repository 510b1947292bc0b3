"""scripts/suggest_config.py: a config that fits the machine, that the preflight accepts, with reasons."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from conftest import ROOT, TAGGED, base_env, load_script, train_in_process
from trainkit.preflight import environment
from trainkit.preflight.memory import GB, WARNING_FRACTION, Settings, estimate_from

SUGGEST = load_script("suggest_config").main
VALIDATE = load_script("validate_training_config").main
QWEN = "Qwen/Qwen2.5-7B-Instruct"
TINY = "models/tiny-chat"
DATA = ["--data", "data/sample/train.jsonl"]


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(environment, "hf_token_present", lambda: False)
    for name in [n for n in os.environ if n.startswith("RUNPOD_")]:
        monkeypatch.delenv(name)


def suggested(tmp_path, capfd, *args) -> tuple[dict, str]:
    path = tmp_path / "mine.yaml"
    code = SUGGEST([*args, "--output", str(path), "--output-dir", str(tmp_path / "out")])
    out = capfd.readouterr().out
    assert code == 0, out
    return yaml.safe_load(path.read_text()), out


def bf16_must_give_way(config: dict, budget_gb: float) -> bool:
    """Whether bf16 weights cannot fit the planning target even at batch 1 with activation checkpointing."""
    from trainkit.config.model_source import locate_model
    from trainkit.config.settings import detect_device
    from trainkit.core.report import Report
    from trainkit.preflight.checks import build_meta_model
    from trainkit.preflight.memory import describe

    model = build_meta_model(locate_model(config["model_name_or_path"]), Report())
    arch = describe(model, model.config, config["lora_target_modules"])
    smallest = estimate_from(arch, Settings(batch_size=1, max_length=config["max_length"], weight_bytes=2,
                                            load_in_4bit=False, lora_r=config["lora_r"],
                                            activation_checkpointing=True, lora_dropout=0.05, fused_lm_head=True,
                                            triton=detect_device() == "cuda"))
    return smallest.total > WARNING_FRACTION * budget_gb * GB


@pytest.mark.parametrize(
    ("model", "platform", "memory_gb"),
    [(QWEN, "h100", 80), (QWEN, "h100", 24), (QWEN, "h100", 16), (QWEN, "cpu", 96), (TINY, "cpu", 16)],
)
def test_a_suggested_config_passes_the_preflight_fits_its_budget_and_quantizes_only_when_it_must(
        model, platform, memory_gb, tmp_path, capfd):
    config, out = suggested(tmp_path, capfd, "--model", model, "--platform", platform,
                            "--memory-gb", str(memory_gb), *DATA)
    budget = config.get("memory_budget_gb", 70 if platform == "h100" else None)
    assert budget == pytest.approx(0.875 * memory_gb, abs=0.1)
    peak = float(out.split("memory: estimated peak ")[1].split(" GB")[0])
    assert peak <= WARNING_FRACTION * budget
    assert bool(config.get("load_in_4bit")) == (platform == "h100" and bf16_must_give_way(config, budget))
    assert config["lora_alpha"] == 2 * config["lora_r"]
    code = VALIDATE(["--config", str(tmp_path / "mine.yaml"), "--output_dir", str(tmp_path / "out")])
    checked = capfd.readouterr().out
    assert code == 0, checked
    assert not [line for line in checked.splitlines() if line.startswith("❌")]
    assert f"of the {budget:g} GB budget" in checked


@pytest.mark.parametrize(("memory_gb", "four_bit"), [(16, True), (24, True), (48, False)])
def test_a_mac_is_planned_for_mlx_in_its_working_set_with_a_4_bit_base_where_bf16_does_not_fit(
        memory_gb, four_bit, tmp_path, capfd):
    config, out = suggested(tmp_path, capfd, "--model", QWEN, "--platform", "m4", "--memory-gb", str(memory_gb),
                            *DATA)
    assert config["backend"] == "mlx"
    assert config["memory_budget_gb"] == pytest.approx(memory_gb * 2 / 3, abs=0.1)
    assert bool(config.get("load_in_4bit")) is four_bit
    assert ("[SUGGEST] QLoRA (load_in_4bit via MLX): bf16 weights 15.2 GB" in out) is four_bit
    peak = float(out.split("memory: estimated peak ")[1].split(" GB")[0])
    assert peak <= WARNING_FRACTION * config["memory_budget_gb"]
    code = VALIDATE(["--config", str(tmp_path / "mine.yaml"), "--output_dir", str(tmp_path / "out")])
    checked = capfd.readouterr().out
    assert code == 0, checked
    assert f"of the {config['memory_budget_gb']:g} GB budget (set by memory_budget_gb)" in checked


def test_a_macs_own_working_set_is_its_budget_when_planning_on_it(monkeypatch):
    from trainkit.config import settings
    from trainkit.preflight import gpu, suggest

    monkeypatch.setattr(settings, "detect_device", lambda: "mps")
    monkeypatch.setattr(suggest, "detect_memory_gb", lambda device: 24.0)
    monkeypatch.setattr(gpu, "recommended_working_set_bytes", lambda backend: 17.2e9 if backend == "mlx" else None)
    machine = suggest.machine_for("auto")
    assert (machine.platform, machine.budget_gb) == ("m4", 17.2)
    assert machine.budget_reason == "the GPU's recommended working set of this Mac's 24 GB"


def test_qwen_on_80_gb_trains_without_activation_checkpointing_because_it_fits(tmp_path, capfd):
    config, out = suggested(tmp_path, capfd, "--model", QWEN, "--platform", "h100", "--memory-gb", "80", *DATA)
    assert config["activation_checkpointing"] is False
    assert "load_in_4bit" not in config
    assert "memory_budget_gb" not in config  # the h100 platform budget already is 70 GB
    assert config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] == 16


def test_qwen_on_16_gb_says_why_it_chose_qlora(tmp_path, capfd):
    config, out = suggested(tmp_path, capfd, "--model", QWEN, "--platform", "h100", "--memory-gb", "16", *DATA)
    assert config["load_in_4bit"] is True
    assert "[SUGGEST] QLoRA (load_in_4bit via bitsandbytes): bf16 weights 15.2 GB" in out
    assert "QLoRA (load_in_4bit via bitsandbytes)" in (tmp_path / "mine.yaml").read_text()


def test_every_key_in_the_written_config_carries_a_reason(tmp_path, capfd):
    suggested(tmp_path, capfd, "--model", TINY, "--platform", "cpu", "--memory-gb", "8", *DATA)
    keys = [line for line in (tmp_path / "mine.yaml").read_text().splitlines() if line and line[0] != "#"]
    assert keys and all("  # " in line for line in keys), keys


def test_max_length_covers_the_data_and_max_steps_counts_epochs(tmp_path, capfd):
    config, out = suggested(tmp_path, capfd, "--model", TINY, "--platform", "cpu", "--memory-gb", "8", *DATA)
    assert "covers 320 of 320 examples (0 cut)" in (tmp_path / "mine.yaml").read_text()
    effective = config["per_device_train_batch_size"] * config["gradient_accumulation_steps"]
    assert config["max_steps"] == -(-3 * 320 // effective)
    assert "expected duration ~" in out


def test_hours_size_max_steps_by_the_throughput(tmp_path, capfd):
    config, _ = suggested(tmp_path, capfd, "--model", TINY, "--platform", "cpu", "--memory-gb", "8", *DATA,
                          "--hours", "0.05", "--tokens-per-second", "1000")
    effective = config["per_device_train_batch_size"] * config["gradient_accumulation_steps"]
    assert config["max_steps"] == pytest.approx(0.05 * 3600 * 1000 / (effective * 195), rel=0.05)


def test_hours_that_would_mean_dozens_of_epochs_are_capped_at_ten_and_said(tmp_path, capfd):
    config, out = suggested(tmp_path, capfd, "--model", TINY, "--platform", "cpu", "--memory-gb", "8", *DATA,
                            "--hours", "3", "--tokens-per-second", "1000")
    effective = config["per_device_train_batch_size"] * config["gradient_accumulation_steps"]
    assert config["max_steps"] == -(-10 * 320 // effective)
    assert "[SUGGEST] --hours 3 at ~1,000 tokens/s would be " in out and ": capped at 10 epochs (" in out


def test_the_command_line_beats_the_config_which_beats_the_preset_which_beats_the_suggestion(tmp_path, capfd):
    base = tmp_path / "base.yaml"
    base.write_text("lora_r: 32\nlora_alpha: 64\nmax_length: 384\n")
    config, out = suggested(tmp_path, capfd, "--model", TINY, "--platform", "cpu", "--memory-gb", "8", *DATA,
                            "--preset", "fast", "--config", str(base), "--set", "max_length=256")
    assert config["max_length"] == 256  # command line over the config's 384
    assert config["lora_r"] == 32  # config over the fast preset's 8
    assert config["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]  # preset over the suggestion
    assert "[SUGGEST] max_length: 256 (from the command line)" in out
    assert "[SUGGEST] lora_r: 32 (from the config)" in out


def test_a_model_that_cannot_fit_is_one_error_with_what_to_do(tmp_path, capfd):
    code = SUGGEST(["--model", QWEN, "--platform", "cpu", "--memory-gb", "16", *DATA,
                    "--output", str(tmp_path / "x.yaml")])
    out = capfd.readouterr().out
    assert code == 1
    assert [line for line in out.splitlines() if TAGGED.match(line)][-1].startswith(
        f"❌ ERROR: {QWEN} does not fit cpu with 16 GB")
    assert not (tmp_path / "x.yaml").exists()


def test_an_existing_output_is_kept_unless_forced(tmp_path, capfd):
    path = tmp_path / "mine.yaml"
    path.write_text("keep: me\n")
    code = SUGGEST(["--model", TINY, "--platform", "cpu", "--memory-gb", "8", "--output", str(path)])
    assert code == 1
    assert "❌ ERROR: " in capfd.readouterr().out and path.read_text() == "keep: me\n"


def test_next_free_keeps_an_existing_config_and_writes_beside_it_as_make_init_config_does(tmp_path, capfd):
    path = tmp_path / "mine.yaml"
    path.write_text("keep: me\n")
    args = ["--model", TINY, "--platform", "cpu", "--memory-gb", "8", "--output", str(path), "--next-free"]
    assert SUGGEST(args) == 0 and SUGGEST(args) == 0
    out = capfd.readouterr().out
    assert path.read_text() == "keep: me\n"
    assert (tmp_path / "mine-2.yaml").is_file() and (tmp_path / "mine-3.yaml").is_file()
    assert f"[SUGGEST] {path} already exists and is kept: writing {tmp_path / 'mine-3.yaml'}" in out
    assert "FORCE=1" in (ROOT / "Makefile").read_text().split("init-config:")[1].split("\n\n")[0]


def test_qlora_on_a_mac_under_torch_is_refused_by_the_preflight(tmp_path, capfd):
    code = VALIDATE(["--config", "configs/training_config_m4.yaml", "--output_dir", str(tmp_path / "o"),
                     "--no-data", "--backend", "torch"])
    out = capfd.readouterr().out
    assert code == 1
    assert "❌ ERROR: load_in_4bit needs CUDA (bitsandbytes), and this run is for m4" in out


def test_with_no_arguments_it_plans_this_cpu_with_the_throughput_it_measured_and_the_run_reaches_it(
        tmp_path, capfd, monkeypatch):
    from trainkit.config import settings as config_module
    from trainkit.preflight.duration import EVAL_SHARE

    monkeypatch.setattr(config_module, "detect_device", lambda: "cpu")
    config, out = suggested(tmp_path, capfd)
    assert config["platform"] == "cpu" and config["model_name_or_path"] == TINY
    assert config["train_file"] == "data/sample/train.jsonl"
    assert config["validation_file"] == "data/sample/validation.jsonl"
    assert "(this machine)" in out
    assert config["report_to"] == ["wandb"]
    plan = next(line for line in out.splitlines() if line.startswith("[SUGGEST] plan: "))
    assert "(measured on this CPU: 3 steps of trainkit's trainer at 16 x up to" in plan
    planned = float(plan.split(" tokens/s (")[0].rsplit("~", 1)[1].replace(",", ""))
    # eval_steps keeps evaluation (loss and tool-call generations) near its planned share of the run.
    reason = (tmp_path / "mine.yaml").read_text().split("\neval_steps: ")[1].split("\n")[0]
    assert config["eval_steps"] % config["save_steps"] == 0
    assert float(reason.split("~")[-1].split("%")[0]) <= 200 * EVAL_SHARE, reason

    log = tmp_path / "run.log"
    code = train_in_process(["--config", str(tmp_path / "mine.yaml"), "--output_dir", str(tmp_path / "run"),
                             "--max_steps", "5", "--eval_strategy", "no", "--report_to", "none"], base_env(), log)
    assert code == 0, log.read_text()[-2000:]
    reached = json.loads((tmp_path / "run/status.json").read_text())["tokens_per_second"]
    assert planned / 3 < reached < planned * 3, (planned, reached)


def test_off_this_machine_the_plan_says_its_throughput_is_an_estimate(tmp_path, capfd):
    _, out = suggested(tmp_path, capfd, "--model", TINY, "--platform", "cpu", "--memory-gb", "16", *DATA)
    assert "tokens/s (estimated from FLOPs, not measured; " in out
    _, out = suggested(tmp_path, capfd, "--model", TINY, "--platform", "cpu", "--memory-gb", "16",
                       "--tokens-per-second", "900", *DATA, "--force")
    assert "at ~900 tokens/s (given with --tokens-per-second; " in out
