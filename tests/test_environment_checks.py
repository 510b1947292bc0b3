"""validate_environment: Python, pins, CUDA/MPS and credentials, with the machine's facts injected."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from conftest import PYTHON, ROOT, TAGGED, base_env
from trainkit.config import settings as config
from trainkit.core import credentials, wandb_reach
from trainkit.core.report import Report
from trainkit.preflight import environment

PINS = {"torch": "2.13.0", "transformers": "5.23.0", "peft": "0.21.2", "trl": "1.16.0",
        "accelerate": "1.15.0", "datasets": "5.2.0", "wandb": "0.31.0"}
FAKE_HF_TOKEN = "hf_FAKEsecretTOKEN0123456789"
FAKE_WANDB_KEY = "0123456789abcdefFAKEwandbKEY0123456789ab"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate_environment_cli = load_script("validate_environment")


def fake_machine(monkeypatch, *, python=(3, 11, 7), versions=None, cuda=False, cuda_version=None, mps=False,
                 flash=False, flash_error=None, wandb=True, hf=True):
    versions = dict(PINS if versions is None else versions)
    monkeypatch.setattr(environment, "python_version", lambda: python)
    monkeypatch.setattr(environment, "installed_version", lambda package: versions.get(package))
    monkeypatch.setattr(environment, "cuda_version", lambda: cuda_version)
    monkeypatch.setattr(environment, "flash_attn_import_error", lambda: flash_error)
    monkeypatch.setattr(environment, "hf_token_present", lambda: "HF_TOKEN" if hf else None)
    monkeypatch.setattr(config, "cuda_available", lambda: cuda)
    monkeypatch.setattr(config, "mps_available", lambda: mps)
    monkeypatch.setattr(config, "flash_attn_installed", lambda: flash)
    monkeypatch.setattr(credentials, "wandb_key_present", lambda: "WANDB_API_KEY" if wandb else None)
    # W&B online, as on a pod; the key check's answer is a platform fact too (tests/test_wandb_fallback.py asks
    # real stand-ins).
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb_reach, "probe", lambda timeout: wandb_reach.Reach(True, "ok", "api.wandb.ai accepted "
                                                                                          "the API key"))


def check(env: str) -> Report:
    report = Report("PREFLIGHT")
    environment.validate_environment(env, report)
    return report


def messages(findings) -> str:
    return "\n".join(f"{f.message} | {f.hint}" for f in findings)


def h100_pod(monkeypatch, **overrides):
    fake_machine(monkeypatch, **{"cuda": True, "cuda_version": "12.4", "flash": True, **overrides})


def test_the_pins_come_from_requirements_local():
    pins = environment.read_pins(environment.REQUIREMENTS)
    assert {name: pins[name] for name in PINS} == PINS
    assert pins["huggingface-hub"] == "2.4.0"  # names are normalised: huggingface_hub in the file


def test_a_matching_machine_passes_on_cpu(monkeypatch):
    fake_machine(monkeypatch)
    report = check("cpu")
    assert not report.errors and not report.warnings


def test_python_3_9_is_an_error(monkeypatch):
    fake_machine(monkeypatch, python=(3, 9, 18))
    assert "Python 3.9.18 is too old" in messages(check("cpu").errors)


def test_a_version_mismatch_is_a_warning_naming_both_versions_and_the_fix(monkeypatch):
    fake_machine(monkeypatch, versions={**PINS, "transformers": "5.20.1"})
    report = check("cpu")
    assert not report.errors
    [warning] = report.warnings
    assert "transformers 5.20.1" in warning.message and "5.23.0" in warning.message
    assert "pip install -r requirements-local.txt" in warning.hint


def test_a_cuda_build_of_the_pinned_torch_matches_its_pin(monkeypatch):
    fake_machine(monkeypatch, versions={**PINS, "torch": "2.13.0+cu124"})
    assert not check("cpu").warnings


def test_a_missing_package_is_an_error(monkeypatch):
    fake_machine(monkeypatch, versions={k: v for k, v in PINS.items() if k != "peft"})
    [error] = check("cpu").errors
    assert error.message == "peft is not installed"
    assert "pip install -r requirements-local.txt" in error.hint


def test_missing_torch_on_h100_skips_the_cuda_probes_instead_of_crashing(monkeypatch):
    fake_machine(monkeypatch, versions={k: v for k, v in PINS.items() if k != "torch"})
    monkeypatch.setattr(config, "cuda_available", lambda: pytest.fail("probed CUDA without torch"))
    assert [e.message for e in check("h100").errors] == ["torch is not installed"]


def test_an_unreadable_requirements_file_is_an_error(monkeypatch, tmp_path):
    fake_machine(monkeypatch)
    report = Report()
    environment.validate_environment("cpu", report, tmp_path / "nope.txt")
    assert "cannot read the version pins" in messages(report.errors)


def test_cuda_12_4_with_flash_attn_passes_on_h100(monkeypatch):
    h100_pod(monkeypatch)
    report = check("h100")
    assert not report.errors and not report.warnings
    assert "CUDA 12.4" in [f.message for f in report.findings]


def test_cuda_11_8_is_an_error_on_h100(monkeypatch):
    h100_pod(monkeypatch, cuda_version="11.8")
    [error] = check("h100").errors
    assert "CUDA 11.8 is too old" in error.message and "12.1" in error.message


def test_cuda_12_1_is_new_enough(monkeypatch):
    h100_pod(monkeypatch, cuda_version="12.1")
    assert not check("h100").errors


def test_no_cuda_on_h100_is_an_error(monkeypatch):
    fake_machine(monkeypatch, cuda=False)
    assert "CUDA is not available" in messages(check("h100").errors)


def test_a_cpu_build_of_torch_on_a_gpu_machine_is_an_error(monkeypatch):
    h100_pod(monkeypatch, cuda_version=None)
    assert "CPU-only build" in messages(check("h100").errors)


def test_neither_kernels_nor_flash_attn_is_a_warning_that_training_uses_sdpa(monkeypatch):
    from trainkit.config import attention

    h100_pod(monkeypatch, flash=False)
    monkeypatch.setattr(attention, "kernels_version", lambda: None)
    report = check("h100")
    assert not report.errors
    [warning] = report.warnings
    assert warning.message == ("no flash attention here: no kernels package (pip install kernels==0.18.3; setup "
                               "installs it), and no flash-attn package: training uses SDPA attention (slower, more "
                               "memory)")
    assert "--no-build-isolation" not in warning.hint, "never point at an unasked source build"


def test_the_pinned_kernels_is_all_the_pod_needs_for_flash_attention(monkeypatch):
    from trainkit.config import attention

    h100_pod(monkeypatch, flash=False)
    monkeypatch.setattr(attention, "kernels_version", lambda: "0.18.3")
    report = check("h100")
    assert not report.errors and not report.warnings
    assert "kernels 0.18.3: attention from the Hub's flash-attn kernels (no wheel needed)" in messages(report.findings)


def test_flash_attn_that_is_found_but_fails_to_import_is_an_error(monkeypatch):
    h100_pod(monkeypatch, flash_error="ImportError: undefined symbol: _ZN3c104cuda9SetDevice")
    [error] = check("h100").errors
    assert "does not import" in error.message and "undefined symbol" in error.message
    assert "--force-reinstall" in error.hint


def test_mps_missing_on_m4_is_an_error(monkeypatch):
    fake_machine(monkeypatch, mps=False)
    assert "MPS is not available" in messages(check("m4").errors)


def test_mps_without_the_fallback_variable_warns_that_the_train_script_sets_it(monkeypatch):
    fake_machine(monkeypatch, mps=True)
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    report = check("m4")
    assert not report.errors
    [warning] = report.warnings
    assert "PYTORCH_ENABLE_MPS_FALLBACK" in warning.message and "train_m4_local.sh" in warning.hint


def test_mps_with_the_fallback_variable_passes_on_m4(monkeypatch):
    fake_machine(monkeypatch, mps=True)
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    report = check("m4")
    assert not report.errors and not report.warnings


def test_missing_credentials_are_warnings_that_say_how_to_set_them(monkeypatch):
    fake_machine(monkeypatch, wandb=False, hf=False)
    report = check("cpu")
    assert not report.errors
    wandb_warning, hf_warning = report.warnings
    assert "offline" in wandb_warning.message and "WANDB_API_KEY" in wandb_warning.hint
    assert "Hugging Face token" in hf_warning.message and "HF_TOKEN" in hf_warning.hint


@pytest.mark.parametrize("variable", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"])
def test_the_hf_token_is_found_in_either_environment_variable(monkeypatch, variable):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv(variable, FAKE_HF_TOKEN)
    assert environment.hf_token_present() == variable


@pytest.mark.parametrize(
    ("model", "token", "cached", "verdict"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", False, False, "error"),
        ("meta-llama/Llama-3.1-8B-Instruct", True, False, "ok"),
        ("meta-llama/Llama-3.1-8B-Instruct", False, True, None),
        ("Qwen/Qwen2.5-7B-Instruct", False, False, None),
        ("models/tiny-chat", False, False, None),
    ],
)
def test_a_gated_model_needs_a_token_unless_it_is_cached(monkeypatch, model, token, cached, verdict):
    monkeypatch.setattr(environment, "hf_token_present", lambda: token)
    report = Report()
    environment.check_model_access(model, report, cached=cached)
    assert [f.level for f in report.findings] == ([verdict] if verdict else [])
    if verdict == "error":
        assert "gated" in report.errors[0].message and "HF_TOKEN" in report.errors[0].hint


def test_secrets_are_never_printed(monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_HF_TOKEN)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    assert validate_environment_cli.main(["--env", "cpu"]) == 0
    report = Report()
    environment.check_model_access("meta-llama/Llama-3.1-8B-Instruct", report)
    report.finish("done")
    out = capsys.readouterr().out
    assert "W&B API key found (WANDB_API_KEY)" in out and "Hugging Face token found (HF_TOKEN)" in out
    assert FAKE_HF_TOKEN not in out and FAKE_WANDB_KEY not in out


def last_tagged(out: str) -> str:
    return [line for line in out.splitlines() if TAGGED.match(line)][-1]


def test_the_cli_exits_0_with_warnings_and_ends_with_success(monkeypatch, capsys):
    fake_machine(monkeypatch, wandb=False)
    assert validate_environment_cli.main(["--env=cpu"]) == 0
    out = capsys.readouterr().out
    assert "⚠️ WARNING: no W&B API key" in out
    assert last_tagged(out) == "✅ SUCCESS: environment ready for cpu"


def test_the_cli_exits_1_on_an_error_and_ends_with_it(monkeypatch, capsys):
    h100_pod(monkeypatch, cuda_version="11.8")
    assert validate_environment_cli.main(["--env", "h100"]) == 1
    out = capsys.readouterr().out
    assert last_tagged(out).startswith("❌ ERROR: CUDA 11.8 is too old")
    assert out.count("❌ ERROR:") == 1 and "✅" not in out


def test_the_cli_picks_the_platform_from_the_device(monkeypatch, capsys):
    fake_machine(monkeypatch, mps=True)
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    assert validate_environment_cli.main([]) == 0
    assert last_tagged(capsys.readouterr().out) == "✅ SUCCESS: environment ready for m4"


def test_an_unknown_platform_is_one_error_line_and_exit_1_not_argparse_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        validate_environment_cli.main(["--env", "tpu"])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert out.count("❌ ERROR:") == 1 and "invalid choice: 'tpu'" in out


def run_cli(*args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "scripts/validate_environment.py", *args], cwd=ROOT, env=base_env(**env),
                          capture_output=True, text=True, timeout=60)


def test_help_describes_the_platforms():
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "--env" in proc.stdout and "h100" in proc.stdout and "validate_environment.py --env=m4" in proc.stdout


def test_this_machine_passes_for_cpu_without_printing_its_secrets():
    proc = run_cli("--env", "cpu", HF_TOKEN=FAKE_HF_TOKEN, WANDB_API_KEY=FAKE_WANDB_KEY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert last_tagged(proc.stdout) == "✅ SUCCESS: environment ready for cpu"
    assert "Traceback" not in proc.stderr
    assert FAKE_HF_TOKEN not in proc.stdout + proc.stderr and FAKE_WANDB_KEY not in proc.stdout + proc.stderr


def test_with_wandb_mode_offline_a_missing_w_and_b_key_is_no_warning(monkeypatch):
    from trainkit.core import credentials

    monkeypatch.setattr(credentials, "wandb_key_present", lambda: None)
    monkeypatch.setenv("WANDB_MODE", "offline")
    report = Report()
    environment.check_credentials(report)
    assert "W&B: WANDB_MODE=offline (no key needed)" in [f.message for f in report.findings]
    assert not [w for w in report.warnings if "W&B" in w.message]
    monkeypatch.delenv("WANDB_MODE")
    report = Report()
    environment.check_credentials(report)
    assert [w.message for w in report.warnings if "W&B" in w.message] == ["no W&B API key: training will log offline"]
