"""The pod's NVIDIA driver picks the torch wheel before the env is built; too old a driver is refused."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import PYTHON, ROOT, base_env
from trainkit.preflight import torch_build
from trainkit.preflight.torch_build import FALLBACK_BUILD, PYPI_BUILD, DriverTooOld, choose, spec_for

SPEC = (ROOT / "environment-remote.yml").read_text(encoding="utf-8")


@pytest.mark.parametrize(("driver", "build"), [
    ("580.65.06", PYPI_BUILD), ("580.82.07", PYPI_BUILD), ("590.44.01", PYPI_BUILD),
    ("575.57.08", FALLBACK_BUILD), ("550.54.15", FALLBACK_BUILD), ("535.104.05", FALLBACK_BUILD),
    ("530.30.02", FALLBACK_BUILD),
])
def test_the_driver_picks_the_pypi_wheel_or_the_cuda_12_8_wheel(driver, build):
    assert choose(driver) is build


@pytest.mark.parametrize("driver", ["530.30.01", "525.60.13", "520.61.05", "470.82.01"])
def test_a_driver_older_than_any_cuda_12_build_is_refused(driver):
    with pytest.raises(DriverTooOld, match=f"NVIDIA driver {driver} is too old for torch 2.13.0"):
        choose(driver)


@pytest.mark.parametrize("text", ["", "N/A", "550.54.15.1", "five"])
def test_what_is_not_a_driver_version_is_a_value_error(text):
    with pytest.raises(ValueError):
        choose(text)


def test_the_pinned_torch_is_the_one_environment_remote_yml_pins():
    assert f"      - torch=={torch_build.TORCH_VERSION}\n" in SPEC


def test_the_pypi_build_leaves_the_spec_as_it_is():
    assert spec_for(SPEC, PYPI_BUILD) == SPEC


def test_the_cuda_12_8_build_pins_the_local_version_and_adds_pytorchs_index_in_the_pip_section():
    text = spec_for(SPEC, FALLBACK_BUILD)
    assert "      - --extra-index-url https://download.pytorch.org/whl/cu128\n      - torch==2.13.0+cu128\n" in text
    assert "torch==2.13.0\n" not in text
    assert text.replace("      - --extra-index-url https://download.pytorch.org/whl/cu128\n", "").replace(
        "torch==2.13.0+cu128", "torch==2.13.0") == SPEC


def test_a_spec_without_a_torch_pin_is_an_error():
    with pytest.raises(ValueError, match="no `- torch=="):
        spec_for("dependencies:\n  - pip:\n      - numpy==2.4.6\n", FALLBACK_BUILD)


def choose_cli(tmp_path, driver):
    out = tmp_path / "env.yml"
    proc = subprocess.run([PYTHON, "-m", "trainkit.preflight.torch_build", "choose", "--driver", driver, "--spec",
                           str(ROOT / "environment-remote.yml"), "--write", str(out)],
                          cwd=ROOT, env=base_env(NO_COLOR="1"), capture_output=True, text=True, timeout=60)
    return proc, out


def test_choose_on_a_new_driver_says_pypi_and_writes_the_spec_unchanged(tmp_path):
    proc, out = choose_cli(tmp_path, "580.82.07")
    assert proc.returncode == 0
    assert proc.stdout == ("[SETUP-H100] NVIDIA driver 580.82.07: torch 2.13.0 from PyPI "
                           "(built for CUDA 13.0, needs driver >= 580.65.06)\n")
    assert out.read_text() == SPEC


def test_choose_on_an_older_driver_names_the_cuda_12_8_wheel_and_its_index(tmp_path):
    proc, out = choose_cli(tmp_path, "550.54.15")
    assert proc.returncode == 0
    assert "installing 2.13.0+cu128 (CUDA 12.8) from https://download.pytorch.org/whl/cu128" in proc.stdout
    assert "torch==2.13.0+cu128" in out.read_text()


def test_choose_on_a_too_old_driver_exits_1_with_the_template_to_pick_and_writes_nothing(tmp_path):
    proc, out = choose_cli(tmp_path, "470.82.01")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[-2].startswith("❌ ERROR: NVIDIA driver 470.82.01 is too old for torch 2.13.0")
    assert re.match(r"  ↳ deploy the pod from a RunPod PyTorch template whose `nvidia-smi` shows driver 580", lines[-1])
    assert not out.exists()


def test_choose_never_imports_torch_or_yaml():
    code = ("import sys, trainkit.preflight.torch_build as t; t.choose('550.54.15'); "
            "print('torch' in sys.modules, 'yaml' in sys.modules)")
    proc = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False False"


def test_verify_on_a_cpu_only_torch_is_an_error_before_training_is_paid_for():
    proc = subprocess.run([PYTHON, "-m", "trainkit.preflight.torch_build", "verify"], cwd=ROOT,
                          env=base_env(NO_COLOR="1"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "is a CPU-only build" in proc.stdout.splitlines()[-2]


def test_the_bf16_matmul_check_is_accurate_where_it_runs():
    assert torch_build.bf16_matmul_error("cpu") < torch_build.BF16_TOLERANCE


def test_the_index_check_finds_the_pinned_wheel_for_the_envs_python_on_both_indexes(monkeypatch):
    monkeypatch.setenv(torch_build.INDEX_ROOT_ENV, f"file://{ROOT / 'tests' / 'fixtures' / 'wheel-index'}")
    tag = torch_build.python_tag(SPEC)
    assert tag == "cp311"
    assert torch_build.check_index(PYPI_BUILD, tag) is None
    assert torch_build.check_index(FALLBACK_BUILD, tag) is None


def test_an_index_without_the_pinned_torch_for_this_python_is_refused_before_conda(monkeypatch, capsys):
    monkeypatch.setenv(torch_build.INDEX_ROOT_ENV, f"file://{ROOT / 'tests' / 'fixtures' / 'wheel-index'}")
    missing = torch_build.check_index(FALLBACK_BUILD, "cp313")
    assert missing == ("file://" + str(ROOT / "tests/fixtures/wheel-index/download.pytorch.org/whl/cu128/torch/"
                       "index.html") + " lists no torch 2.13.0+cu128 wheel for cp313 on Linux x86_64: conda would "
                       "fail after minutes of downloads")
    page = "<a>torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl</a><a>torch-2.13.0-cp311-cp311-win_amd64.whl</a>"
    assert not torch_build.lists_wheel(page, PYPI_BUILD, "cp311"), "only a Linux x86_64 wheel counts"


def test_an_index_that_cannot_be_reached_is_a_warning_and_the_build_goes_on(monkeypatch, capsys):
    monkeypatch.setenv(torch_build.INDEX_ROOT_ENV, "file:///nonexistent-index")
    assert torch_build.check_index(PYPI_BUILD, "cp311") is None
    assert capsys.readouterr().out.startswith("⚠️ WARNING: could not ask file:///nonexistent-index/pypi.org/simple/")


def test_trls_loss_kernel_check_agrees_with_cross_entropy_on_the_cpu_path():
    # On CUDA this runs TRL's Triton kernel; here the same function folds the tiles with torch ops.
    assert torch_build.loss_kernel_error("cpu") < torch_build.LOSS_TOLERANCE
