"""Which torch wheel this pod's NVIDIA driver can run, decided before the conda env is paid for.

    python -m trainkit.preflight.torch_build choose --driver 550.54.15 --spec environment-remote.yml --write OUT.yml
    python -m trainkit.preflight.torch_build verify        # with the env's python, right after the install

environment-remote.yml pins torch==2.13.0 from PyPI. That Linux wheel depends on
`cuda-toolkit==13.0.3` (CUDA 13.0), so it needs an NVIDIA driver >= 580.65.06; on an older
driver it installs fine and then finds no GPU. `choose` reads the driver version and:

- driver >= 580.65.06: the PyPI wheel, the spec unchanged;
- 530.30.02 (CUDA 12.1) <= driver < 580.65.06: the same torch built for CUDA 12.8 from
  PyTorch's CUDA-specific index (https://download.pytorch.org/whl/cu128), which runs on a
  CUDA 12.x driver through CUDA's minor-version compatibility: the spec is written with that pin;
- older: refused (exit 1), naming the RunPod template to choose instead.

`verify` imports torch in the built env and checks that it is a CUDA build, that
`torch.cuda.is_available()`, and that a bf16 matmul on the GPU matches a float32 one.
`choose` is stdlib-only (it runs on the pod's base Python, before the env exists).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from trainkit.core import protocol

TORCH_VERSION = "2.13.0"
PYPI_CUDA = "13.0"  # the PyPI wheel's CUDA: its `cuda-toolkit==13.0.3` dependency
PYPI_MIN_DRIVER = "580.65.06"  # CUDA 13.0's minimum Linux driver
FALLBACK_TAG = "cu128"
FALLBACK_CUDA = "12.8"
FALLBACK_INDEX = "https://download.pytorch.org/whl/cu128"
# CUDA 12.1's driver, trainkit's floor; a CUDA 12.8 build runs on it through minor-version compatibility.
FALLBACK_MIN_DRIVER = "530.30.02"
TEMPLATE_HINT = (
    "deploy the pod from a RunPod PyTorch template whose `nvidia-smi` shows driver 580 or newer "
    f"(CUDA Version: 13.x) for the PyPI wheel, or at least driver {FALLBACK_MIN_DRIVER[:3]} (CUDA 12.1); "
    "then re-run the setup"
)
BF16_TOLERANCE = 2e-2  # relative; bf16 keeps 8 bits of mantissa


@dataclass(frozen=True)
class TorchBuild:
    requirement: str  # the pip line for torch
    cuda: str
    min_driver: str
    index_url: str | None  # None: PyPI

    @property
    def where(self) -> str:
        return self.index_url or "PyPI"


PYPI_BUILD = TorchBuild(f"torch=={TORCH_VERSION}", PYPI_CUDA, PYPI_MIN_DRIVER, None)
FALLBACK_BUILD = TorchBuild(f"torch=={TORCH_VERSION}+{FALLBACK_TAG}", FALLBACK_CUDA, FALLBACK_MIN_DRIVER,
                            FALLBACK_INDEX)


class DriverTooOld(Exception):
    pass


def parse_driver(text: str) -> tuple[int, ...]:
    """'550.54.15' -> (550, 54, 15); ValueError when it is not a driver version."""
    text = text.strip()
    if not re.fullmatch(r"\d+(\.\d+){0,2}", text):
        raise ValueError(f"not an NVIDIA driver version: {text!r}")
    return tuple(int(part) for part in text.split("."))


def choose(driver: str) -> TorchBuild:
    """The torch build for this driver; DriverTooOld when none of them runs on it."""
    version = parse_driver(driver)
    if version >= parse_driver(PYPI_MIN_DRIVER):
        return PYPI_BUILD
    if version >= parse_driver(FALLBACK_MIN_DRIVER):
        return FALLBACK_BUILD
    raise DriverTooOld(f"NVIDIA driver {driver} is too old for torch {TORCH_VERSION}: its CUDA builds "
                       f"need driver >= {FALLBACK_MIN_DRIVER} (CUDA 12.1), the PyPI wheel >= {PYPI_MIN_DRIVER}")


TORCH_LINE = re.compile(r"^(?P<indent>\s*-\s*)torch==\S+\s*$")


def spec_for(spec_text: str, build: TorchBuild) -> str:
    """environment-remote.yml's text with its torch pin replaced by `build`'s (and its index added)."""
    lines = spec_text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        match = TORCH_LINE.match(line)
        if not match:
            continue
        if build.index_url is None:
            return spec_text
        indent = match.group("indent")
        lines[i:i + 1] = [f"{indent}--extra-index-url {build.index_url}\n", f"{indent}{build.requirement}\n"]
        return "".join(lines)
    raise ValueError("no `- torch==<version>` line in the pip section")


def describe(driver: str, build: TorchBuild) -> str:
    if build is PYPI_BUILD:
        return (f"NVIDIA driver {driver}: torch {TORCH_VERSION} from PyPI "
                f"(built for CUDA {build.cuda}, needs driver >= {build.min_driver})")
    return (f"NVIDIA driver {driver} is older than the {PYPI_MIN_DRIVER} the PyPI wheel (CUDA {PYPI_CUDA}) needs: "
            f"installing {build.requirement.removeprefix('torch==')} (CUDA {build.cuda}) from {build.where}")


def cmd_choose(args) -> int:
    try:
        build = choose(args.driver)
    except ValueError as exc:
        protocol.error(f"cannot read the NVIDIA driver version: {exc}",
                       "run nvidia-smi --query-gpu=driver_version --format=csv,noheader to see what it says")
        return protocol.ExitCode.ERROR
    except DriverTooOld as exc:
        protocol.error(str(exc), TEMPLATE_HINT)
        return protocol.ExitCode.ERROR
    try:
        text = spec_for(Path(args.spec).read_text(encoding="utf-8"), build)
    except (OSError, ValueError) as exc:
        protocol.error(f"cannot pin torch in {args.spec}: {exc}", "restore it: git checkout -- environment-remote.yml")
        return protocol.ExitCode.ERROR
    out = Path(args.write)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    protocol.section(args.tag, describe(args.driver, build))
    return protocol.ExitCode.OK


def bf16_matmul_error(device: str = "cuda") -> float:
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(256, 256, generator=gen).to(device)
    b = torch.randn(256, 256, generator=gen).to(device)
    want = a @ b
    got = (a.bfloat16() @ b.bfloat16()).float()
    return float((got - want).norm() / want.norm())


def cmd_verify(args) -> int:
    try:
        import torch
    except ImportError as exc:
        protocol.error(f"torch does not import in the env: {exc}",
                       "rebuild the env: scripts/setup_runpod_h100.sh --recreate")
        return protocol.ExitCode.ERROR
    if not torch.version.cuda:
        protocol.error(f"torch {torch.__version__} in the env is a CPU-only build",
                       "rebuild the env so pip picks the CUDA wheel: scripts/setup_runpod_h100.sh --recreate")
        return protocol.ExitCode.ERROR
    if not torch.cuda.is_available():
        protocol.error(f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU",
                       "the driver is older than this build needs, or no GPU is attached: compare nvidia-smi's "
                       "driver with the line above, then re-run the setup with --recreate (it picks the wheel "
                       "for the driver), or " + TEMPLATE_HINT)
        return protocol.ExitCode.ERROR
    try:
        error = bf16_matmul_error()
    except RuntimeError as exc:
        protocol.error(f"a bf16 matmul on the GPU failed: {str(exc).splitlines()[0]}",
                       "run nvidia-smi; restart the pod, or deploy another one if it persists")
        return protocol.ExitCode.ERROR
    if not error < BF16_TOLERANCE:
        protocol.error(f"a bf16 matmul on the GPU gave wrong results (relative error {error:.2g})",
                       "the GPU or driver is faulty: deploy another pod")
        return protocol.ExitCode.ERROR
    protocol.section(args.tag, f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees "
                               f"{torch.cuda.get_device_name(0)}; bf16 matmul OK (relative error {error:.1e})")
    return protocol.ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainkit.preflight.torch_build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pick = sub.add_parser("choose", help="pick the torch wheel for an NVIDIA driver and write the env spec")
    pick.add_argument("--driver", required=True, help="the driver version, as nvidia-smi reports it")
    pick.add_argument("--spec", default="environment-remote.yml", help="the conda env spec to start from")
    pick.add_argument("--write", required=True, metavar="FILE", help="where to write the spec to build")
    check = sub.add_parser("verify", help="check torch in this Python: CUDA build, a GPU, a bf16 matmul")
    for sub_parser in (pick, check):
        sub_parser.add_argument("--tag", default="SETUP-H100", help="the tag of the progress line")
    args = parser.parse_args(argv)
    return int(cmd_choose(args) if args.command == "choose" else cmd_verify(args))


if __name__ == "__main__":
    sys.exit(main())
