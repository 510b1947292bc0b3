"""Setup's attention step: the chosen Hub kernel is fetched, loads offline, and its packed attention matches SDPA
on each sequence alone; any failure is one ERROR that says what to set instead. The kernel is injected here."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from trainkit.config.attention import Choice
from trainkit.core.report import Report
from trainkit.preflight import attention_fetch
from trainkit.preflight.attention_fetch import packed_inputs, prepare, varlen_reference

FA3 = Choice("kernels-community/vllm-flash-attn3", "flash-attn 3 (Hub kernel kernels-community/vllm-flash-attn3)",
             "auto: compute capability 9.0 is Hopper", True, "kernels-community/vllm-flash-attn3")


def test_the_reference_is_causal_attention_with_a_block_diagonal_mask_over_the_packed_row():
    q, k, v, cu, _ = packed_inputs("cpu", dtype=torch.float32)
    total = q.shape[0]
    allowed = torch.zeros(total, total, dtype=torch.bool)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        allowed[start:end, start:end] = torch.ones(end - start, end - start).tril().bool()
    row = F.scaled_dot_product_attention(*(t.transpose(0, 1)[None] for t in (q, k, v)), attn_mask=allowed)
    assert torch.allclose(varlen_reference(q, k, v, cu), row[0].transpose(0, 1), atol=1e-5)


def kernel(varlen):
    return SimpleNamespace(flash_attn_varlen_func=varlen)


def right(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal):
    return varlen_reference(q, k, v, cu_seqlens_q).to(q.dtype), None  # FA3 builds return (out, lse)


def leaky(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal):
    whole = torch.tensor([0, q.shape[0]], dtype=torch.int32)  # the sequences see each other
    return varlen_reference(q, k, v, whole).to(q.dtype)


def run(monkeypatch, fetched, offline=None):
    monkeypatch.setattr(attention_fetch, "fetch", fetched)
    monkeypatch.setattr(attention_fetch, "loads_offline", lambda repo: offline)
    report = Report("SETUP-H100")
    prepare(SimpleNamespace(device="cuda", attention=FA3), report, device="cpu")
    return report


def test_a_kernel_that_keeps_packed_sequences_apart_is_ready(monkeypatch):
    report = run(monkeypatch, lambda repo: kernel(right))
    assert not report.errors
    assert report.findings[-1].message.startswith("attention: flash-attn 3 (Hub kernel "
                                                  "kernels-community/vllm-flash-attn3): loads offline, packed "
                                                  "sequences match SDPA (max error ")


def test_a_kernel_that_lets_packed_sequences_see_each_other_is_an_error(monkeypatch):
    report = run(monkeypatch, lambda repo: kernel(leaky))
    [error] = report.errors
    assert error.message.startswith("the attention kernel kernels-community/vllm-flash-attn3 gives wrong results "
                                    "on packed sequences")
    assert error.hint == "set attn_implementation: sdpa in the config"


def test_a_fetch_that_fails_or_a_kernel_that_does_not_load_offline_is_an_error(monkeypatch):
    def unreachable(repo):
        raise OSError("Cannot reach https://huggingface.co")

    [error] = run(monkeypatch, unreachable).errors
    assert error.message == ("could not fetch the attention kernel kernels-community/vllm-flash-attn3: OSError: "
                             "Cannot reach https://huggingface.co")
    [error] = run(monkeypatch, lambda repo: kernel(right), offline="LocalEntryNotFoundError").errors
    assert "does not load offline from the HF cache: LocalEntryNotFoundError" in error.message


def test_off_the_gpu_nothing_is_fetched(monkeypatch):
    monkeypatch.setattr(attention_fetch, "fetch", lambda repo: (_ for _ in ()).throw(AssertionError("fetched")))
    report = Report("SETUP-H100")
    prepare(SimpleNamespace(device="cpu", attention=Choice("sdpa", "sdpa", "auto on cpu", False)), report)
    assert [f.message for f in report.warnings] == ["no CUDA here: attn_implementation resolves to sdpa; "
                                                    "nothing to fetch"]
