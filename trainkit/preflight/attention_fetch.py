"""Setup's attention step: fetch the Hub kernel `attn_implementation: auto` picks into the HF cache, and check it.

    python scripts/prefetch_attention.py --config configs/training_config_h100.yaml

The choice is trainkit.config.attention's, made on this machine. For a Hub kernel (flash-attn 3 on Hopper,
else flash-attn 2, through the `kernels` package) it:
1. downloads it now (`kernels.get_kernel`, the version transformers asks for), so the run never waits on
   the Hub and a missing build for this torch/CUDA fails here, not at step 1;
2. loads it again with HF_HUB_OFFLINE=1 in a fresh process: a run after setup needs no network for it;
3. runs its varlen attention on two packed sequences on the GPU and compares it with SDPA on each
   sequence alone (varlen_reference): packed rows must not see each other.
Without a Hub kernel it says what runs instead (SDPA, or the flash_attn package) and why.
Exit codes: 0 ready (or nothing to fetch), 1 the kernel cannot be fetched, loaded or trusted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from trainkit.core import protocol
from trainkit.core.errors import TrainkitError
from trainkit.core.protocol import ExitCode
from trainkit.core.report import Report

# bf16 attention against an fp32-accumulated reference on a few dozen tokens.
TOLERANCE = 2e-2
LOAD_OFFLINE = "--load-offline"


def kernel_version(repo: str) -> int | None:
    """The major version transformers loads for `repo` (FLASH_ATTN_KERNEL_VERSIONS)."""
    from transformers.integrations.hub_kernels import get_attn_kernel_version

    return get_attn_kernel_version(repo)


def fetch(repo: str):
    from kernels import get_kernel

    return get_kernel(repo, version=kernel_version(repo))


def varlen_reference(q, k, v, cu_seqlens):
    """Causal attention of each packed sequence alone, through SDPA: q, k, v are (tokens, heads, dim)."""
    import torch
    import torch.nn.functional as F

    outs = []
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        # (tokens, heads, dim) -> (1, heads, tokens, dim); fp32 for the reference
        qs, ks, vs = (t[start:end].transpose(0, 1).unsqueeze(0).float() for t in (q, k, v))
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)[0].transpose(0, 1))
    return torch.cat(outs)


def packed_inputs(device: str, lengths=(11, 23), heads: int = 4, dim: int = 64, dtype=None):
    import torch

    generator = torch.Generator().manual_seed(0)
    total = sum(lengths)
    q, k, v = (torch.randn(total, heads, dim, generator=generator).to(device=device, dtype=dtype or torch.bfloat16)
               for _ in range(3))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    return q, k, v, cu, max(lengths)


def varlen_error(kernel, device: str = "cuda") -> float:
    """Largest difference between the kernel's varlen attention on packed sequences and SDPA on each alone."""
    q, k, v, cu, longest = packed_inputs(device)
    out = kernel.flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=longest,
                                        max_seqlen_k=longest, causal=True)
    out = out[0] if isinstance(out, tuple) else out
    return float((out.float() - varlen_reference(q, k, v, cu)).abs().max())


def loads_offline(repo: str) -> str | None:
    """None when a fresh process loads `repo` from the cache with HF_HUB_OFFLINE=1; else what it printed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "trainkit.preflight.attention_fetch", LOAD_OFFLINE, repo],
                          env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def prepare(config, report: Report, device: str = "cuda") -> None:
    """Fetch and check the chosen Hub kernel on `device`; findings into `report`."""
    chosen = config.attention
    if config.device != "cuda":
        report.warning(f"no CUDA here: attn_implementation resolves to {chosen.label}; nothing to fetch",
                       "run the setup on the GPU machine (scripts/setup_runpod_h100.sh)")
        return
    if chosen.hub_kernel is None:
        if chosen.implementation == "sdpa":
            report.warning(f"attention: sdpa ({chosen.why}): packed rows pay for a block mask",
                           "install the pinned kernels (pip install -r the env, or scripts/setup_runpod_h100.sh "
                           "--recreate), or compare packing: false with make bench")
        else:
            report.ok(f"attention: {chosen.label} ({chosen.why}); nothing to fetch")
        return
    repo = chosen.hub_kernel
    try:
        kernel = fetch(repo)
    except Exception as exc:  # the Hub, the network, no build for this torch/CUDA: all mean "not usable"
        report.error(f"could not fetch the attention kernel {repo}: {exc.__class__.__name__}: {exc}"[:400],
                     "check the network and re-run the setup; or set attn_implementation: sdpa in the config")
        return
    report.ok(f"attention kernel {repo} fetched into the HF cache")
    problem = loads_offline(repo)
    if problem:
        report.error(f"the attention kernel {repo} does not load offline from the HF cache: {problem}"[:400],
                     "re-run the setup with the network up; or set attn_implementation: sdpa")
        return
    try:
        error = varlen_error(kernel, device)
    except Exception as exc:  # an ABI or driver mismatch shows here first
        report.error(f"the attention kernel {repo} fails on this GPU: {exc.__class__.__name__}: {exc}"[:400],
                     "set attn_implementation: sdpa in the config (slower, correct), and report the versions "
                     "(torch, CUDA, kernels) with the log")
        return
    if error > TOLERANCE:
        report.error(f"the attention kernel {repo} gives wrong results on packed sequences (max error {error:.3g} "
                     f"against SDPA, over {TOLERANCE})", "set attn_implementation: sdpa in the config")
        return
    report.ok(f"attention: {chosen.label}: loads offline, packed sequences match SDPA (max error {error:.2g})")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [LOAD_OFFLINE]:
        fetch(argv[1])
        return ExitCode.OK
    parser = argparse.ArgumentParser(prog="scripts/prefetch_attention.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/training_config_h100.yaml", help="the config to train")
    parser.add_argument("--tag", default="SETUP-H100", help="tag of the progress lines")
    args = parser.parse_args(argv)
    from trainkit.config.settings import parse

    report = Report(args.tag)
    try:
        config = parse(["--config", args.config])
    except TrainkitError as exc:
        protocol.error(exc.message, exc.hint)
        return exc.exit_code
    prepare(config, report)
    report.print_findings()
    if report.errors:
        return ExitCode.ERROR
    protocol.success(f"attention ready: {config.attention.label}")
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
