"""Is this machine ready to train: Python, pinned packages, the accelerator, credentials.

    report = Report("PREFLIGHT")
    validate_environment("h100", report)      # or "m4", "cpu"
    sys.exit(report.finish("environment ready"))

scripts/validate_environment.py is the CLI. Every platform fact comes from a small
probe (`python_version`, `installed_version`, `cuda_version`, `flash_attn_import_error`,
`hf_token_present`, and config's `cuda_available`/`mps_available`/`flash_attn_installed`,
credentials' `wandb_key_present`), so tests inject a CUDA 11.8 pod or a Mac without MPS
on any machine. torch is imported only when the platform needs it (h100, m4), and a
secret's value is never read into a message.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path

from trainkit.config import settings as config
from trainkit.core import credentials
from trainkit.core.report import Report

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements-local.txt"
MIN_PYTHON = (3, 10)
MIN_CUDA = (12, 1)
PLATFORMS = ("h100", "m4", "cpu")
# What a training run imports; the rest of the pins are their dependencies.
PINNED_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "wandb")
# Model families the Hub serves only to accounts that accepted a licence. A heuristic:
# the Hub is the authority, this only catches the common case before a download fails.
GATED_PREFIXES = ("meta-llama/", "mistralai/", "google/gemma", "google/medgemma", "CohereLabs/", "CohereForAI/")


# --- probes: the only functions that look at the machine ---------------------------


def python_version() -> tuple[int, int, int]:
    return tuple(sys.version_info[:3])


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cuda_version() -> str | None:
    """The CUDA runtime torch was built with ("12.4"), or None for a CPU/MPS build."""
    import torch

    return torch.version.cuda


def flash_attn_import_error() -> str | None:
    """Why flash_attn fails to import, or None when it imports.

    A flash-attn wheel built against another torch is found by importlib but dies with
    an undefined symbol on import, which would otherwise surface only at model load.
    """
    try:
        import flash_attn  # noqa: F401
    except Exception as exc:  # ImportError, OSError from the .so, RuntimeError from CUDA init
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    return None


def hf_token_present() -> str | None:
    """Where huggingface_hub finds a token (HF_TOKEN, HUGGING_FACE_HUB_TOKEN or the `hf auth login`
    token file), or None; the token itself is never read out."""
    try:
        from huggingface_hub import constants, get_token

        if get_token() is None:
            return None
    except Exception:  # a configured OIDC exchange that fails raises instead of returning None
        return None
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(name):
            return name
    return str(constants.HF_TOKEN_PATH).replace(str(Path.home()), "~", 1)


# --- checks ----------------------------------------------------------------------------


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a requirements file, keyed by normalised name."""
    pins = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(version: str) -> str:
    # A CUDA wheel of torch is "2.13.0+cu124"; the local part says which build, not which release.
    return version.split("+", 1)[0]


def check_python(report: Report) -> None:
    found = python_version()
    text = ".".join(map(str, found))
    if found[:2] < MIN_PYTHON:
        report.error(f"Python {text} is too old: trainkit needs {'.'.join(map(str, MIN_PYTHON))} or newer",
                     "create the environment with the setup script for your platform (it installs Python 3.11)")
    else:
        report.ok(f"Python {text}")


def check_packages(report: Report, pins: dict[str, str], requirements: str = "requirements-local.txt",
                   packages: tuple[str, ...] = PINNED_PACKAGES) -> None:
    """Each package installed, at the pinned version (a mismatch only warns: it may still work)."""
    install = f"pip install -r {requirements}"
    for package in packages:
        found = installed_version(package)
        pinned = pins.get(normalise(package))
        if found is None:
            report.error(f"{package} is not installed", f"{install} in the training environment")
        elif pinned and public_version(found) != pinned:
            report.warning(f"{package} {found} is installed, but {requirements} pins {pinned}",
                           f"{install} to get the tested versions")
        else:
            report.ok(f"{package} {found}")


def check_cuda(report: Report) -> bool:
    if not config.cuda_available():
        report.error("CUDA is not available: torch sees no NVIDIA GPU",
                     "check `nvidia-smi`; on RunPod pick a GPU pod and install the CUDA build of torch")
        return False
    found = cuda_version()
    need = ".".join(map(str, MIN_CUDA))
    if not found:
        report.error("torch is a CPU-only build",
                     f"install the CUDA {need}+ build of torch (scripts/setup_runpod_h100.sh)")
        return False
    if version_tuple(found)[:2] < MIN_CUDA:
        report.error(f"CUDA {found} is too old: trainkit needs CUDA {need} or newer",
                     f"use a pod image with CUDA {need}+ and the matching torch build (scripts/setup_runpod_h100.sh)")
        return False
    report.ok(f"CUDA {found}")
    return True


