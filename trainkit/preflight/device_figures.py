"""The accelerator's figures for status.json: utilisation, memory used/total, temperature, power.

CUDA: nvidia-ml-py (pynvml) when installed, which sees what nvidia-smi sees; without it, torch's
own memory figures and nulls for the rest. MPS: the memory torch has from the unified pool, out
of the machine's total (no utilisation or temperature without powermetrics, which needs root).
CPU: the process's CPU use. Every figure a platform cannot give is None; nothing here raises.
"""

from __future__ import annotations


def empty() -> dict:
    return {"name": None, "utilization_percent": None, "memory_used_bytes": None, "memory_total_bytes": None,
            "temperature_c": None, "power_watts": None, "cpu_percent": None}


def nvml_figures(index: int = 0) -> dict | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        return {
            "name": name.decode() if isinstance(name, bytes) else name,
            "utilization_percent": float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            "memory_used_bytes": int(memory.used),
            "memory_total_bytes": int(memory.total),
            "temperature_c": float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
            "power_watts": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
        }
    except Exception:  # NVML errors are many and all mean "no figures"
        return None


_PROCESS = None  # one psutil.Process for the whole run: cpu_percent measures since its previous call


def process_peak_rss() -> int:
    """This process's peak resident memory in bytes (getrusage reports KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def process_cpu_percent() -> float | None:
    """The trainer's CPU use since the previous call (100 = one core); None on the first call, which has no
    interval to measure over (psutil answers 0.0 then, which would read as an idle trainer)."""
    global _PROCESS
    import psutil

    if _PROCESS is None:
        _PROCESS = psutil.Process()
        _PROCESS.cpu_percent(interval=None)
        return None
    return _PROCESS.cpu_percent(interval=None)


def device_figures() -> dict:
    figures = empty()
    try:
        import psutil
        import torch

        figures["cpu_percent"] = process_cpu_percent()
        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            found = nvml_figures(index)
            if found:
                figures.update(found)
            else:
                free, total = torch.cuda.mem_get_info(index)
                figures.update(name=torch.cuda.get_device_name(index), memory_used_bytes=int(total - free),
                               memory_total_bytes=int(total))
        elif torch.backends.mps.is_available():
            figures.update(name="Apple GPU (MPS)", memory_used_bytes=int(torch.mps.driver_allocated_memory()),
                           memory_total_bytes=int(psutil.virtual_memory().total))
    except Exception:  # figures are a courtesy: never let them stop a training step
        pass
    return figures
