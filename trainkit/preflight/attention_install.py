"""Fast attention on the GPU pod without a compile: a prebuilt flash-attn wheel, or SDPA.

    python scripts/install_attention.py --log logs/setup_h100.log     # what setup.sh runs on the pod

`pip install flash-attn --no-build-isolation` downloads a prebuilt wheel only when one exists for the exact
torch minor, CUDA major, Python and C++ ABI; otherwise it compiles the CUDA kernels from source, which the
flash-attn README puts at 3-5 minutes on a 64-core machine with ninja and about 2 hours without it, billed
GPU time before the first step. So this never calls pip on the sdist: it works out the release wheel's name
for this environment, installs that file if it exists, and otherwise leaves attention to PyTorch's SDPA
(trainkit.config.settings picks flash_attention_2 only when flash_attn imports) with a WARNING that says what a
build would cost and how to start one on purpose.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from trainkit.core import protocol

FLASH_ATTN_VERSION = "2.8.3"
RELEASES = "https://github.com/Dao-AILab/flash-attention/releases/download"
TAG = "SETUP-H100"
# The flash-attn README: 3-5 minutes on a 64-core machine with ninja; MAX_JOBS caps the parallel jobs.
README_MINUTES, README_CORES = 4, 64
NO_NINJA_MINUTES = 120
DEFAULT_MAX_JOBS = 4


@dataclass(frozen=True)
class Environment:
    torch: str  # torch.__version__, e.g. "2.13.0+cu128"
    cuda: str | None  # torch.version.cuda, e.g. "12.8"; None on a CPU build
    python: tuple[int, int]
    cxx11_abi: bool
    platform: str  # e.g. "linux_x86_64"
    cpus: int
    flash_attn_installed: bool


@dataclass(frozen=True)
class Plan:
    action: str  # "skip", "wheel" or "sdpa"
    message: str
    url: str | None = None
    hint: str | None = None


def wheel_name(version: str, env: Environment) -> str:
    """The file name flash-attn's release workflow gives the wheel for `env` (its setup.py looks for the same)."""
    torch_minor = ".".join(env.torch.split("+")[0].split(".")[:2])
    cuda_major = (env.cuda or "").split(".")[0]
    py = f"cp{env.python[0]}{env.python[1]}"
    return (f"flash_attn-{version}+cu{cuda_major}torch{torch_minor}cxx11abi{str(env.cxx11_abi).upper()}"
            f"-{py}-{py}-{env.platform}.whl")


def wheel_url(version: str, env: Environment) -> str:
    return f"{RELEASES}/v{version}/{wheel_name(version, env)}"


def compile_minutes(cpus: int, max_jobs: int = DEFAULT_MAX_JOBS) -> int:
    """A source build's duration, scaled from the README's figure by the parallel jobs this machine runs."""
    jobs = max(1, min(cpus, max_jobs))
    return min(NO_NINJA_MINUTES, round(README_MINUTES * README_CORES / jobs))


def build_hint(version: str, env: Environment, max_jobs: int = DEFAULT_MAX_JOBS) -> str:
    minutes = compile_minutes(env.cpus, max_jobs)
    return (f"building it from source would take roughly {minutes} min here ({env.cpus} CPUs, MAX_JOBS={max_jobs}; "
            f"up to ~2 h without ninja); to build it anyway, on purpose: "
            f"MAX_JOBS={max_jobs} pip install flash-attn=={version} --no-build-isolation")


def plan(env: Environment, wheel_exists: Callable[[str], bool | None], version: str = FLASH_ATTN_VERSION) -> Plan:
    """What to do; `wheel_exists(url)` answers True, False, or None when it could not be checked."""
    if env.flash_attn_installed:
        return Plan("skip", "flash-attn already installed: skipped")
    if not env.cuda:
        return Plan("sdpa", f"torch {env.torch} has no CUDA: flash-attn cannot run, training uses SDPA attention",
                    hint="install the CUDA build of torch for this GPU's driver, then re-run setup")
    name = wheel_name(version, env)
    url = wheel_url(version, env)
    found = wheel_exists(url)
    if found:
        return Plan("wheel", f"installing the prebuilt flash-attn {version} wheel {name} (no compile)", url=url)
    why = (f"flash-attn {version} publishes no prebuilt wheel {name}" if found is False
           else f"could not check for the prebuilt flash-attn wheel {name} (no network?)")
    return Plan("sdpa", f"{why}: training uses SDPA attention instead of compiling flash-attn",
                hint=build_hint(version, env))


def current_environment() -> Environment:
    import importlib.util
    import platform

    import torch

    return Environment(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        python=sys.version_info[:2],
        cxx11_abi=bool(torch._C._GLIBCXX_USE_CXX11_ABI),
        platform=f"{platform.system().lower()}_{platform.machine()}",
        cpus=os.cpu_count() or 1,
        flash_attn_installed=importlib.util.find_spec("flash_attn") is not None,
    )


def url_exists(url: str, timeout: float = 20) -> bool | None:
    """HEAD the release asset (GitHub redirects to its storage): True 2xx, False 404, None unreachable."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError as exc:
        return False if exc.code in (403, 404) else None
    except (urllib.error.URLError, OSError):
        return None


def pip_install(url: str, log: str | None) -> bool:
    """pip on a wheel URL installs that file and never builds; --no-deps keeps the pinned torch in place."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", url]
    if log:
        os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    with open(log, "a", encoding="utf-8") if log else open(os.devnull, "w") as out:
        ok = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode == 0
    return ok and subprocess.run([sys.executable, "-c", "import flash_attn"], capture_output=True).returncode == 0


def main(argv: list[str] | None = None, env: Environment | None = None, exists=url_exists, install=pip_install) -> int:
    parser = argparse.ArgumentParser(prog="scripts/install_attention.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", help="append pip's output to this file")
    parser.add_argument("--tag", default=TAG, help="progress-line tag (default SETUP-H100)")
    args = parser.parse_args(argv)
    version = os.environ.get("TRAINKIT_FLASH_ATTN_VERSION", FLASH_ATTN_VERSION)
    decided = plan(env or current_environment(), exists, version)
    if decided.action == "sdpa":
        protocol.warning(decided.message, decided.hint)
        return 0
    protocol.section(args.tag, decided.message)
    if decided.action == "wheel":
        if install(decided.url, args.log):
            protocol.section(args.tag, "flash-attn installed")
        else:
            protocol.warning("the prebuilt flash-attn wheel did not install; training uses SDPA attention",
                             f"details in {args.log or 'pip output'}; retry: pip install --no-deps {decided.url}")
    return 0