def check_flash_attn(report: Report) -> None:
    """Fast attention on the pod: the Hub flash kernels through `kernels` (trainkit.config.attention), or the
    flash_attn package; neither is a WARNING (SDPA), a package that does not import an ERROR."""
    from trainkit.config.attention import KERNELS_PIN, Facts, kernels_note, kernels_range, kernels_version

    facts = Facts("cuda", kernels_version=kernels_version(), kernels_range=kernels_range())
    if not config.flash_attn_installed():
        if facts.kernels_usable:
            report.ok(f"kernels {facts.kernels_version}: attention from the Hub's flash-attn kernels (no wheel needed)")
        else:
            report.warning(f"no flash attention here: {kernels_note(facts)}, and no flash-attn package: training "
                           "uses SDPA attention (slower, more memory)",
                           f"pip install {KERNELS_PIN} in the env (scripts/setup_runpod_h100.sh pins it), then re-run")
        return
    problem = flash_attn_import_error()
    if problem:
        # importlib finds it, so train.py would pick flash_attention_2 and fail at model load.
        report.error(f"flash-attn is installed but does not import ({problem})",
                     "rebuild it against this torch: pip install --force-reinstall flash-attn --no-build-isolation "
                     "(or pip uninstall flash-attn to fall back to SDPA)")
        return
    report.ok("flash-attn imports: attention uses flash_attention_2")


def check_mps(report: Report) -> None:
    if not config.mps_available():
        report.error("MPS is not available: torch cannot use the Apple GPU",
                     "use an Apple-Silicon Mac on macOS 14+ with the torch from requirements-local.txt "
                     "(scripts/setup_m4_local.sh)")
        return
    report.ok("MPS available")
    if os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK") != "1":
        # torch reads it once at import, so train.py cannot set it for itself.
        report.warning("PYTORCH_ENABLE_MPS_FALLBACK is not 1: an op without an MPS kernel stops training",
                       "scripts/train_m4_local.sh exports it before Python starts; when calling train.py "
                       "yourself, export PYTORCH_ENABLE_MPS_FALLBACK=1 first")


WANDB_CHECK_SECONDS = 10.0  # TRAINKIT_WANDB_CHECK_SECONDS overrides: how long setup waits for W&B to answer


def check_wandb_key(where: str, report: Report) -> None:
    """The key against W&B itself, with a bound: a rejected key or an unreachable W&B is a WARNING (the run can
    train without W&B, and logs offline), never an ERROR."""
    from trainkit.core.wandb_reach import probe

    reach = probe(float(os.environ.get("TRAINKIT_WANDB_CHECK_SECONDS") or WANDB_CHECK_SECONDS))
    if reach.ok:
        report.ok(f"W&B API key found ({where}); {reach.detail}")
    elif reach.kind == "rejected":
        report.warning(f"W&B API key found ({where}) but {reach.detail}: training will log offline",
                       "log in again with `wandb login --relogin`, or set WANDB_API_KEY in the pod's environment "
                       "(a key from https://wandb.ai/authorize)")
    else:
        report.warning(f"W&B is not answering ({reach.detail}): the run will log offline and can be synced later",
                       "nothing to do for training; check the network or WANDB_BASE_URL if you want live W&B, and "
                       "upload offline runs with `wandb sync <output_dir>/wandb/offline-run-*`")


def check_credentials(report: Report) -> None:
    """W&B and Hugging Face credentials present: where they were found, never their values."""
    offline = os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun")
    if (where := credentials.wandb_key_present()) and not offline:
        check_wandb_key(where, report)
    elif where:
        report.ok(f"W&B API key found ({where}); WANDB_MODE={os.environ['WANDB_MODE']}")
    elif offline:
        report.ok(f"W&B: WANDB_MODE={os.environ['WANDB_MODE']} (no key needed)")
    else:
        report.warning("no W&B API key: training will log offline",
                       "export WANDB_API_KEY=<key from https://wandb.ai/authorize> or run `wandb login` "
                       "(sync offline runs later with `wandb sync`)")
    if where := hf_token_present():
        report.ok(f"Hugging Face token found ({where})")
    else:
        report.warning("no Hugging Face token: only public models can be downloaded",
                       "export HF_TOKEN=hf_... or run `hf auth login`; gated models such as meta-llama/* need it")


def is_gated_model(name: str) -> bool:
    return name.startswith(GATED_PREFIXES) and not Path(name).expanduser().exists()


