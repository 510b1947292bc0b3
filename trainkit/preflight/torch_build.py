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

Before the spec is written, `choose` asks the chosen index (PEP 503 simple page) whether it lists that
torch for the env's Python: a build the index lacks is refused before conda spends minutes on it (an
index that cannot be reached is a WARNING; TRAINKIT_WHEEL_INDEX_ROOT points the check at a mirror).

`verify` imports torch in the built env and checks that it is a CUDA build, that
`torch.cuda.is_available()`, that a bf16 matmul on the GPU matches a float32 one, and that TRL's loss
kernel (a Triton kernel, compiled at the first step: ptxas, the driver and Triton must agree) gives
F.cross_entropy's log-probabilities and gradients.
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
LOSS_TOLERANCE = 1e-3  # fp32 log-probabilities and gradients, chunked against F.cross_entropy
PYPI_INDEX = "https://pypi.org/simple"
INDEX_ROOT_ENV = "TRAINKIT_WHEEL_INDEX_ROOT"
PYTHON_LINE = re.compile(r"^\s*-\s*python=(\d+)\.(\d+)")


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


def index_page_url(build: TorchBuild) -> str:
    """The PEP 503 page for torch on the build's index; under TRAINKIT_WHEEL_INDEX_ROOT, the same path there."""
    import os

    base = build.index_url or PYPI_INDEX
    root = os.environ.get(INDEX_ROOT_ENV)
    if root:  # a mirror laid out by host and path; a file:// one serves the page as index.html
        return root.rstrip("/") + "/" + base.split("://", 1)[1] + "/torch/" + ("index.html" if
                                                                                root.startswith("file:") else "")
    return f"{base}/torch/"


def python_tag(spec_text: str) -> str | None:
    """cp311 for a spec pinning python=3.11.x."""
    for line in spec_text.splitlines():
        found = PYTHON_LINE.match(line)
        if found:
            return f"cp{found.group(1)}{found.group(2)}"
    return None


def lists_wheel(page: str, build: TorchBuild, tag: str) -> bool:
    """Whether an index page links a Linux x86_64 wheel of the build's torch for Python `tag`."""
    from urllib.parse import unquote

    version = re.escape(build.requirement.removeprefix("torch=="))
    wheel = re.compile(rf"torch-{version}-{tag}-{tag}-[^\"'<>]*linux[^\"'<>]*x86_64\.whl")
    return wheel.search(unquote(page)) is not None


def fetch_index_page(url: str, timeout: float = 20.0) -> str:
    from urllib.request import Request, urlopen

    request = Request(url, headers={"Accept": "text/html"})
    with urlopen(request, timeout=timeout) as response:  # noqa: S310 (https or a file:// mirror)
        return response.read().decode("utf-8", errors="replace")


def check_index(build: TorchBuild, tag: str | None) -> str | None:
    """None when the index lists the build (or cannot be asked: a WARNING is printed); else the ERROR text."""
    url = index_page_url(build)
    if tag is None:
        return None
    try:
        page = fetch_index_page(url)
    except (OSError, ValueError) as exc:
        protocol.warning(f"could not ask {url} whether it has torch {build.requirement.removeprefix('torch==')} "
                         f"for {tag} ({exc}); building the env anyway", "check the pod's network if conda fails")
        return None
    if lists_wheel(page, build, tag):
        return None
    return (f"{url} lists no torch {build.requirement.removeprefix('torch==')} wheel for {tag} on Linux x86_64: "
            "conda would fail after minutes of downloads")


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
    missing = check_index(build, python_tag(text))
    if missing:
        protocol.error(missing, "deploy a pod whose driver takes the other build (" + TEMPLATE_HINT + "), or pin a "
                       "torch the index has in environment-remote.yml")
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


def loss_kernel_error(device: str = "cuda") -> float:
    """Largest difference between TRL's chunked log-probability kernel (Triton on CUDA, torch ops elsewhere) and
    -F.cross_entropy, over the log-probabilities and the gradients of the hidden states and the LM head."""
    import torch
    import torch.nn.functional as F
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    gen = torch.Generator(device="cpu").manual_seed(0)
    tokens, hidden_size, vocab = 96, 64, 1000
    hidden = torch.randn(tokens, hidden_size, generator=gen).to(device).requires_grad_()
    weight = (torch.randn(vocab, hidden_size, generator=gen) / hidden_size**0.5).to(device).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), generator=gen).to(device)
    logprobs = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 256, None, 1.0, ())[0]
    logprobs.sum().backward()
    got = (logprobs.detach(), hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None
    want = -F.cross_entropy(hidden @ weight.T, targets, reduction="none")
    want.sum().backward()
    return max(float((a - b).abs().max()) for a, b in zip(got, (want.detach(), hidden.grad, weight.grad),
                                                            strict=True))


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
    try:
        loss_error = loss_kernel_error()
    except Exception as exc:  # Triton compiles it here: ptxas, driver and Triton mismatches all land here
        protocol.error(f"TRL's loss kernel (Triton) fails on this GPU: {exc.__class__.__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}"[:400],
                       "the driver, CUDA and Triton disagree: re-run the setup with --recreate (it picks the torch "
                       "build for the driver), or " + TEMPLATE_HINT)
        return protocol.ExitCode.ERROR
    if not loss_error < LOSS_TOLERANCE:
        protocol.error(f"TRL's loss kernel gives wrong results on this GPU (max error {loss_error:.2g} against "
                       "F.cross_entropy)", "deploy another pod; report the torch, CUDA and driver versions")
        return protocol.ExitCode.ERROR
    protocol.section(args.tag, f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees "
                               f"{torch.cuda.get_device_name(0)}; bf16 matmul OK (relative error {error:.1e}); "
                               f"TRL's Triton loss kernel matches F.cross_entropy (max error {loss_error:.1e})")
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
