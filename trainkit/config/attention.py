"""Which attention a run uses: `attn_implementation: auto` (the default) picks the fastest one this machine has.

    facts = probe(device)                       # what is installed and which GPU this is
    chosen = choose("auto", facts)              # Choice(implementation, label, why, varlen, hub_kernel)
    model_init_kwargs["attn_implementation"] = chosen.implementation

On CUDA, in order:
1. flash-attn 3 as a Hub kernel (`kernels` package) on compute capability 9.x (Hopper);
2. flash-attn 2 as a Hub kernel, or the installed `flash_attn` package;
3. SDPA.
No flash-attn wheel is needed: transformers loads the Hub kernels through `kernels`, but only a `kernels`
inside the range it accepts (KERNELS_MIN_VERSION <= v < KERNELS_MAX_VERSION); another version is ignored
by transformers, so it is not counted here either. The Hub names are transformers' own
(FLASH_ATTN_KERNEL_FALLBACK). Elsewhere (MPS, CPU) it is SDPA. The flash kernels are varlen: packed,
padding-free rows attend within their own examples at no extra cost, where SDPA gets a block mask.

Setup pre-fetches the chosen Hub kernel into the HF cache (trainkit.preflight.attention_fetch), so the run
never downloads it; the preflight prints the choice and why (trainkit.preflight.checks).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from trainkit.core.errors import ConfigError

AUTO = "auto"
FLASH_NAMES = ("flash_attention_2", "flash_attention_3")
# transformers' Hub repos for flash_attention_2/3 when the package is missing (modeling_flash_attention_utils).
HUB_FA2 = "kernels-community/flash-attn2"
HUB_FA3 = "kernels-community/vllm-flash-attn3"
KERNELS_PIN = "kernels==0.18.3"  # environment-remote.yml holds the same pin (a test keeps them equal)


@dataclass(frozen=True)
class Facts:
    device: str  # cuda, mps or cpu
    capability: tuple[int, int] | None = None  # the CUDA GPU's compute capability
    kernels_version: str | None = None  # the installed `kernels` package
    kernels_range: tuple[str, str] = ("0.18.2", "0.19.0")  # what the installed transformers accepts
    flash_attn: bool = False  # the flash_attn package imports

    @property
    def kernels_usable(self) -> bool:
        if self.kernels_version is None:
            return False
        from packaging.version import Version

        low, high = self.kernels_range
        return Version(low) <= Version(self.kernels_version) < Version(high)


@dataclass(frozen=True)
class Choice:
    implementation: str  # what transformers gets as attn_implementation
    label: str  # what the preflight calls it
    why: str
    varlen: bool  # packed rows keep their boundaries without a dense mask
    hub_kernel: str | None = None  # the Hub repo to pre-fetch


def is_hub_kernel(name: str | None) -> bool:
    """transformers' pattern for a Hub kernel (`org/repo`, optionally `@revision` and `:function`)."""
    return name is not None and re.search(r"^[^/:]+/[^/:]+(?:@[^/:]+)?(?::[^/:]+)?$", name) is not None


def is_varlen(name: str | None) -> bool:
    return name in FLASH_NAMES or (is_hub_kernel(name) and "flash-attn" in name)


def hub_names() -> tuple[str, str]:
    """(FA2, FA3) Hub repos as the installed transformers names them."""
    try:
        from transformers.modeling_flash_attention_utils import FLASH_ATTN_KERNEL_FALLBACK
    except ImportError:
        return HUB_FA2, HUB_FA3
    return (FLASH_ATTN_KERNEL_FALLBACK.get("flash_attention_2", HUB_FA2),
            FLASH_ATTN_KERNEL_FALLBACK.get("flash_attention_3", HUB_FA3))


def kernels_note(facts: Facts) -> str:
    low, high = facts.kernels_range
    if facts.kernels_version is None:
        return f"no kernels package (pip install {KERNELS_PIN}; setup installs it)"
    return (f"kernels {facts.kernels_version} is outside the {low} <= v < {high} the installed transformers accepts, "
            f"so transformers ignores it (pip install {KERNELS_PIN})")


