"""check_storage: free space, the disk a run needs, and RunPod's persistent volume, with the disk injected."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pytest

from conftest import PYTHON, ROOT, TAGGED, base_env
from trainkit.core.report import Report
from trainkit.preflight import storage
from trainkit.preflight.storage import GB


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_storage_cli = load_script("check_storage")


def fake_disk(monkeypatch, free_gb: float, total_gb: float = 200, seen: list | None = None):
    def disk_usage(path):
        if seen is not None:
            seen.append(path)
        return shutil._ntuple_diskusage(int(total_gb * GB), int((total_gb - free_gb) * GB), int(free_gb * GB))

    monkeypatch.setattr(storage, "disk_usage", disk_usage)


@pytest.fixture
def off_runpod(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("RUNPOD_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def volume(tmp_path, monkeypatch):
    """A stand-in for RunPod's /workspace."""
    path = tmp_path / "workspace"
    path.mkdir()
    monkeypatch.setattr(storage, "PERSISTENT_VOLUME", path)
    return path


def text(findings) -> str:
    return "\n".join(f"{f.message} | {f.hint}" for f in findings)


def last_tagged(out: str) -> str:
    return [line for line in out.splitlines() if TAGGED.match(line)][-1]


@pytest.mark.parametrize(("free_gb", "level"), [(10, "error"), (49.9, "error"), (50, "warning"), (99, "warning"),
                                                (100, "ok"), (500, "ok")])
def test_free_space_is_graded_against_50_gb_required_and_100_recommended(monkeypatch, free_gb, level):
    fake_disk(monkeypatch, free_gb)
    report = Report()
    storage.check_free_space("/data", report)
    [finding] = report.findings
    assert finding.level == level


def test_a_path_that_does_not_exist_yet_is_measured_on_its_nearest_parent(monkeypatch, tmp_path):
    seen = []
    fake_disk(monkeypatch, 120, seen=seen)
    storage.check_free_space(tmp_path / "outputs" / "run-1", Report())
    assert seen == [tmp_path]


def test_disk_below_the_minimum_exits_1_with_the_error_last(monkeypatch, capsys, off_runpod):
    fake_disk(monkeypatch, 12.5)
    assert check_storage_cli.main(["--path", "/data"]) == 1
    out = capsys.readouterr().out
    assert last_tagged(out) == "❌ ERROR: only 12.5 GB free of 200.0 GB on /data; training needs at least 50 GB"
    assert "✅" not in out


def test_disk_between_minimum_and_recommended_warns_and_exits_0(monkeypatch, capsys, off_runpod):
    fake_disk(monkeypatch, 30)
    assert check_storage_cli.main(["--path", "/data", "--min-gb", "20", "--recommended-gb", "40"]) == 0
    out = capsys.readouterr().out
    assert "⚠️ WARNING: 30.0 GB free of 200.0 GB on /data: enough for one run, below the recommended 40 GB" in out
    assert last_tagged(out) == "✅ SUCCESS: storage: 30.0 GB free on /data"


def test_plenty_of_disk_passes_quietly(monkeypatch, capsys, off_runpod):
    fake_disk(monkeypatch, 150)
    assert check_storage_cli.main([]) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out and last_tagged(out) == "✅ SUCCESS: storage: 150.0 GB free on ."


def test_a_negative_minimum_is_one_error_line_and_exit_1_not_argparse_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_storage_cli.main(["--min-gb", "-5"])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert out.count("❌ ERROR:") == 1 and "must be a number of GB >= 0" in out


def test_disk_needed_counts_the_model_only_when_it_is_not_cached():
    checkpoint = 500 * 2**20
    fresh = storage.disk_needed_bytes(15 * GB, False, save_total_limit=3, checkpoint_bytes=checkpoint, margin=GB)
    cached = storage.disk_needed_bytes(15 * GB, True, save_total_limit=3, checkpoint_bytes=checkpoint, margin=GB)
    # One checkpoint more than the limit exists while the newest is written and the oldest not yet rotated.
    assert cached == 4 * checkpoint + GB
    assert fresh - cached == 15 * GB


