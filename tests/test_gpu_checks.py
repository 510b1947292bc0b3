"""check_gpu: CUDA, MPS and CPU paths, memory grades and the recommended config, with the hardware injected."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import PYTHON, ROOT, TAGGED, base_env
from trainkit.config import settings as config
from trainkit.core.report import Report
from trainkit.preflight import gpu
from trainkit.preflight.gpu import GB, GpuProperties

# What torch reports for these cards: a little under the marketing size.
H100_80GB = GpuProperties("NVIDIA H100 80GB HBM3", 85_045_510_144, (9, 0))
A100_40GB = GpuProperties("NVIDIA A100-SXM4-40GB", 42_298_834_944, (8, 0))
RTX_4090 = GpuProperties("NVIDIA GeForce RTX 4090", 25_386_352_640, (8, 9))
T4 = GpuProperties("Tesla T4", 15_642_329_088, (7, 5))


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_gpu_cli = load_script("check_gpu")


METAL = {"available": True, "device_name": "Apple M4 Pro", "max_recommended_working_set_size": 21.3 * 2**30,
         "matmul_error": 1e-7}


def fake_machine(monkeypatch, *, cuda: GpuProperties | None = None, mac_gb: float | None = None,
                 matmul_error: float = 1e-7, metal: dict | None = METAL):
    monkeypatch.setattr(gpu, "mlx_metal_probe", lambda: metal)
    monkeypatch.setattr(config, "cuda_available", lambda: cuda is not None)
    monkeypatch.setattr(config, "mps_available", lambda: mac_gb is not None)
    monkeypatch.setattr(gpu, "gpu_properties", lambda index=0: cuda)
    monkeypatch.setattr(gpu, "gpu_count", lambda: 1 if cuda is not None else 0)
    monkeypatch.setattr(gpu, "unified_memory_bytes", lambda: int((mac_gb or 0) * GB))
    monkeypatch.setattr(gpu, "apple_chip", lambda: "Apple M4 Pro")
    monkeypatch.setattr(gpu, "run_matmul", lambda device: matmul_error)


def check(env: str = "auto", require_gpu: bool = False) -> tuple[str, Report]:
    report = Report("PREFLIGHT")
    device = gpu.check_gpu(report, env=env, require_gpu=require_gpu)
    return device, report


def text(findings) -> str:
    return "\n".join(f"{f.message} | {f.hint}" for f in findings)


@pytest.mark.parametrize(
    ("size_gb", "level"),
    [(16, "INSUFFICIENT"), (19.9, "INSUFFICIENT"), (20, "LOW"), (23.6, "LOW"), (24, "LOW"), (24.1, "ADEQUATE"),
     (32, "ADEQUATE"), (69.9, "ADEQUATE"), (70, "EXCELLENT"), (79.2, "EXCELLENT"), (139.8, "EXCELLENT")],
)
def test_memory_is_graded_at_the_spec_boundaries(size_gb, level):
    assert gpu.memory_level(int(size_gb * GB)) == level


def test_cuda_12_h100_80gb_is_excellent_and_gets_the_h100_config(monkeypatch):
    fake_machine(monkeypatch, cuda=H100_80GB)
    device, report = check("h100")
    assert device == "cuda"
    assert not report.errors and not report.warnings
    found = text(report.findings)
    assert "NVIDIA H100 80GB HBM3, 79.2 GB, compute capability 9.0" in found
    assert "GPU memory: 79.2 GB (EXCELLENT)" in found
    assert "matmul test on cuda passed" in found
    assert "recommended config: configs/training_config_h100.yaml |" in found


def test_an_a100_40gb_is_flagged_as_not_an_h100(monkeypatch):
    fake_machine(monkeypatch, cuda=A100_40GB)
    _, report = check("h100")
    assert not report.errors
    [warning] = report.warnings
    assert "expected an H100 80GB, found NVIDIA A100-SXM4-40GB with 39.4 GB" in warning.message
    assert "ADEQUATE" in text(report.findings)


def test_an_a100_is_not_compared_with_an_h100_unless_the_platform_is_h100(monkeypatch):
    fake_machine(monkeypatch, cuda=A100_40GB)
    _, report = check()
    assert not report.warnings
    assert "halve per_device_train_batch_size" in text(report.findings)


def test_a_24gb_card_is_low_and_gets_the_small_batch_config(monkeypatch):
    fake_machine(monkeypatch, cuda=RTX_4090)
    _, report = check()
    assert not report.errors
    [warning] = report.warnings
    assert "GPU memory: 23.6 GB (LOW)" in warning.message
    assert "recommended config: configs/training_config_m4.yaml" in text(report.findings)


def test_a_16gb_card_without_bf16_is_insufficient_and_warned_about_precision(monkeypatch):
    fake_machine(monkeypatch, cuda=T4)
    _, report = check()
    assert "INSUFFICIENT" in text(report.errors)
    assert "compute capability 7.5 has no bf16" in text(report.warnings)


def test_an_8gb_mac_is_too_small_even_for_a_4_bit_base(monkeypatch):
    fake_machine(monkeypatch, mac_gb=8)
    device, report = check("m4")
    assert device == "mps"
    [error] = report.errors
    assert error.message == "unified memory: 8.0 GB: a 7B LoRA needs at least 16 GB on a Mac, even with a 4-bit base"


@pytest.mark.parametrize("mac_gb", [16, 24])
def test_a_16_or_24gb_mac_trains_a_7b_with_the_4_bit_base_through_mlx(monkeypatch, mac_gb):
    fake_machine(monkeypatch, mac_gb=mac_gb)
    _, report = check("m4")
    assert not report.errors and not report.warnings
    assert f"unified memory: {mac_gb:.1f} GB: a 7B trains with the 4-bit base through MLX" in text(report.findings)


@pytest.mark.parametrize(("metal", "finding"), [
    (None, "warning MLX is not installed: backend: mlx (the m4 config's) cannot train here"),
    ({"available": False}, "error MLX is installed but sees no Metal GPU"),
    ({**METAL, "matmul_error": 0.5}, "error a matmul through MLX on Metal gave wrong results (relative error 5.0e-01)"),
    (METAL, "ok MLX on Metal: Apple M4 Pro, recommended working set 21.3 GB (the memory budget); matmul test passed"),
])
def test_the_mac_check_asks_mlx_for_metal_and_a_correct_matmul(monkeypatch, metal, finding):
    fake_machine(monkeypatch, mac_gb=32, metal=metal)
    _, report = check("m4")
    assert finding in [f"{f.level} {f.message}" for f in report.findings]


@pytest.mark.skipif(sys.platform == "darwin", reason="on a Mac, MLX sees Metal")
def test_mlx_s_cpu_build_answers_the_metal_probe_with_no_gpu():
    pytest.importorskip("mlx")
    assert gpu.mlx_metal_probe() == {"available": False}


def test_a_broken_mlx_install_is_one_error_naming_what_it_raised(monkeypatch):
    fake_machine(monkeypatch, mac_gb=32)

    def broken():
        raise OSError("libmlx.dylib: image not found")

    monkeypatch.setattr(gpu, "mlx_metal_probe", broken)
    _, report = check("m4")
    assert "MLX could not use the GPU: OSError: libmlx.dylib: image not found" in text(report.errors)


def test_a_32gb_m4_is_adequate_and_gets_the_m4_config(monkeypatch):
    fake_machine(monkeypatch, mac_gb=32)
    _, report = check("m4")
    assert not report.errors and not report.warnings
    found = text(report.findings)
    assert "Apple M4 Pro, 32.0 GB unified memory" in found and "matmul test on mps passed" in found
    assert "recommended config: configs/training_config_m4.yaml |" in found


def test_mps_missing_on_m4_is_an_error(monkeypatch):
    fake_machine(monkeypatch)
    _, report = check("m4")
    assert "MPS is not available" in text(report.errors)


def test_no_cuda_on_h100_is_an_error_even_with_an_apple_gpu(monkeypatch):
    fake_machine(monkeypatch, mac_gb=32)
    device, report = check("h100")
    assert device == "cpu"
    assert "no CUDA GPU found" in text(report.errors)


@pytest.mark.parametrize(
    ("env", "require_gpu", "level"),
    [("auto", False, "warning"), ("cpu", False, "ok"), ("auto", True, "error"), ("h100", False, "error"),
     ("m4", False, "error")],
)
def test_no_accelerator_is_an_error_only_when_one_is_demanded(monkeypatch, env, require_gpu, level):
    fake_machine(monkeypatch)
    _, report = check(env, require_gpu)
    assert report.findings[0].level == level
    assert bool(report.errors) == (level == "error")


@pytest.mark.parametrize("error", [0.5, float("nan")])
def test_a_wrong_matmul_result_is_an_error(monkeypatch, error):
    fake_machine(monkeypatch, cuda=H100_80GB, matmul_error=error)
    _, report = check()
    assert "a matmul on cuda gave wrong results" in text(report.errors)


def test_a_tf32_sized_matmul_error_passes(monkeypatch):
    fake_machine(monkeypatch, cuda=H100_80GB, matmul_error=2e-3)
    assert not check()[1].errors


def test_a_matmul_that_raises_is_an_error_not_a_traceback(monkeypatch):
    fake_machine(monkeypatch, cuda=H100_80GB)

    def broken(device):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device\nmore")

    monkeypatch.setattr(gpu, "run_matmul", broken)
    _, report = check()
    assert "a matmul on cuda failed: CUDA error: no kernel image is available" in text(report.errors)


def test_a_gpu_that_cannot_be_queried_is_an_error(monkeypatch):
    fake_machine(monkeypatch, cuda=H100_80GB)

    def broken():
        raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setattr(gpu, "gpu_properties", broken)
    assert "cannot query the CUDA GPU" in text(check()[1].errors)


def test_the_real_matmul_probe_is_exact_on_the_cpu():
    assert gpu.run_matmul("cpu") < 1e-5


def last_tagged(out: str) -> str:
    return [line for line in out.splitlines() if TAGGED.match(line)][-1]


def test_the_cli_passes_an_h100_and_ends_with_success(monkeypatch, capsys):
    fake_machine(monkeypatch, cuda=H100_80GB)
    assert check_gpu_cli.main(["--env", "h100"]) == 0
    out = capsys.readouterr().out
    assert "[PREFLIGHT] GPU memory: 79.2 GB (EXCELLENT)" in out
    assert last_tagged(out) == "✅ SUCCESS: CUDA GPU ready"


def test_the_cli_exits_0_with_the_not_an_h100_warning(monkeypatch, capsys):
    fake_machine(monkeypatch, cuda=A100_40GB)
    assert check_gpu_cli.main(["--env", "h100"]) == 0
    out = capsys.readouterr().out
    assert "⚠️ WARNING: expected an H100 80GB" in out and last_tagged(out) == "✅ SUCCESS: CUDA GPU ready"


def test_the_cli_exits_1_when_a_gpu_is_required_and_there_is_none(monkeypatch, capsys):
    fake_machine(monkeypatch)
    assert check_gpu_cli.main(["--require-gpu"]) == 1
    out = capsys.readouterr().out
    assert out.count("❌ ERROR:") == 1 and last_tagged(out).startswith("❌ ERROR: no GPU found")


def test_the_cli_exits_1_on_an_8gb_mac(monkeypatch, capsys):
    fake_machine(monkeypatch, mac_gb=8)
    assert check_gpu_cli.main(["--env", "m4"]) == 1
    assert "a 7B LoRA needs at least 16 GB on a Mac" in last_tagged(capsys.readouterr().out)


def test_a_bad_flag_is_one_error_line_and_exit_1_not_argparse_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_gpu_cli.main(["--gpus", "2"])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert out.count("❌ ERROR:") == 1 and "unrecognized arguments: --gpus 2" in out


def test_help_exits_0_with_usage_examples():
    proc = subprocess.run([PYTHON, "scripts/check_gpu.py", "--help"], cwd=ROOT, env=base_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "--require-gpu" in proc.stdout and "check_gpu.py --env h100" in proc.stdout


def fake_gpus(monkeypatch, cards: list[GpuProperties], broken: tuple[int, ...] = ()):
    """A machine with these CUDA GPUs; the matmul on each index in `broken` comes out wrong."""
    fake_machine(monkeypatch, cuda=cards[0])
    monkeypatch.setattr(gpu, "gpu_count", lambda: len(cards))
    monkeypatch.setattr(gpu, "gpu_properties", lambda index=0: cards[index])
    monkeypatch.setattr(gpu, "run_matmul", lambda device: 0.5 if int(device.split(":")[1]) in broken else 1e-7)


@pytest.mark.parametrize("count", [2, 4, 8])
def test_every_visible_gpu_is_checked_and_identical_h100s_pass(monkeypatch, count):
    fake_gpus(monkeypatch, [H100_80GB] * count)
    device, report = check("h100")
    assert device == "cuda" and not report.errors and not report.warnings, text(report.findings)
    oks = text(report.findings)
    assert all(f"CUDA GPU {i}: NVIDIA H100 80GB HBM3" in oks for i in range(count))
    assert oks.count("matmul test on cuda:") == count
    assert f"{count} identical GPUs: NVIDIA H100 80GB HBM3, 79 GB each" in oks


def test_a_mixed_set_of_gpus_is_an_error_naming_what_was_found(monkeypatch):
    fake_gpus(monkeypatch, [H100_80GB, H100_80GB, A100_40GB, H100_80GB])
    _, report = check("h100")
    errors = text(report.errors)
    assert "the 4 visible GPUs are not all the same: 1 x NVIDIA A100-SXM4-40GB 39 GB; 3 x NVIDIA H100 80GB HBM3 79 GB" \
        in errors
    assert "CUDA_VISIBLE_DEVICES" in errors
    assert "expected an H100 80GB, found NVIDIA A100-SXM4-40GB" in text(report.warnings), "sized for the smallest"


def test_a_degraded_gpu_in_a_set_of_8_is_an_error_naming_the_healthy_ones(monkeypatch):
    fake_gpus(monkeypatch, [H100_80GB] * 8, broken=(5,))
    _, report = check("h100")
    errors = text(report.errors)
    assert "a matmul on cuda:5 gave wrong results" in errors
    assert "1 of the 8 visible GPUs failed the health check (GPU 5)" in errors
    assert "CUDA_VISIBLE_DEVICES=0,1,2,3,4,6,7 and --gpus 7" in errors


@pytest.mark.parametrize(("backend", "override", "found", "budget"), [
    ("torch", None, 21.3e9, (21.3, "the GPU's recommended working set")),
    ("mlx", None, 10.7e9, (10.7, "the GPU's recommended working set")),
    ("mlx", "12", 10.7e9, (12.0, "set by memory_budget_gb")),
    ("torch", None, None, (28, "the m4 default")),
])
def test_a_macs_memory_budget_is_its_gpus_recommended_working_set_unless_memory_budget_gb_says(
        monkeypatch, backend, override, found, budget):
    asked = []
    monkeypatch.setattr(gpu, "recommended_working_set_bytes", lambda name: asked.append(name) or found)
    args = ["--config", "configs/training_config_m4.yaml", "--backend", backend]
    run = config.parse(args + (["--memory_budget_gb", override] if override else []))
    assert gpu.memory_budget_gb(run) == budget
    assert asked == ([] if override else [backend]), "the working set is asked of the backend that trains"


def test_the_working_set_is_only_asked_of_a_mac_and_cpu_and_h100_keep_their_defaults(monkeypatch):
    monkeypatch.setattr(gpu, "recommended_working_set_bytes", lambda name: pytest.fail("asked off a Mac run"))
    assert gpu.memory_budget_gb(config.parse(["--config", "configs/smoke.yaml"])) == (None, "the cpu default")
    h100 = config.parse(["--config", "configs/training_config_h100.yaml"])
    assert gpu.memory_budget_gb(h100) == (70, "the h100 default")
    monkeypatch.undo()
    if sys.platform != "darwin":
        assert gpu.recommended_working_set_bytes("mlx") is gpu.recommended_working_set_bytes("torch") is None
