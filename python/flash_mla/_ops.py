"""Framework-neutral runners: allocate outputs with `empty`, call flash_mla._C, return them.

Each runner takes `empty(shape, dtype_name)` (torch.empty on the input's device, or numpy.empty)
and the raw CUDA stream handle (0 on the CPU). Shapes are read only when the input has the rank
the operation expects; otherwise a placeholder output is allocated and the C++ validation
reports the bad input (rank is checked before any output).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

from . import _C
from ._arrays import BF16, F32, FP16, is_torch, np_dtype_name, to_binding

Empty = Callable[[Sequence[int], str], Any]


def dtype_name(x: Any) -> str:
    if is_torch(x):
        return str(x.dtype).replace("torch.", "")
    return np_dtype_name(x) if hasattr(x, "dtype") else "?"


def dims(x: Any, rank: int) -> Optional[Tuple[int, ...]]:
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != rank:
        return None
    return tuple(int(s) for s in shape)


def _act_dtype(x: Any) -> str:
    """Output dtype that follows an activation input: its own when bf16/fp16, else bf16."""
    name = dtype_name(x)
    return name if name in (BF16, FP16) else BF16


def dense_decode_plan(cache_seqlens: Any, tile_scheduler_metadata: Any, s_q: int, h_q: int,
                      h_kv: int, head_dim_v: int, causal: bool, stream: int) -> None:
    _C.dense_decode_plan(to_binding(cache_seqlens), to_binding(tile_scheduler_metadata), s_q, h_q,
                         h_kv, head_dim_v, causal, stream)


def dense_decode(empty: Empty, stream: int, q: Any, k_cache: Any, block_table: Any,
                 cache_seqlens: Any, tile_scheduler_metadata: Any, head_dim_v: int,
                 softmax_scale: Optional[float], causal: bool,
                 out: Any = None) -> Tuple[Any, Any]:
    """`out`: the caller's output array (checked by the operation like any argument), or None."""
    qd = dims(q, 4)
    if qd is None:
        lse = empty((0,), F32)
        out = empty((0,), _act_dtype(q)) if out is None else out
    else:
        b, s_q, h_q, _ = qd
        if out is None:
            out = empty((b, s_q, h_q, head_dim_v), _act_dtype(q))
        lse = empty((b, h_q, s_q), F32)
    _C.dense_decode(to_binding(q), to_binding(k_cache), to_binding(block_table),
                    to_binding(cache_seqlens), to_binding(tile_scheduler_metadata),
                    to_binding(out), to_binding(lse), head_dim_v, softmax_scale, causal, stream)
    return out, lse


def sparse_decode(empty: Empty, stream: int, q: Any, k_cache: Any, indices: Any,
                  topk_length: Any, attn_sink: Any, extra_k_cache: Any, extra_indices: Any,
                  extra_topk_length: Any, head_dim_v: int,
                  softmax_scale: Optional[float], out: Any = None) -> Tuple[Any, Any]:
    """`out`: the caller's output array (checked by the operation like any argument), or None."""
    qd = dims(q, 4)
    if qd is None:
        lse = empty((0,), F32)
        out = empty((0,), BF16) if out is None else out
    else:
        b, s_q, h_q, _ = qd
        if out is None:
            out = empty((b, s_q, h_q, head_dim_v), BF16)
        lse = empty((b, h_q, s_q), F32)
    _C.sparse_decode(to_binding(q), to_binding(k_cache), to_binding(indices),
                     to_binding(topk_length), to_binding(attn_sink), to_binding(extra_k_cache),
                     to_binding(extra_indices), to_binding(extra_topk_length), to_binding(out),
                     to_binding(lse), head_dim_v, softmax_scale, stream)
    return out, lse


def sparse_prefill(empty: Empty, stream: int, q: Any, kv: Any, indices: Any, sm_scale: float,
                   d_v: int, attn_sink: Any, topk_length: Any,
                   out: Any = None) -> Tuple[Any, Any, Any]:
    """`out`: the caller's output array (checked by the operation like any argument), or None."""
    qd = dims(q, 3)
    if qd is None:
        max_logits, lse = empty((0,), F32), empty((0,), F32)
        out = empty((0,), BF16) if out is None else out
    else:
        s_q, h_q, _ = qd
        if out is None:
            out = empty((s_q, h_q, d_v), BF16)
        max_logits = empty((s_q, h_q), F32)
        lse = empty((s_q, h_q), F32)
    _C.sparse_prefill(to_binding(q), to_binding(kv), to_binding(indices), float(sm_scale), d_v,
                      to_binding(attn_sink), to_binding(topk_length), to_binding(out),
                      to_binding(max_logits), to_binding(lse), stream)
    return out, max_logits, lse


def mha_varlen_fwd(empty: Empty, stream: int, q: Any, k: Any, v: Any, cu_seqlens_q: Any,
                   cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int,
                   softmax_scale: Optional[float], causal: bool) -> Tuple[Any, Any]:
    """Returns (out [total_q, h_q, d_v], lse [h_q, total_q] contiguous)."""
    qd, vd = dims(q, 3), dims(v, 3)
    if qd is None or vd is None:
        out, lse = empty((0,), _act_dtype(q)), empty((0,), F32)
    else:
        total_q, h_q, _ = qd
        out = empty((total_q, h_q, vd[2]), _act_dtype(q))
        lse = empty((h_q, total_q), F32)
    _C.mha_varlen_fwd(to_binding(q), to_binding(k), to_binding(v), to_binding(cu_seqlens_q),
                      to_binding(cu_seqlens_k), int(max_seqlen_q), int(max_seqlen_k),
                      softmax_scale, causal, to_binding(out), to_binding(lse), stream)
    return out, lse


def mha_varlen_bwd(empty: Empty, stream: int, dout: Any, q: Any, k: Any, v: Any, out: Any,
                   lse: Any, dlse: Any, cu_seqlens_q: Any, cu_seqlens_k: Any,
                   max_seqlen_q: int, max_seqlen_k: int, softmax_scale: Optional[float],
                   causal: bool, dq: Any = None, dk: Any = None,
                   dv: Any = None) -> Tuple[Any, Any, Any]:
    """Returns (dq, dk, dv): the caller's arrays where given, else new ones shaped like q, k, v.
    lse and dlse (None: zero) are [h_q, total_q], any strides."""
    def like(x: Any, given: Any) -> Any:
        if given is not None:
            return given
        xd = dims(x, 3)
        return empty(xd if xd is not None else (0,), _act_dtype(q))

    dq, dk, dv = like(q, dq), like(k, dk), like(v, dv)
    _C.mha_varlen_bwd(to_binding(dout), to_binding(q), to_binding(k), to_binding(v),
                      to_binding(out), to_binding(lse), to_binding(dlse),
                      to_binding(cu_seqlens_q), to_binding(cu_seqlens_k), int(max_seqlen_q),
                      int(max_seqlen_k), softmax_scale, causal, to_binding(dq), to_binding(dk),
                      to_binding(dv), stream)
    return dq, dk, dv


def kv_quantize(layout: str, k_cache: Any, quant_cache: Any, stream: int) -> None:
    _C.kv_quantize(layout, to_binding(k_cache), to_binding(quant_cache), stream)


def kv_dequantize(layout: str, quant_cache: Any, k_cache: Any, stream: int) -> None:
    _C.kv_dequantize(layout, to_binding(quant_cache), to_binding(k_cache), stream)