def test_a_lora_checkpoint_holds_the_adapter_and_two_adam_moments_in_float32():
    assert storage.lora_checkpoint_bytes(40_000_000, tokenizer_bytes=0) == 40_000_000 * 12


def test_a_run_that_does_not_fit_is_an_error(monkeypatch):
    fake_disk(monkeypatch, 10)
    report = Report()
    assert not storage.check_disk_for_run("/data/out", 25 * GB, report)
    [error] = report.errors
    assert "needs about 25.0 GB for this run, but only 10.0 GB is free" in error.message
    assert "save_total_limit" in error.hint


def test_a_run_that_fits_passes(monkeypatch):
    fake_disk(monkeypatch, 100)
    report = Report()
    assert storage.check_disk_for_run("/data/out", 25 * GB, report)
    assert report.findings[0].level == "ok"


def test_a_run_is_checked_per_disk_when_the_hf_cache_is_elsewhere(monkeypatch, tmp_path):
    free = {tmp_path / "cache": 10 * GB, tmp_path / "out": 100 * GB}
    for path in free:
        path.mkdir()
    monkeypatch.setattr(storage, "disk_usage", lambda p: shutil._ntuple_diskusage(200 * GB, 0, free[p]))
    monkeypatch.setattr(storage, "same_filesystem", lambda a, b: False)
    report = Report()
    ok = storage.check_run_disk(tmp_path / "out", report, model_bytes=15 * GB, model_cached=False, save_total_limit=3,
                                checkpoint_bytes=GB, margin=GB, environ={"HF_HUB_CACHE": str(tmp_path / "cache")})
    assert not ok
    [error] = report.errors
    assert str(tmp_path / "cache") in error.message and "15.0 GB" in error.message
    assert "5.0 GB needed" in text(report.findings)  # 4 checkpoints + margin on the output disk


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"HF_HUB_CACHE": "/x/hub", "HF_HOME": "/y"}, "/x/hub"),
        ({"HUGGINGFACE_HUB_CACHE": "/old/hub"}, "/old/hub"),
        ({"HF_HOME": "/workspace/hf"}, "/workspace/hf/hub"),
        ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/huggingface/hub"),
        ({"HOME": "/home/me"}, "/home/me/.cache/huggingface/hub"),
    ],
)
def test_the_hf_cache_is_found_as_huggingface_hub_finds_it(monkeypatch, environ, expected):
    monkeypatch.setenv("HOME", environ.get("HOME", "/root"))
    assert str(storage.hf_cache_dir(environ)) == expected


def test_runpod_output_dir_outside_workspace_warns(volume, tmp_path):
    report = Report()
    environ = {"RUNPOD_POD_ID": "abc123", "HF_HOME": str(volume / "hf")}
    storage.check_runpod_persistence(report, [tmp_path / "root" / "outputs" / "run"], environ)
    [warning] = report.warnings
    assert "outputs/run is outside" in warning.message and "vanish when the pod stops" in warning.message
    assert f"--output_dir {volume}/outputs/<run>" in warning.hint


def test_runpod_hf_cache_on_the_container_disk_warns_with_the_hf_home_fix(volume, tmp_path):
    report = Report()
    environ = {"RUNPOD_POD_ID": "abc123"}  # no HF_* variables: the default ~/.cache, not on the volume
    storage.check_runpod_persistence(report, [volume / "outputs" / "run"], environ)
    [warning] = report.warnings
    assert "HF cache" in warning.message and f"export HF_HOME={volume}/hf" in warning.hint
    assert "on the persistent volume" in text(report.findings)


def test_a_symlink_into_the_volume_counts_as_persistent(volume, tmp_path):
    (volume / "outputs").mkdir()
    link = tmp_path / "repo-outputs"
    link.symlink_to(volume / "outputs")
    report = Report()
    storage.check_runpod_persistence(report, [link / "run"], {"RUNPOD_API_KEY": "x", "HF_HOME": str(volume / "hf")})
    assert not report.warnings


def test_a_pod_without_a_volume_warns_once(tmp_path):
    report = Report()
    storage.check_runpod_persistence(report, ["/root/out"], {"RUNPOD_POD_ID": "abc"}, volume=tmp_path / "none")
    [warning] = report.findings
    assert warning.level == "warning" and "without a volume" in warning.message


