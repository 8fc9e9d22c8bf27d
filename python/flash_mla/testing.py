"""Testing helper: check an MLA decoding result against a reference and report the error.

``verify_mla_attention(out, lse, <the flash_mla_with_kvcache arguments>)`` recomputes the result
on the host, either with flashmla's CPU backend (``reference="cpu"``: float32 accumulation, the
library's oracle) or with a float64 numpy implementation (``reference="float64"``), and compares
with FlashMLA's tolerances (SPEC.md §7): out within ``atol + rtol * |ref|`` elementwise, cosine
difference <= ``max_cos_diff``, lse within ``lse_rtol`` relative, +inf (nothing attended) in
exactly the same places. FP8 caches are compared against the reference run on the dequantized
cache, so quantization error is not counted as kernel error.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import numpy as np

from ._arrays import is_torch


def _host(x: Any) -> Optional[np.ndarray]:
    """A host numpy copy of x with its dtype kept (bfloat16 as ml_dtypes, float8 as uint8)."""
    if x is None:
        return None
    if is_torch(x):
        import torch

        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        if t.dtype == torch.float8_e4m3fn:
            return t.view(torch.uint8).numpy()
        return t.numpy()
    if isinstance(x, np.ndarray):
        return x
    return np.from_dlpack(x)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


@dataclasses.dataclass
class VerifyReport:
    """What verify_mla_attention found. ``passed`` is the verdict; str() gives a summary."""

    passed: bool
    reference: str
    num_elements: int
    pass_rate: float            # fraction of out elements within atol + rtol * |ref|
    max_abs_err: float
    max_rel_err: float
    cos_diff: float             # 1 - 2 <o, r> / (|o|^2 + |r|^2), FlashMLA's calc_diff
    worst_index: Tuple[int, ...]
    worst_value: float
    worst_expected: float
    lse_max_rel_err: float
    lse_inf_match: bool         # +inf (nothing attended) in exactly the same places
    out_all_finite: bool

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"verify_mla_attention vs {self.reference}: {verdict}; out: {self.pass_rate:.4%} of "
                f"{self.num_elements} within tolerance, max abs err {self.max_abs_err:.3g}, max "
                f"rel err {self.max_rel_err:.3g}, cos diff {self.cos_diff:.3g}, worst at "
                f"{self.worst_index}: got {self.worst_value!r}, expected "
                f"{self.worst_expected!r}; lse: max rel err {self.lse_max_rel_err:.3g}, inf "
                f"positions {'match' if self.lse_inf_match else 'DIFFER'}")


# ---- float64 references --------------------------------------------------------------------------

def _attend(qv: np.ndarray, keys: np.ndarray, d_v: int, scale: float,
            mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """qv [n, d], keys [m, d] -> out [n, d_v], lse [n] (natural log; +inf when nothing)."""
    n = qv.shape[0]
    if keys.shape[0] == 0:
        return np.zeros((n, d_v)), np.full(n, np.inf)
    logits = scale * (qv @ keys.T)
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    mx = logits.max(axis=1, keepdims=True)
    empty = ~np.isfinite(mx[:, 0])
    mx = np.where(np.isfinite(mx), mx, 0.0)
    p = np.exp(logits - mx)
    s = p.sum(axis=1, keepdims=True)
    out = (p @ keys[:, :d_v]) / np.where(s > 0, s, 1.0)
    lse = (np.log(np.where(s > 0, s, 1.0)) + mx)[:, 0]
    out[empty] = 0.0
    lse[empty] = np.inf
    return out, lse


def dense_decode_reference(q, k_cache, block_table, cache_seqlens, head_dim_v=512,
                           softmax_scale=None, causal=False):
    """float64 dense decoding over a paged cache (numpy inputs): (out, lse)."""
    q, k = _f64(q), _f64(k_cache)
    b, s_q, h_q, d = q.shape
    _, pbs, h_kv, _ = k.shape
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    out = np.zeros((b, s_q, h_q, head_dim_v))
    lse = np.zeros((b, h_q, s_q))
    group = h_q // h_kv
    for r in range(b):
        n = int(cache_seqlens[r])
        t = np.arange(n)
        keys = k[block_table[r, t // pbs], t % pbs]  # [n, h_kv, d]
        mask = None
        if causal:
            mask = np.arange(n)[None, :] <= (n - s_q + np.arange(s_q))[:, None]
        for h in range(h_q):
            o, l = _attend(q[r, :, h], keys[:, h // group], head_dim_v, scale, mask)
            out[r, :, h], lse[r, h] = o, l
    return out, lse


def sparse_decode_reference(q, k_flat, indices, topk_length=None, attn_sink=None,
                            extra_k_flat=None, extra_indices=None, extra_topk_length=None,
                            head_dim_v=512, softmax_scale=None):
    """float64 sparse decoding; k_flat/extra_k_flat are dequantized caches [slots, d]."""
    q = _f64(q)
    b, s_q, h_q, d = q.shape
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    out = np.zeros((b, s_q, h_q, head_dim_v))
    lse = np.zeros((b, h_q, s_q))

    def gather(kf, idx, n):
        sel = idx[:n]
        sel = sel[(sel >= 0) & (sel < kf.shape[0])]
        return kf[sel]

    for r in range(b):
        for i in range(s_q):
            n = indices.shape[2] if topk_length is None else int(topk_length[r])
            keys = gather(k_flat, indices[r, i], n)
            if extra_k_flat is not None:
                m = extra_indices.shape[2] if extra_topk_length is None else int(extra_topk_length[r])
                keys = np.concatenate([keys, gather(extra_k_flat, extra_indices[r, i], m)])
            o, l = _attend(q[r, i], keys, head_dim_v, scale)
            if attn_sink is not None:
                with np.errstate(over="ignore", invalid="ignore"):  # inf sinks / empty rows
                    o = o / (1.0 + np.exp(_f64(attn_sink) - l))[:, None]
                o[~np.isfinite(l)] = 0.0
            out[r, i], lse[r, :, i] = o, l
    return out, lse


def _flat_fp8(quant: np.ndarray, layout: str) -> np.ndarray:
    from .kv_cache import dequantize_kv_cache

    deq = _f64(dequantize_kv_cache(quant, layout))
    return deq.reshape(-1, deq.shape[-1])


# ---- the helper ---------------------------------------------------------------------------------

def verify_mla_attention(
    out: Any,
    lse: Any,
    q: Any,
    k_cache: Any,
    block_table: Optional[Any] = None,
    cache_seqlens: Optional[Any] = None,
    head_dim_v: int = 512,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    is_fp8_kvcache: bool = False,
    indices: Optional[Any] = None,
    attn_sink: Optional[Any] = None,
    extra_k_cache: Optional[Any] = None,
    extra_indices_in_kvcache: Optional[Any] = None,
    topk_length: Optional[Any] = None,
    extra_topk_length: Optional[Any] = None,
    *,
    reference: str = "float64",
    atol: float = 8e-4,
    rtol: float = 2 / 128,
    max_cos_diff: float = 5e-6,
    lse_rtol: float = 8 / 65536,
    raise_on_failure: bool = False,
) -> VerifyReport:
    """Checks ``(out, lse)`` of a ``flash_mla_with_kvcache`` call made with the same arguments.

    reference: "float64" (numpy float64 implementation) or "cpu" (flashmla's CPU backend).
    Tolerances default to FlashMLA's for dense decoding. Returns a VerifyReport; with
    ``raise_on_failure`` an AssertionError carrying the report's summary is raised on failure.
    """
    h = {name: _host(x) for name, x in dict(
        out=out, lse=lse, q=q, k_cache=k_cache, block_table=block_table,
        cache_seqlens=cache_seqlens, indices=indices, attn_sink=attn_sink,
        extra_k_cache=extra_k_cache, extra_indices=extra_indices_in_kvcache,
        topk_length=topk_length, extra_topk_length=extra_topk_length).items()}
    if reference == "cpu":
        from .flash_mla_interface import flash_mla_with_kvcache, get_mla_metadata

        meta, _ = get_mla_metadata()
        ref_out, ref_lse = flash_mla_with_kvcache(
            h["q"], h["k_cache"], h["block_table"], h["cache_seqlens"], head_dim_v, meta,
            softmax_scale=softmax_scale, causal=causal, is_fp8_kvcache=is_fp8_kvcache,
            indices=h["indices"], attn_sink=h["attn_sink"], extra_k_cache=h["extra_k_cache"],
            extra_indices_in_kvcache=h["extra_indices"], topk_length=h["topk_length"],
            extra_topk_length=h["extra_topk_length"])
        ref_out, ref_lse = _f64(ref_out), _f64(ref_lse)
    elif reference == "float64":
        if indices is None:
            ref_out, ref_lse = dense_decode_reference(
                h["q"], h["k_cache"], h["block_table"], h["cache_seqlens"], head_dim_v,
                softmax_scale, causal)
        else:
            layout = "v32" if h["q"].shape[-1] == 576 else "model1"
            ref_out, ref_lse = sparse_decode_reference(
                h["q"], _flat_fp8(h["k_cache"], layout), h["indices"], h["topk_length"],
                h["attn_sink"],
                None if h["extra_k_cache"] is None else _flat_fp8(h["extra_k_cache"], layout),
                h["extra_indices"], h["extra_topk_length"], head_dim_v, softmax_scale)
    else:
        raise ValueError(f"verify_mla_attention: argument 'reference': expected \"float64\" or "
                         f"\"cpu\", got {reference!r}")
    report = compare(_f64(h["out"]), _f64(h["lse"]), ref_out, ref_lse, reference=reference,
                     atol=atol, rtol=rtol, max_cos_diff=max_cos_diff, lse_rtol=lse_rtol)
    if raise_on_failure and not report.passed:
        raise AssertionError(str(report))
    return report


def compare(o: np.ndarray, l: np.ndarray, ro: np.ndarray, rl: np.ndarray, *, reference: str,
            atol: float, rtol: float, max_cos_diff: float, lse_rtol: float) -> VerifyReport:
    """The comparison behind verify_mla_attention (float64 arrays of equal shapes)."""
    if o.shape != ro.shape or l.shape != rl.shape:
        raise ValueError(f"verify_mla_attention: shapes differ: out {o.shape} vs {ro.shape}, lse "
                         f"{l.shape} vs {rl.shape}")
    err = np.abs(o - ro)
    err = np.where(np.isnan(err), np.inf, err)
    tol = atol + rtol * np.abs(ro)
    ok = err <= tol
    worst = np.unravel_index(int(np.argmax(err - tol)), o.shape) if o.size else ()
    denom = float((o * o + ro * ro).sum())
    cos_diff = 1.0 - 2.0 * float((o * ro).sum()) / denom if denom > 0 else 0.0
    inf_o, inf_r = np.isposinf(l), np.isposinf(rl)
    finite = ~inf_o & ~inf_r
    lse_rel = (np.abs(l[finite] - rl[finite]) / np.maximum(np.abs(rl[finite]), 1e-30)) \
        if finite.any() else np.zeros(1)
    lse_rel = np.where(np.isnan(lse_rel), np.inf, lse_rel)
    rel = err / np.maximum(np.abs(ro), 1e-30)
    report = VerifyReport(
        passed=bool(ok.all()) and cos_diff <= max_cos_diff and bool((lse_rel <= lse_rtol).all())
        and bool((inf_o == inf_r).all()),
        reference=reference,
        num_elements=int(o.size),
        pass_rate=float(ok.mean()) if o.size else 1.0,
        max_abs_err=float(err.max()) if o.size else 0.0,
        max_rel_err=float(rel.max()) if o.size else 0.0,
        cos_diff=cos_diff,
        worst_index=tuple(int(i) for i in worst),
        worst_value=float(o[worst]) if o.size else 0.0,
        worst_expected=float(ro[worst]) if o.size else 0.0,
        lse_max_rel_err=float(lse_rel.max()),
        lse_inf_match=bool((inf_o == inf_r).all()),
        out_all_finite=bool(np.isfinite(o).all()),
    )
    return report
