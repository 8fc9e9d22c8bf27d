"""FlashMLA's public Python API (same names, parameters, defaults, return shapes and dtypes),
on top of the flashmla C++ library.

Tensors may be torch tensors (CPU or CUDA: outputs are torch tensors on the same device, the
work runs on ``torch.cuda.current_stream()``), numpy arrays (outputs are numpy arrays; bfloat16
and float8 arrays are ``ml_dtypes`` arrays, numpy having neither), or any other DLPack array
(CPU arrays are read through ``numpy.from_dlpack`` and give numpy outputs, GPU arrays through
``torch.from_dlpack`` and give torch outputs).

Dense-decode metadata (``get_mla_metadata``):
  * New form, ``get_mla_metadata()`` with no arguments: returns ``(FlashMLASchedMeta(), None)``,
    an empty object filled by the first ``flash_mla_with_kvcache`` call (it plans the split-KV
    schedule for that call's ``cache_seqlens`` and allocates the scratch, once) and reused by
    later calls with the same shapes and the same ``cache_seqlens`` values.
  * Old form, ``get_mla_metadata(cache_seqlens, num_q_tokens_per_head_k, num_heads_k,
    num_heads_q=None, is_fp8_kvcache=False, topk=None)``: plans at once and returns
    ``(tile_scheduler_metadata, num_splits)``:
      - ``tile_scheduler_metadata``: int32 ``[num_parts, cols]`` on ``cache_seqlens``'s device:
        the split-KV schedule (``num_parts`` = work partitions, one per group of SMs on a GPU,
        like FlashMLA's ``num_sm_parts``) followed by the split-KV scratch (workspace), so that
        no call allocates anything but its outputs. Because of that scratch, calls that may
        run at the same time (different streams) need a metadata tensor each; FlashMLA, which
        allocates its scratch per call, does not ask this. Calls on one stream share it;
      - ``num_splits``: int32 ``[b]``, a view into the schedule holding how many split-KV
        chunks each request was cut into (FlashMLA's is the ``[b + 1]`` prefix sum of these).
        ``flash_mla_with_kvcache`` does not read it and accepts ``None`` instead.
    ``num_q_tokens_per_head_k`` is ``s_q * num_heads_q // num_heads_k``. With ``topk`` given
    (sparse attention) no schedule is needed: both tensors are empty.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

from . import _C, _ops
from ._arrays import (I32, argument_error, as_torch_args, have_torch, is_torch,
                      normalize_inputs, np_empty, public_argument_names, torch_stream)

if have_torch():
    import torch

    from . import _torch_ops  # registers torch.ops.flash_mla.*

    _constant_result = torch.compiler.assume_constant_result
else:  # pragma: no cover
    torch = None
    _torch_ops = None

    def _constant_result(fn):
        return fn

Tensor = Any  # torch.Tensor | numpy.ndarray | any DLPack array

_DENSE_ARG_NAMES = {"sched_meta": "tile_scheduler_metadata", "workspace": "tile_scheduler_metadata",
                    "plan": "tile_scheduler_metadata"}
_SPARSE_ARG_NAMES = {"extra_indices": "extra_indices_in_kvcache"}
_PLAN_ARG_NAMES = {"b": "cache_seqlens", "s_q": "num_q_tokens_per_head_k", "h_q": "num_heads_q",
                   "h_kv": "num_heads_k"}
_HEAD_DIM_V = 512


@dataclasses.dataclass
class FlashMLASchedMeta:
    """Tile-scheduler metadata of the no-argument ``get_mla_metadata()``: filled by the first
    ``flash_mla_with_kvcache`` call, reused by later calls with the same shapes and the same
    ``cache_seqlens`` (and ``topk_length``) values."""

    @dataclasses.dataclass
    class Config:
        b: int
        s_q: int
        h_q: int
        page_block_size: int
        h_k: int

        causal: bool
        is_fp8_kvcache: bool
        topk: Optional[int]

        extra_page_block_size: Optional[int]
        extra_topk: Optional[int]

    have_initialized: bool = False
    config: Optional[Config] = None
    # int32 [num_parts, cols]: split-KV schedule + scratch (dense decode only; see module doc).
    tile_scheduler_metadata: Optional[Tensor] = None
    # int32 [b]: split-KV chunks per request, a view into tile_scheduler_metadata.
    num_splits: Optional[Tensor] = None


@_constant_result
def _metadata_shape(b: int, s_q: int, h_q: int, h_kv: int, device_type: int,
                    device_index: int) -> Tuple[int, int, int]:
    # Pure host computation; constant for a shape and device (torch.compile bakes it in).
    return tuple(_C.decode_metadata_shape(b, s_q, h_q, h_kv, _HEAD_DIM_V, False, device_type,
                                          device_index))


def _device_key(x: Tensor) -> Tuple[int, int]:
    if is_torch(x) and x.is_cuda:
        return 1, x.device.index if x.device.index is not None else torch.cuda.current_device()
    return 0, 0


def _plan(cache_seqlens: Tensor, s_q: int, h_q: int, h_kv: int) -> Tuple[Tensor, Tensor]:
    """Allocates the packed metadata on cache_seqlens's device and plans into it."""
    b = int(cache_seqlens.shape[0])
    rows, cols, splits_begin = _metadata_shape(b, s_q, h_q, h_kv, *_device_key(cache_seqlens))
    if is_torch(cache_seqlens):
        meta = torch.empty((rows, cols), dtype=torch.int32, device=cache_seqlens.device)
        _torch_ops.call("dense_decode_plan", cache_seqlens, meta, s_q, h_q, h_kv, _HEAD_DIM_V,
                        False)
        num_splits = meta.view(-1)[splits_begin:splits_begin + b]
    else:
        meta = np_empty((rows, cols), I32)
        _ops.dense_decode_plan(cache_seqlens, meta, s_q, h_q, h_kv, _HEAD_DIM_V, False, 0)
        num_splits = meta.reshape(-1)[splits_begin:splits_begin + b]
    return meta, num_splits