def choose(requested: str | None, facts: Facts) -> Choice:
    """The attention for `requested` (auto/None, sdpa, eager, flash_attention_2/3, or a Hub kernel) on `facts`;
    ConfigError when the requested one cannot run here."""
    fa2, fa3 = hub_names()
    if requested in (None, AUTO):
        if facts.device != "cuda":
            return Choice("sdpa", "sdpa", f"auto on {facts.device}: the flash kernels need CUDA", False)
        cc = f"compute capability {facts.capability[0]}.{facts.capability[1]}" if facts.capability else "this GPU"
        if facts.kernels_usable and facts.capability and facts.capability[0] == 9:
            return Choice(fa3, f"flash-attn 3 (Hub kernel {fa3})", f"auto: {cc} is Hopper, kernels "
                          f"{facts.kernels_version} loads it", True, fa3)
        if facts.kernels_usable:
            return Choice(fa2, f"flash-attn 2 (Hub kernel {fa2})",
                          f"auto: {cc}, kernels {facts.kernels_version} loads it", True, fa2)
        if facts.flash_attn:
            return Choice("flash_attention_2", "flash-attn 2 (flash_attn package)",
                          f"auto: the flash_attn package imports; {kernels_note(facts)}", True)
        return Choice("sdpa", "sdpa", f"auto: no flash kernel here: {kernels_note(facts)}, and no flash_attn "
                      "package", False)
    if requested in FLASH_NAMES:
        hub = fa3 if requested == "flash_attention_3" else fa2
        if facts.device != "cuda":
            raise ConfigError(f"attn_implementation={requested} needs CUDA", "set attn_implementation: auto "
                              "(sdpa here) or sdpa")
        if facts.flash_attn and requested == "flash_attention_2":
            return Choice(requested, "flash-attn 2 (flash_attn package)", "asked for; the flash_attn package "
                          "imports", True)
        if facts.kernels_usable:
            # transformers loads the Hub build itself when the package is missing.
            return Choice(hub, f"{requested} (Hub kernel {hub})", f"asked for; kernels {facts.kernels_version} "
                          "loads it without a flash-attn wheel", True, hub)
        raise ConfigError(f"attn_implementation={requested} needs the kernels package (Hub kernel {hub}) or, for "
                          "flash_attention_2, the flash_attn package; neither is usable here: "
                          f"{kernels_note(facts)}",
                          "set attn_implementation: auto (it picks what runs here), or install the pinned "
                          f"{KERNELS_PIN}")
    if is_hub_kernel(requested):
        if facts.device != "cuda" or not facts.kernels_usable:
            raise ConfigError(f"attn_implementation={requested} is a Hub kernel, which needs CUDA and the kernels "
                              f"package: {kernels_note(facts) if facts.device == 'cuda' else 'no CUDA here'}",
                              "set attn_implementation: auto, or run on the GPU machine after setup")
        return Choice(requested, f"Hub kernel {requested}", "asked for", is_varlen(requested), requested)
    return Choice(requested, requested, "asked for", is_varlen(requested))


# -- probes: this machine's facts (tests inject their own Facts) ------------------------------------------------

def kernels_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:
        return None
    try:
        return version("kernels")
    except PackageNotFoundError:
        return None


def kernels_range() -> tuple[str, str]:
    try:
        from transformers.utils.import_utils import KERNELS_MAX_VERSION, KERNELS_MIN_VERSION
    except ImportError:
        return Facts.kernels_range
    return KERNELS_MIN_VERSION, KERNELS_MAX_VERSION


def cuda_capability() -> tuple[int, int] | None:
    import torch

    return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None


def probe(device: str) -> Facts:
    return Facts(device=device, capability=cuda_capability() if device == "cuda" else None,
                 kernels_version=kernels_version(), kernels_range=kernels_range(),
                 flash_attn=importlib.util.find_spec("flash_attn") is not None)
