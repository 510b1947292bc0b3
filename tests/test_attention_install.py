"""Attention on the pod: the prebuilt flash-attn wheel when one matches, SDPA otherwise, never a compile."""

from __future__ import annotations

import pytest

from trainkit.preflight.attention_install import Environment, compile_minutes, main, plan, wheel_name, wheel_url

POD = Environment(torch="2.8.0+cu128", cuda="12.8", python=(3, 11), cxx11_abi=True, platform="linux_x86_64",
                  cpus=16, flash_attn_installed=False)


def test_the_wheel_name_follows_flash_attns_release_naming():
    assert wheel_name("2.8.3", POD) == "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
    assert wheel_url("2.8.3", POD) == ("https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3/"
                                       "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp311-cp311-linux_x86_64.whl")


def test_an_existing_prebuilt_wheel_is_installed_from_its_url():
    asked = []
    decided = plan(POD, lambda url: asked.append(url) or True, "2.8.3")
    assert decided.action == "wheel" and decided.url == asked[0] == wheel_url("2.8.3", POD)
    assert decided.message.endswith("(no compile)")


@pytest.mark.parametrize(("found", "why"), [(False, "publishes no prebuilt wheel"), (None, "could not check")])
def test_without_a_matching_wheel_training_falls_back_to_sdpa_and_says_what_a_build_would_cost(found, why):
    decided = plan(POD, lambda url: found, "2.8.3")
    assert decided.action == "sdpa" and decided.url is None
    assert why in decided.message and "SDPA" in decided.message
    assert f"roughly {compile_minutes(16)} min" in decided.hint and "--no-build-isolation" in decided.hint


def test_an_installed_flash_attn_or_a_cpu_torch_asks_nothing_of_the_network():
    def never(url):
        raise AssertionError("no lookup expected")

    assert plan(Environment(**{**POD.__dict__, "flash_attn_installed": True}), never).action == "skip"
    assert plan(Environment(**{**POD.__dict__, "cuda": None, "torch": "2.13.0+cpu"}), never).action == "sdpa"


def test_a_compile_estimate_scales_with_the_parallel_jobs_and_caps_at_two_hours():
    assert compile_minutes(64, max_jobs=64) == 4
    assert compile_minutes(16, max_jobs=4) == 64
    assert compile_minutes(1) == 120


def test_main_installs_the_wheel_and_never_calls_pip_on_the_sdist(capsys):
    installed = []
    code = main(["--tag", "SETUP-H100"], env=POD, exists=lambda url: True,
                install=lambda url, log: installed.append(url) or True)
    out = capsys.readouterr().out
    assert code == 0 and installed == [wheel_url("2.8.3", POD)]
    assert "[SETUP-H100] flash-attn installed" in out.splitlines()


def test_main_warns_and_succeeds_when_it_falls_back(capsys):
    code = main([], env=POD, exists=lambda url: False, install=lambda url, log: pytest.fail("no install"))
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith("⚠️ WARNING: flash-attn 2.8.3 publishes no prebuilt wheel flash_attn-2.8.3+cu12torch2.8")
    assert lines[1].startswith("  ↳ building it from source would take roughly 64 min here")


def test_a_wheel_that_fails_to_install_is_a_warning_not_a_failure(capsys):
    code = main([], env=POD, exists=lambda url: True, install=lambda url, log: False)
    assert code == 0
    assert "⚠️ WARNING: the prebuilt flash-attn wheel did not install; training uses SDPA attention" in \
        capsys.readouterr().out