def get_mla_metadata(
    cache_seqlens: Optional[Tensor] = None,
    num_q_tokens_per_head_k: Optional[int] = None,
    num_heads_k: Optional[int] = None,
    num_heads_q: Optional[int] = None,
    is_fp8_kvcache: bool = False,
    topk: Optional[int] = None,
) -> Tuple[Any, Optional[Tensor]]:
    """Tile-scheduler metadata for ``flash_mla_with_kvcache``, in either of FlashMLA's forms.

    Arguments (old form; call with no arguments for the new, lazily filled form):
        cache_seqlens: [b] int32, the KV length of each request.
        num_q_tokens_per_head_k: s_q * num_heads_q // num_heads_k.
        num_heads_k: h_kv.
        num_heads_q: h_q (optional; without it the schedule is sized from the product above,
            which is all it depends on).
        is_fp8_kvcache: accepted for compatibility (the schedule does not depend on it).
        topk: sparse attention's topk; when given no schedule is needed and empty tensors are
            returned.

    Returns:
        New form: ``(FlashMLASchedMeta(), None)``.
        Old form: ``(tile_scheduler_metadata [num_parts, cols] int32, num_splits [b] int32)``,
        see the module documentation for their content.
    """
    del is_fp8_kvcache  # the schedule is the same for both caches
    if cache_seqlens is None:
        return FlashMLASchedMeta(), None
    (cache_seqlens,) = normalize_inputs(cache_seqlens)
    op = "get_mla_metadata"
    if num_q_tokens_per_head_k is None or num_heads_k is None:
        missing = "num_q_tokens_per_head_k" if num_q_tokens_per_head_k is None else "num_heads_k"
        raise argument_error(ValueError, op, missing,
                             "is required with cache_seqlens (or call get_mla_metadata() with "
                             "no arguments for the lazily filled metadata)")
    shape = getattr(cache_seqlens, "shape", None)
    if shape is None or len(shape) != 1:
        raise argument_error(ValueError, op, "cache_seqlens",
                             f"expected rank 1 [b], got shape {list(shape) if shape else shape}")
    if topk is not None:
        if is_torch(cache_seqlens):
            empty = lambda s: torch.empty(s, dtype=torch.int32, device=cache_seqlens.device)
        else:
            empty = lambda s: np_empty(s, I32)
        return empty((0, 0)), empty((0,))
    h_kv = int(num_heads_k)
    if num_heads_q is None:
        s_q, h_q = int(num_q_tokens_per_head_k), h_kv
    else:
        h_q = int(num_heads_q)
        if h_q < 1 or (num_q_tokens_per_head_k * h_kv) % h_q != 0:
            raise argument_error(ValueError, op, "num_q_tokens_per_head_k",
                                 f"expected s_q * num_heads_q // num_heads_k with num_heads_q = "
                                 f"{h_q}, num_heads_k = {h_kv}, got {num_q_tokens_per_head_k}")
        s_q = int(num_q_tokens_per_head_k) * h_kv // h_q
    with public_argument_names(_PLAN_ARG_NAMES):
        return _plan(cache_seqlens, s_q, h_q, h_kv)


