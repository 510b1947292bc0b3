"""status.json's gpu figures: nvidia-ml-py's view of the GPU, and nulls where a platform cannot say."""

from __future__ import annotations

import sys
import types

from trainkit.preflight import device_figures


def fake_pynvml():
    nvml = types.ModuleType("pynvml")
    nvml.NVML_TEMPERATURE_GPU = 0
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=55_100_000_000, total=85_520_000_000)
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=97)
    nvml.nvmlDeviceGetTemperature = lambda h, sensor: 64
    nvml.nvmlDeviceGetPowerUsage = lambda h: 612_000  # milliwatts
    return nvml


def test_nvml_figures_give_utilisation_memory_temperature_and_power(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    assert device_figures.nvml_figures(0) == {
        "name": "NVIDIA H100 80GB HBM3", "utilization_percent": 97.0, "memory_used_bytes": 55_100_000_000,
        "memory_total_bytes": 85_520_000_000, "temperature_c": 64.0, "power_watts": 612.0,
    }


def test_a_failing_nvml_gives_no_figures_instead_of_an_error(monkeypatch):
    nvml = fake_pynvml()

    def broken():
        raise RuntimeError("NVML_ERROR_DRIVER_NOT_LOADED")

    nvml.nvmlInit = broken
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert device_figures.nvml_figures(0) is None


def test_on_a_cpu_machine_only_the_cpu_figure_is_set_and_it_measures_the_work_since_the_last_look(monkeypatch):
    import time

    monkeypatch.setattr(device_figures, "_PROCESS", None)
    first = device_figures.device_figures()
    assert set(first) == set(device_figures.empty())
    assert first["utilization_percent"] is None and first["cpu_percent"] is None, "no interval yet: not 0 %"
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass  # a busy trainer
    second = device_figures.device_figures()
    assert second["cpu_percent"] > 20