def test_off_runpod_nothing_is_said_about_volumes(tmp_path):
    report = Report()
    storage.check_runpod_persistence(report, [tmp_path], {"HOME": "/root"})
    assert report.findings == []


def test_the_cli_checks_output_dirs_on_runpod(monkeypatch, capsys, volume, tmp_path):
    fake_disk(monkeypatch, 150)
    monkeypatch.setenv("RUNPOD_POD_ID", "abc123")
    monkeypatch.setenv("HF_HOME", str(volume / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    assert check_storage_cli.main(["--output-dir", str(tmp_path / "outputs"), "--output-dir", str(volume)]) == 0
    out = capsys.readouterr().out
    assert out.count("⚠️ WARNING:") == 1 and f"output dir {tmp_path / 'outputs'} is outside" in out
    assert last_tagged(out).startswith("✅ SUCCESS: storage:")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in base_env().items() if not k.startswith("RUNPOD_")}
    return subprocess.run([PYTHON, "scripts/check_storage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_this_machine_has_a_few_megabytes_in_tmp():
    proc = run_cli("--path", "/tmp", "--min-gb", "0.001")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert last_tagged(proc.stdout).startswith("✅ SUCCESS: storage:") and not proc.stderr


def test_help_documents_the_defaults():
    proc = run_cli("--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "--min-gb" in text and "h100 50/100, m4 30/50, cpu 1/2 (default: h100)" in text


def test_the_storage_check_never_imports_torch():
    code = ("import sys; sys.argv = ['check_storage.py', '--path', '/tmp', '--min-gb', '0'];"
            "import runpy\ntry: runpy.run_path('scripts/check_storage.py', run_name='__main__')\n"
            "except SystemExit: pass\nprint('torch' in sys.modules)")
    proc = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines()[-1] == "False", proc.stdout + proc.stderr


@pytest.mark.parametrize(("platform", "free_gb", "level"), [
    ("cpu", 0.5, "error"), ("cpu", 1.5, "warning"), ("cpu", 20, "ok"),
    ("m4", 29, "error"), ("m4", 40, "warning"), ("m4", 60, "ok"),
    ("h100", 49, "error"), ("h100", 80, "warning"), ("h100", 120, "ok"),
])
def test_each_platform_has_its_own_required_and_recommended_free_disk(monkeypatch, capsys, off_runpod,
                                                                       platform, free_gb, level):
    fake_disk(monkeypatch, free_gb)
    code = check_storage_cli.main(["--path", "/data", "--platform", platform])
    out = capsys.readouterr().out
    assert code == (1 if level == "error" else 0)
    assert ("WARNING" in out) == (level == "warning")


def test_the_cpu_demo_with_20_gb_free_does_not_recommend_100_gb(monkeypatch, capsys, off_runpod):
    fake_disk(monkeypatch, 20)
    assert check_storage_cli.main(["--path", "/data", "--platform", "cpu", "--min-gb", "1"]) == 0
    out = capsys.readouterr().out
    assert "recommended" not in out


def test_an_explicit_minimum_overrides_the_platform_and_the_thresholds_live_in_one_table():
    assert storage.disk_thresholds("h100") == (storage.DEFAULT_MIN_GB, storage.DEFAULT_RECOMMENDED_GB) == (50, 100)
    assert all(required <= recommended for required, recommended in storage.PLATFORM_DISK_GB.values())
    with pytest.raises(ValueError, match="unknown platform 'tpu'"):
        storage.disk_thresholds("tpu")


def test_the_margin_is_sized_from_the_model_so_a_tiny_run_asks_for_megabytes_not_gigabytes():
    assert storage.margin_for(15 * GB) == storage.DEFAULT_MARGIN_BYTES
    assert storage.margin_for(1_400_000) == storage.MIN_MARGIN_BYTES
    tiny = storage.disk_needed_bytes(1_400_000, False, save_total_limit=3, checkpoint_bytes=2_000_000,
                                     margin=storage.margin_for(1_400_000))
    assert tiny < GB / 2