def _shape(x: Tensor, rank: int) -> Optional[Tuple[int, ...]]:
    return _ops.dims(x, rank)


def _check_config(meta: FlashMLASchedMeta, config: FlashMLASchedMeta.Config) -> None:
    if not meta.have_initialized:
        meta.have_initialized = True
        meta.config = config
        return
    old = meta.config
    for field in dataclasses.fields(config):
        was, now = getattr(old, field.name), getattr(config, field.name)
        if was != now:
            raise argument_error(
                ValueError, "flash_mla_with_kvcache", "tile_scheduler_metadata",
                f"was filled by a call with {field.name} = {was}, this call has {field.name} = "
                f"{now}; use one get_mla_metadata() object per batch shape")


def flash_mla_with_kvcache(
    q: Tensor,
    k_cache: Tensor,
    block_table: Optional[Tensor],
    cache_seqlens: Optional[Tensor],
    head_dim_v: int,
    tile_scheduler_metadata: Any,
    num_splits: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    is_fp8_kvcache: bool = False,
    indices: Optional[Tensor] = None,
    attn_sink: Optional[Tensor] = None,
    extra_k_cache: Optional[Tensor] = None,
    extra_indices_in_kvcache: Optional[Tensor] = None,
    topk_length: Optional[Tensor] = None,
    extra_topk_length: Optional[Tensor] = None,
    out: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """MLA decoding over a paged KV cache: dense (block_table + cache_seqlens) or sparse (indices).

    Arguments:
        q: [b, s_q, h_q, d_qk] bfloat16 (float16 too for dense), d_qk = 576 (or 512, MODEL1).
        k_cache: dense: [num_blocks, page_block_size, h_kv, d_qk] in q's dtype.
            sparse: FP8 cache, uint8 or float8_e4m3fn [num_blocks, page_block_size, 1, bytes],
            bytes = 656 (V3.2 layout, d_qk 576) or 584 (MODEL1 nominal view, d_qk 512); the
            block stride may exceed one block's bytes (see quantize_kv_cache).
        block_table: [b, max_blocks_per_seq] int32 (dense; ignored by sparse attention).
        cache_seqlens: [b] int32 (dense; ignored by sparse attention).
        head_dim_v: 512.
        tile_scheduler_metadata: from get_mla_metadata(), either form (see the module doc).
        num_splits: from the old get_mla_metadata() form, or None (not read).
        softmax_scale: default d_qk ** -0.5.
        causal: query i of s_q sees keys j <= s_k - s_q + i (dense only).
        is_fp8_kvcache: True for sparse attention (FP8 cache). Dense decoding over an FP8 cache
            is not implemented (NotImplementedError).
        indices: [b, s_q, topk] int32, block * page_block_size + offset; -1 = invalid. Turns on
            sparse attention.
        attn_sink: [h_q] float32: out *= 1 / (1 + exp(attn_sink - lse)); lse is unchanged.
        extra_k_cache, extra_indices_in_kvcache: a second scope attended under the same softmax.
        topk_length, extra_topk_length: [b] int32: only the first topk_length[r] indices count.
        out: optional [b, s_q, h_q, head_dim_v] array of the output's dtype on q's device, rows
            8-byte aligned: written in place and returned (no allocation for the output, as
            FlashMLA's `out`; any h_kv).

    Returns:
        out: [b, s_q, h_q, head_dim_v] in q's dtype (bfloat16 for sparse attention).
        lse: [b, h_q, s_q] float32, natural-log log-sum-exp of the scaled logits; +inf where
            nothing was attended (then out = 0).
    """
    op = "flash_mla_with_kvcache"
    (q, k_cache, block_table, cache_seqlens, indices, attn_sink, extra_k_cache,
     extra_indices_in_kvcache, topk_length, extra_topk_length) = normalize_inputs(
        q, k_cache, block_table, cache_seqlens, indices, attn_sink, extra_k_cache,
        extra_indices_in_kvcache, topk_length, extra_topk_length)
    meta = tile_scheduler_metadata
    lazy = isinstance(meta, FlashMLASchedMeta)
    if lazy and num_splits is not None:
        raise argument_error(ValueError, op, "num_splits",
                             "expected None with the metadata of get_mla_metadata() (new form)")
    qd, kd = _shape(q, 4), _shape(k_cache, 4)
    if softmax_scale is None and qd is not None:
        softmax_scale = qd[3] ** -0.5
    sparse = indices is not None

    if lazy and qd is not None and kd is not None:
        topk = _shape(indices, 3)[2] if _shape(indices, 3) else None
        ek = _shape(extra_k_cache, 4)
        ei = _shape(extra_indices_in_kvcache, 3)
        _check_config(meta, FlashMLASchedMeta.Config(
            qd[0], qd[1], qd[2], kd[1], kd[2], bool(causal), bool(is_fp8_kvcache), topk,
            ek[1] if ek else None, ei[2] if ei else None))

    if sparse:
        if causal:
            raise argument_error(ValueError, op, "causal",
                                 "expected False with indices (sparse attention has no mask)")
        if not is_fp8_kvcache:
            raise argument_error(ValueError, op, "is_fp8_kvcache",
                                 "expected True with indices: sparse attention reads an FP8 KV "
                                 "cache (see quantize_kv_cache)")
        with public_argument_names(_SPARSE_ARG_NAMES):
            if is_torch(q):
                a = as_torch_args(op, dict(
                    q=q, k_cache=k_cache, indices=indices, topk_length=topk_length,
                    attn_sink=attn_sink, extra_k_cache=extra_k_cache,
                    extra_indices_in_kvcache=extra_indices_in_kvcache,
                    extra_topk_length=extra_topk_length, **({} if out is None else {"out": out})),
                    optional=("topk_length", "attn_sink", "extra_k_cache",
                              "extra_indices_in_kvcache", "extra_topk_length"))
                if out is None:
                    return _torch_ops.call("sparse_decode", *a.values(), head_dim_v,
                                           softmax_scale)
                return a["out"], _torch_ops.call("sparse_decode_out", *a.values(), head_dim_v,
                                                 softmax_scale)
            return _ops.sparse_decode(np_empty, 0, q, k_cache, indices, topk_length, attn_sink,
                                      extra_k_cache, extra_indices_in_kvcache, extra_topk_length,
                                      head_dim_v, softmax_scale, out)

    for name, value in (("attn_sink", attn_sink), ("extra_k_cache", extra_k_cache),
                        ("extra_indices_in_kvcache", extra_indices_in_kvcache),
                        ("topk_length", topk_length), ("extra_topk_length", extra_topk_length)):
        if value is not None:
            raise argument_error(ValueError, op, name,
                                 "is only used by sparse attention; expected None without indices")
    for name, value in (("block_table", block_table), ("cache_seqlens", cache_seqlens)):
        if value is None:
            raise argument_error(ValueError, op, name,
                                 "is required by dense attention (no indices given)")
    if is_fp8_kvcache:
        raise NotImplementedError(
            "flash_mla_with_kvcache: dense decoding over an FP8 KV cache (is_fp8_kvcache=True "
            "without indices) is not implemented on any device; pass a bfloat16/float16 "
            "k_cache, or indices for sparse attention")
    if lazy:
        if meta.tile_scheduler_metadata is None and qd is not None and kd is not None:
            with public_argument_names({"b": "q", "s_q": "q", "h_q": "q", "h_kv": "k_cache",
                                        "head_dim_v": "head_dim_v"}):
                meta.tile_scheduler_metadata, meta.num_splits = _plan(
                    cache_seqlens, qd[1], qd[2], kd[2])
        tsm = meta.tile_scheduler_metadata
    else:
        if meta is None:
            raise argument_error(ValueError, op, "tile_scheduler_metadata",
                                 "is required by dense attention: pass get_mla_metadata()[0] "
                                 "(or the old form's tensor)")
        tsm = meta
    with public_argument_names(_DENSE_ARG_NAMES):
        if is_torch(q):
            a = as_torch_args(op, dict(q=q, k_cache=k_cache, block_table=block_table,
                                       cache_seqlens=cache_seqlens, tile_scheduler_metadata=tsm,
                                       **({} if out is None else {"out": out})),
                              optional=("tile_scheduler_metadata",))
            if out is None:
                return _torch_ops.call("dense_decode", *a.values(), head_dim_v, softmax_scale,
                                       bool(causal))
            return a["out"], _torch_ops.call("dense_decode_out", *a.values(), head_dim_v,
                                             softmax_scale, bool(causal))
        return _ops.dense_decode(np_empty, 0, q, k_cache, block_table, cache_seqlens, tsm,
                                 head_dim_v, softmax_scale, bool(causal), out)


def flash_mla_sparse_fwd(
    q: Tensor,
    kv: Tensor,
    indices: Tensor,
    sm_scale: float,
    d_v: int = 512,
    attn_sink: Optional[Tensor] = None,
    topk_length: Optional[Tensor] = None,
    indexer_topk: int = 0,
    out: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Sparse attention prefill.

    Arguments:
        q: [s_q, h_q, d_qk] bfloat16, d_qk in {576, 512}.
        kv: [s_kv, h_kv, d_qk] bfloat16.
        indices: [s_q, h_kv, topk] int32; -1 or >= s_kv is invalid.
        sm_scale: scale applied to the logits.
        d_v: 512.
        attn_sink: optional [h_q] float32 (out *= 1 / (1 + exp(attn_sink - lse))).
        topk_length: optional [s_q] int32: only indices[i, :, :topk_length[i]] count.
        indexer_topk: FlashMLA's indexer-LSE extension; only 0 is implemented.
        out: optional [s_q, h_q, d_v] bfloat16 array on q's device: written in place and
            returned (no allocation for the output, as FlashMLA's `out`).

    Returns:
        out [s_q, h_q, d_v] bfloat16, max_logits [s_q, h_q] float32, lse [s_q, h_q] float32.
        max_logits and lse use the natural log of the logits already multiplied by sm_scale
        (FlashMLA's current convention); where nothing is attended out = 0, max_logits = -inf
        and lse = +inf.
    """
    if indexer_topk:
        raise argument_error(NotImplementedError, "flash_mla_sparse_fwd", "indexer_topk",
                             f"indexer LSE (indexer_topk > 0) is not implemented, got "
                             f"{indexer_topk}")
    q, kv, indices, attn_sink, topk_length = normalize_inputs(q, kv, indices, attn_sink,
                                                              topk_length)
    if is_torch(q):
        a = as_torch_args("flash_mla_sparse_fwd", dict(q=q, kv=kv, indices=indices),)
        o = as_torch_args("flash_mla_sparse_fwd", dict(attn_sink=attn_sink, topk_length=topk_length),
                          optional=("attn_sink", "topk_length"))
        if out is None:
            return _torch_ops.call("sparse_prefill", *a.values(), float(sm_scale), int(d_v),
                                   *o.values())
        out = as_torch_args("flash_mla_sparse_fwd", dict(out=out))["out"]
        return (out, *_torch_ops.call("sparse_prefill_out", *a.values(), float(sm_scale),
                                      int(d_v), *o.values(), out))
    return _ops.sparse_prefill(np_empty, 0, q, kv, indices, float(sm_scale), int(d_v), attn_sink,
                               topk_length, out)


def _varlen(q, k, v, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, dropout_p,
            softmax_scale, causal, names):
    op = "flash_attn_varlen_func"
    if dropout_p != 0.0:
        raise argument_error(NotImplementedError, op, "dropout_p",
                             f"dropout is not implemented; expected 0.0, got {dropout_p}")
    q, k, v, cu_seqlens_qo, cu_seqlens_kv = normalize_inputs(q, k, v, cu_seqlens_qo,
                                                             cu_seqlens_kv)
    qd = _shape(q, 3)
    if softmax_scale is None and qd is not None:
        softmax_scale = qd[2] ** -0.5
    with public_argument_names(names):
        if is_torch(q):
            a = as_torch_args(op, dict(q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_qo,
                                       cu_seqlens_k=cu_seqlens_kv))
            grad = torch.is_grad_enabled() and any(
                t.requires_grad for t in (a["q"], a["k"], a["v"]))
            out, lse = _torch_ops.call("mha_varlen_fwd", *a.values(), int(max_seqlen_qo),
                                       int(max_seqlen_kv), softmax_scale, bool(causal),
                                       autograd=grad)
        else:
            out, lse = _ops.mha_varlen_fwd(np_empty, 0, q, k, v, cu_seqlens_qo, cu_seqlens_kv,
                                           int(max_seqlen_qo), int(max_seqlen_kv), softmax_scale,
                                           bool(causal))
    # FlashMLA returns lse as [total_q, h_q], a transposed view of a [h_q, total_q] buffer.
    return out, lse.T


_VARLEN_NAMES = {"cu_seqlens_q": "cu_seqlens_qo", "cu_seqlens_k": "cu_seqlens_kv",
                 "max_seqlen_q": "max_seqlen_qo", "max_seqlen_k": "max_seqlen_kv"}
_VARLEN_BWD_NAMES = dict(_VARLEN_NAMES, dout="do")


def _transposed(x: Tensor) -> Tensor:
    return None if x is None else x.T


def _flash_attn_varlen_backward(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens_qo: Tensor,
    cu_seqlens_kv: Tensor,
    max_seqlen_qo: int,
    max_seqlen_kv: int,
    dq: Optional[Tensor] = None,
    dk: Optional[Tensor] = None,
    dv: Optional[Tensor] = None,
    causal: bool = False,
    softmax_scale: Optional[float] = None,
    is_varlen: bool = True,
    dlse: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """The backward of ``flash_attn_varlen_func`` (FlashMLA's function of the same name; what
    autograd calls for torch tensors), on any device with a kernel (the CPU today).

    Arguments:
        do: [total_q, h_q, 128], the gradient of ``out``, in q's dtype.
        q, k, v, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, causal,
            softmax_scale: as given to the forward.
        out, lse: the forward's results (lse [total_q, h_q] as the forward returns it).
        dq, dk, dv: optional outputs to write (shaped like q, k, v, in q's dtype).
        dlse: optional [total_q, h_q] float32 gradient of ``lse`` (not in FlashMLA, whose
            backward ignores it); None means zero.
        is_varlen: accepted for compatibility.
    Grouped-query attention (h_kv < h_q) is supported (FlashMLA's SM100 backward is not).

    Returns:
        (dq, dk, dv) in q's dtype. Rows of q / k / v outside every sequence, queries that
        attended nothing and keys no query sees get zeros.
    """
    del is_varlen
    op = "flash_attn_varlen_func"
    do, q, k, v, out, lse, cu_seqlens_qo, cu_seqlens_kv, dlse = normalize_inputs(
        do, q, k, v, out, lse, cu_seqlens_qo, cu_seqlens_kv, dlse)
    qd = _shape(q, 3)
    if softmax_scale is None and qd is not None:
        softmax_scale = qd[2] ** -0.5
    with public_argument_names(_VARLEN_BWD_NAMES):
        if is_torch(q) and dq is None and dk is None and dv is None:
            a = as_torch_args(op, dict(dout=do, q=q, k=k, v=v, out=out, lse=_transposed(lse),
                                       dlse=_transposed(dlse), cu_seqlens_q=cu_seqlens_qo,
                                       cu_seqlens_k=cu_seqlens_kv), optional=("dlse",))
            return _torch_ops.call("mha_varlen_bwd", *a.values(), int(max_seqlen_qo),
                                   int(max_seqlen_kv), softmax_scale, bool(causal))
        empty = _torch_ops._empty_on(q) if is_torch(q) else np_empty
        stream = torch_stream(q) if is_torch(q) else 0
        return _ops.mha_varlen_bwd(empty, stream, do, q, k, v, out, _transposed(lse),
                                   _transposed(dlse), cu_seqlens_qo, cu_seqlens_kv,
                                   int(max_seqlen_qo), int(max_seqlen_kv), softmax_scale,
                                   bool(causal), dq, dk, dv)


def flash_attn_varlen_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_qo: Tensor,
    cu_seqlens_kv: Tensor,
    max_seqlen_qo: int,
    max_seqlen_kv: int,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    deterministic: bool = False,
    is_varlen: bool = True,
) -> Tuple[Tensor, Tensor]:
    """Dense MHA prefill over variable-length sequences. For torch tensors that require grad,
    autograd runs ``_flash_attn_varlen_backward`` (the gradients of out and of lse).

    Arguments:
        q: [total_q, h_q, d_qk] bfloat16/float16, d_qk in {128, 192}.
        k: [total_k, h_kv, d_qk]; v: [total_k, h_kv, 128]; h_q % h_kv == 0.
        cu_seqlens_qo, cu_seqlens_kv: [b + 1] int32 offsets.
        max_seqlen_qo, max_seqlen_kv: upper bounds of the sequence lengths.
        dropout_p: must be 0.0. softmax_scale: default d_qk ** -0.5.
        causal: bottom-right aligned (query i sees keys j <= i + s_k - s_q).
        deterministic, is_varlen: accepted for compatibility (forward and backward are
            deterministic).

    Returns:
        out [total_q, h_q, 128] in q's dtype; lse [total_q, h_q] float32 (a transposed view of
        a [h_q, total_q] buffer, as FlashMLA returns it).
    """
    del deterministic, is_varlen
    return _varlen(q, k, v, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv,
                   dropout_p, softmax_scale, causal, _VARLEN_NAMES)


def flash_attn_varlen_qkvpacked_func(
    qkv: Tensor,
    cu_seqlens: Tensor,
    max_seqlen: int,
    head_dim_qk: int,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    deterministic: bool = False,
    is_varlen: bool = True,
) -> Tuple[Tensor, Tensor]:
    """``flash_attn_varlen_func`` with q, k, v packed along the last dim of
    ``qkv`` [total, h, 2 * head_dim_qk + d_v]."""
    del deterministic, is_varlen
    (qkv,) = normalize_inputs(qkv)
    if _shape(qkv, 3) is None or qkv.shape[2] <= 2 * head_dim_qk:
        raise argument_error(ValueError, "flash_attn_varlen_qkvpacked_func", "qkv",
                             f"expected shape [total, h, 2 * head_dim_qk + d_v] with head_dim_qk "
                             f"= {head_dim_qk}, got {list(getattr(qkv, 'shape', []))}")
    names = {"q": "qkv", "k": "qkv", "v": "qkv", "cu_seqlens_q": "cu_seqlens",
             "cu_seqlens_k": "cu_seqlens", "max_seqlen_q": "max_seqlen",
             "max_seqlen_k": "max_seqlen"}
    return _varlen(qkv[:, :, :head_dim_qk], qkv[:, :, head_dim_qk:2 * head_dim_qk],
                   qkv[:, :, 2 * head_dim_qk:], cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                   dropout_p, softmax_scale, causal, names)


def flash_attn_varlen_kvpacked_func(
    q: Tensor,
    kv: Tensor,
    cu_seqlens_qo: Tensor,
    cu_seqlens_kv: Tensor,
    max_seqlen_qo: int,
    max_seqlen_kv: int,
    head_dim_qk: int,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    deterministic: bool = False,
    is_varlen: bool = True,
) -> Tuple[Tensor, Tensor]:
    """``flash_attn_varlen_func`` with k, v packed along the last dim of
    ``kv`` [total_k, h_kv, head_dim_qk + d_v]."""
    del deterministic, is_varlen
    (kv,) = normalize_inputs(kv)
    if _shape(kv, 3) is None or kv.shape[2] <= head_dim_qk:
        raise argument_error(ValueError, "flash_attn_varlen_kvpacked_func", "kv",
                             f"expected shape [total_k, h_kv, head_dim_qk + d_v] with "
                             f"head_dim_qk = {head_dim_qk}, got {list(getattr(kv, 'shape', []))}")
    names = dict(_VARLEN_NAMES, k="kv", v="kv")
    return _varlen(q, kv[:, :, :head_dim_qk], kv[:, :, head_dim_qk:], cu_seqlens_qo,
                   cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, dropout_p, softmax_scale, causal,
                   names)
