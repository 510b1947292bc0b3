"""scripts/benchmark.py on CPU: both runs train a few steps and leave sane JSON behind."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import PYTHON, ROOT, base_env
from trainkit.bench import flops_per_token, peak_flops, summarize, table

FIELDS = ("tokens_per_second", "padded_tokens_per_second", "padding_share", "step_time_median_s",
          "time_to_first_step_s", "peak_memory_bytes", "estimate_bytes", "estimate_error_pct", "mfu",
          "mfu_formula", "settings", "versions", "device_name", "steps")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([PYTHON, "scripts/benchmark.py", "--steps", "3", "--skip", "1", "--out", str(out)],
                          cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=600)
    return proc, out


def test_the_benchmark_prints_a_side_by_side_table_and_a_success_verdict(bench_run):
    proc, _ = bench_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("non-padding tokens/s") and line.endswith("x") for line in lines)
    assert any(line.startswith("MFU =") for line in lines)
    assert lines[-1].startswith("✅ SUCCESS: benchmark complete: trainkit ")


def test_each_run_writes_one_json_with_sane_figures(bench_run):
    _, out = bench_run
    results = {json.loads(p.read_text())["run"]: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(results) == ["trainkit", "trl"]
    for result in results.values():
        assert all(field in result for field in FIELDS)
        assert result["tokens_per_second"] > 0 and result["padded_tokens_per_second"] >= result["tokens_per_second"]
        assert 0 <= result["padding_share"] < 1
        assert result["peak_memory_bytes"] > 0 and result["time_to_first_step_s"] > 0
        assert result["mfu"] is None, "no peak FLOP/s on CPU"
        assert len(result["steps"]) == 3
    assert results["trainkit"]["settings"]["padding_free"] and results["trainkit"]["padding_share"] == 0
    assert not results["trl"]["settings"]["padding_free"] and results["trl"]["settings"]["activation_checkpointing"]
    assert not results["trainkit"]["settings"]["activation_checkpointing"], "no memory budget on CPU: auto is off"


def test_mfu_counts_4n_per_token_for_lora_and_6n_with_recompute():
    assert flops_per_token(10, recompute=False) == 40
    assert flops_per_token(10, recompute=True) == 60
    result = summarize({
        "steps": [{"seconds": 9.0, "real_tokens": 1, "padded_tokens": 1}] + [
            {"seconds": 2.0, "real_tokens": 1000, "padded_tokens": 1250}] * 3,
        "skip": 1, "params": 7_000_000_000, "settings": {"activation_checkpointing": False},
        "peak_flops": peak_flops("NVIDIA H100 80GB HBM3"), "peak_memory_bytes": 50e9, "estimate_bytes": 55e9,
    })
    assert result["tokens_per_second"] == 500 and result["padded_tokens_per_second"] == 625
    assert result["tokens_per_second_mean"] == 500
    assert result["padding_share"] == pytest.approx(0.2)
    assert result["mfu"] == pytest.approx(4 * 7e9 * 1000 / 2.0 / 989e12)
    assert result["estimate_error_pct"] == pytest.approx(10)


@pytest.mark.parametrize(("name", "flops"), [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                             ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                             ("Tesla T4", None), (None, None)])
def test_the_peak_is_the_gpus_dense_bf16_figure_or_none(name, flops):
    assert peak_flops(name) == flops


def test_a_run_that_fails_is_an_error_naming_its_log(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs" / "bench_cpu.yaml").read_text().replace("lora_r: 8", "lora_r: 0"))
    proc = subprocess.run([PYTHON, "scripts/benchmark.py", "--config", str(bad), "--steps", "2", "--skip", "1",
                           "--runs", "trainkit", "--out", str(tmp_path / "out")],
                          cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout
    assert "❌ ERROR: the trainkit benchmark run failed (exit 1)" in proc.stdout


def test_steps_must_exceed_the_skipped_ones():
    proc = subprocess.run([PYTHON, "scripts/benchmark.py", "--steps", "3", "--skip", "3"],
                          cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout.startswith("❌ ERROR: --steps (3) must be larger than --skip (3)")


def test_the_table_puts_ratios_beside_the_two_runs():
    run = {"label": "x", "tokens_per_second": 200.0, "padded_tokens_per_second": 200.0, "padding_share": 0.0,
           "tokens_per_step": 10, "step_time_median_s": 1.0, "time_to_first_step_s": 5.0, "peak_memory_bytes": 1e9,
           "estimate_bytes": None, "estimate_error_pct": None, "achieved_tflops": 0.0, "mfu": None,
           "settings": {"activation_checkpointing": False, "padding_free": True, "attn_implementation": "sdpa"}}
    lines = table([run, {**run, "label": "y", "tokens_per_second": 100.0}])
    assert lines[1].split()[-1] == "2.00x"


def test_rates_are_medians_so_one_step_slowed_by_a_busy_machine_does_not_move_them():
    steps = [{"seconds": 1.0, "real_tokens": 100, "padded_tokens": 100}] * 4
    result = summarize({"steps": steps + [{"seconds": 50.0, "real_tokens": 100, "padded_tokens": 100}], "skip": 0,
                        "params": 1, "settings": {"activation_checkpointing": True}, "peak_flops": None,
                        "peak_memory_bytes": 1, "estimate_bytes": None})
    assert result["tokens_per_second"] == 100
    assert result["tokens_per_second_mean"] == pytest.approx(500 / 54)


def test_the_gpu_path_random_weights_and_synthetic_tokens_runs_on_cpu_with_the_tiny_architecture(tmp_path):
    proc = subprocess.run([PYTHON, "scripts/benchmark.py", "--architecture", "models/tiny-chat", "--runs", "trainkit",
                           "--steps", "2", "--skip", "1", "--out", str(tmp_path)],
                          cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (result,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert result["model"] == "tiny-chat (random weights, synthetic data)"
    assert result["tokens_per_second"] > 0 and result["padding_share"] == 0


def test_the_mlx_run_trains_random_weights_of_an_architecture_on_synthetic_tokens(tmp_path):
    pytest.importorskip("mlx_lm")
    proc = subprocess.run([PYTHON, "scripts/benchmark.py", "--architecture", "models/tiny-chat", "--runs", "mlx",
                           "--steps", "3", "--skip", "1", "--out", str(tmp_path)],
                          cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (result,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert (result["run"], result["label"]) == ("mlx", "trainkit mlx")
    assert result["model"] == "tiny-chat (random weights, synthetic data)"
    assert result["settings"]["attn_implementation"] == "mlx" and not result["settings"]["packing"]
    assert result["tokens_per_second"] > 0 and 0 <= result["padding_share"] < 1
    assert len(result["steps"]) == 3 and all(s["real_tokens"] > 0 for s in result["steps"])
    assert "mlx" in result["versions"] and all(field in result for field in FIELDS)


def test_on_a_mac_make_bench_compares_the_torch_backend_on_mps_with_mlx(monkeypatch):
    import importlib.util
    import sys

    from trainkit import bench

    monkeypatch.setattr(bench, "cuda_available", lambda: False)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert (bench.default_runs(), bench.default_config()) == ("trainkit,mlx", "configs/bench_m4.yaml")
    monkeypatch.setattr(sys, "platform", "linux")
    assert (bench.default_runs(), bench.default_config()) == ("trainkit,trl", "configs/bench_cpu.yaml")
    monkeypatch.setattr(bench, "cuda_available", lambda: True)
    assert (bench.default_runs(), bench.default_config()) == ("trainkit,padded,trl",
                                                              "configs/training_config_h100.yaml")


def test_the_padded_run_trains_trainkits_settings_with_packing_off(tmp_path):
    proc = subprocess.run([PYTHON, "scripts/benchmark.py", "--runs", "padded", "--steps", "3", "--skip", "1",
                           "--out", str(tmp_path)], cwd=ROOT, env=base_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (result,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert (result["run"], result["label"]) == ("padded", "trainkit padded")
    assert not result["settings"]["packing"] and not result["settings"]["padding_free"]
    assert result["padding_share"] > 0, "one example per row: the batch is padded"