def check_model_access(model_name: str, report: Report, cached: bool = False) -> None:
    """A gated model that is not in the local cache needs an HF token to download: ERROR without one."""
    if not is_gated_model(model_name) or cached:
        return
    if hf_token_present():
        report.ok(f"{model_name} is gated; an HF token is set (its account must have accepted the licence)")
        return
    report.error(f"{model_name} is a gated model and no Hugging Face token is set",
                 f"accept the licence on https://huggingface.co/{model_name}, then export HF_TOKEN=hf_... "
                 "(or `hf auth login`)")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, looked up now (the library reads it once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_access(model_name: str) -> tuple[str, str]:
    """Probe: what the Hub says about a model id, as ("ok" | "missing" | "gated" | "unreachable", detail).

    "missing" is a 404, or a 401 for a private repo the token cannot see; "gated" is a repo
    whose licence this token has not accepted (or no token at all).
    """
    if hub_offline():
        return "unreachable", "HF_HUB_OFFLINE=1"
    import threading

    from huggingface_hub import auth_check, constants
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    # auth_check sets no timeout of its own: a Hub that accepts and never answers would hold the start for good.
    found: list = []

    def ask() -> None:
        try:
            auth_check(model_name)
            found.append(None)
        except BaseException as exc:  # handed to the caller's thread below
            found.append(exc)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    bound = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    asker.join(bound)
    if not found:
        return "unreachable", f"{constants.ENDPOINT} did not answer within {bound:g} s"
    try:
        if found[0] is not None:
            raise found[0]
    except GatedRepoError:
        return "gated", "401"
    except RepositoryNotFoundError:
        return "missing", "404"
    except HFValidationError as exc:
        return "missing", str(exc).splitlines()[0]
    except Exception as exc:  # httpx/OS errors: no network, DNS, proxy, timeout; anything else is "cannot tell"
        return "unreachable", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    return "ok", ""


def close_model_names(model_name: str, candidates: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(model_name, [c for c in candidates if c != model_name], n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""


def check_model_available(model_name: str, report: Report, *, cached: bool, known: bool, need_weights: bool,
                          candidates: list[str] = ()) -> None:
    """The model can be loaded: a local dir, the HF cache, or the Hub says yes. ERROR when it cannot.

    `cached`: weights are on this machine. `known`: its config.json was found somewhere
    (configs/architectures/), so the id is not a typo. `need_weights`: train.py is about to
    load it, so "cannot be reached" is fatal; the validator alone accepts a known id offline.
    """
    if cached:
        return
    state, detail = hub_access(model_name)
    maybe = close_model_names(model_name, list(candidates))
    if state == "ok":
        report.ok(f"model {model_name} is on the Hugging Face Hub (weights download at the first start)")
    elif state == "gated":
        hint = (f"accept the licence on https://huggingface.co/{model_name}, then export HF_TOKEN=hf_... "
                "(or `hf auth login`)")
        if hf_token_present():
            report.error(f"{model_name} is a gated model and the Hugging Face token set here has no access", hint)
        else:
            report.error(f"{model_name} is a gated model and no Hugging Face token is set", hint)
    elif state == "missing":
        report.error(f"model {model_name} not found on the Hugging Face Hub ({detail}) nor in the local cache{maybe}",
                     "check the spelling of model_name_or_path (hub ids look like Qwen/Qwen2.5-7B-Instruct); "
                     "a private model also needs HF_TOKEN")
    elif (known and not need_weights) or (is_gated_model(model_name) and not hf_token_present()):
        # Offline, a gated family without a token is the error that matters: it needs a token either way.
        check_model_access(model_name, report)
    else:
        what = "its weights cannot be downloaded" if known else "it cannot be checked or downloaded"
        report.error(f"model {model_name} is not in the local HF cache and the Hugging Face Hub cannot be reached "
                     f"({detail}): {what}{maybe}",
                     f"check the spelling of model_name_or_path; download it where the Hub is reachable "
                     f"(hf download {model_name}), or "
                     + ("unset HF_HUB_OFFLINE" if hub_offline() else "check the network (and HF_ENDPOINT)"))


def validate_environment(env: str, report: Report, requirements: Path = REQUIREMENTS) -> None:
    """Every environment check for platform `env` (h100, m4 or cpu), added to `report`."""
    check_python(report)
    try:
        pins = read_pins(requirements)
    except OSError as exc:
        report.error(f"cannot read the version pins in {requirements}: {exc.strerror}",
                     "run from the trainkit repository, or pass --requirements FILE")
        pins = {}
    check_packages(report, pins, Path(requirements).name)
    if env in ("h100", "m4") and installed_version("torch") is None:
        pass  # already an error above, and the accelerator probes need torch
    elif env == "h100":
        if check_cuda(report):
            check_flash_attn(report)
    elif env == "m4":
        check_mps(report)
    else:
        report.ok("cpu platform: no accelerator needed")
    check_credentials(report)
