"""PyTorch custom ops (torch.library.custom_op) for every flashmla operation.

Imported only when PyTorch is importable. Registering the operations as custom ops with fake
(meta) implementations lets torch.compile trace through them (fullgraph) and lets the dispatcher
route CPU and CUDA tensors alike. Each real implementation:
  - allocates its outputs with torch.empty on the input's device (nothing else: dense-decode
    scratch lives in the metadata tensor, allocated once by get_mla_metadata / the first call);
  - runs on torch.cuda.current_stream() (passed to C++ as the raw cudaStream_t), so it follows
    the caller's stream and can be captured in a CUDA graph;
  - never synchronizes the host with the device.

Eager calls on plain tensors skip the dispatcher and run the implementation directly (call()):
a Python custom op's dispatch costs more host time than a small decode kernel takes. While
torch.compile traces, for tensor subclasses (FakeTensor, ...) and when autograd must record the
call, the registered op is used.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _ops
from ._arrays import torch_stream

_NS = "flash_mla"


def _empty_on(ref: Tensor):
    device = ref.device

    def empty(shape, name):
        return torch.empty(tuple(shape), dtype=getattr(torch, name), device=device)

    return empty


# ---- dense decode ----

def _dense_decode_plan_impl(cache_seqlens: Tensor, tile_scheduler_metadata: Tensor, s_q: int,
                            h_q: int, h_kv: int, head_dim_v: int, causal: bool) -> None:
    _ops.dense_decode_plan(cache_seqlens, tile_scheduler_metadata, s_q, h_q, h_kv, head_dim_v,
                           causal, torch_stream(cache_seqlens))


dense_decode_plan = torch.library.custom_op(
    f"{_NS}::dense_decode_plan", mutates_args=("tile_scheduler_metadata",))(_dense_decode_plan_impl)


@dense_decode_plan.register_fake
def _(cache_seqlens, tile_scheduler_metadata, s_q, h_q, h_kv, head_dim_v, causal) -> None:
    return None


def _dense_decode_impl(q: Tensor, k_cache: Tensor, block_table: Tensor, cache_seqlens: Tensor,
                       tile_scheduler_metadata: Optional[Tensor], head_dim_v: int,
                       softmax_scale: Optional[float], causal: bool) -> Tuple[Tensor, Tensor]:
    # NOTE: the split-KV scratch inside tile_scheduler_metadata is written, but its content is
    # never observed by anyone: it is declared as not mutated so that torch.compile does not
    # clone the metadata tensor before each call.
    return _ops.dense_decode(_empty_on(q), torch_stream(q), q, k_cache, block_table,
                             cache_seqlens, tile_scheduler_metadata, head_dim_v, softmax_scale,
                             causal)


dense_decode = torch.library.custom_op(
    f"{_NS}::dense_decode", mutates_args=())(_dense_decode_impl)


@dense_decode.register_fake
def _(q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, head_dim_v, softmax_scale,
      causal):
    b, s_q, h_q, _ = q.shape
    return (q.new_empty((b, s_q, h_q, head_dim_v)),
            q.new_empty((b, h_q, s_q), dtype=torch.float32))


# The same into the caller's `out` (flash_mla_with_kvcache(..., out=)): returns lse only.
def _dense_decode_out_impl(q: Tensor, k_cache: Tensor, block_table: Tensor,
                           cache_seqlens: Tensor, tile_scheduler_metadata: Optional[Tensor],
                           out: Tensor, head_dim_v: int, softmax_scale: Optional[float],
                           causal: bool) -> Tensor:
    return _ops.dense_decode(_empty_on(q), torch_stream(q), q, k_cache, block_table,
                             cache_seqlens, tile_scheduler_metadata, head_dim_v, softmax_scale,
                             causal, out)[1]


dense_decode_out = torch.library.custom_op(
    f"{_NS}::dense_decode_out", mutates_args=("out",))(_dense_decode_out_impl)


@dense_decode_out.register_fake
def _(q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, out, head_dim_v,
      softmax_scale, causal):
    b, s_q, h_q, _ = q.shape
    return q.new_empty((b, h_q, s_q), dtype=torch.float32)


# ---- sparse decode ----

def _sparse_decode_impl(q: Tensor, k_cache: Tensor, indices: Tensor,
                        topk_length: Optional[Tensor], attn_sink: Optional[Tensor],
                        extra_k_cache: Optional[Tensor], extra_indices: Optional[Tensor],
                        extra_topk_length: Optional[Tensor], head_dim_v: int,
                        softmax_scale: Optional[float]) -> Tuple[Tensor, Tensor]:
    return _ops.sparse_decode(_empty_on(q), torch_stream(q), q, k_cache, indices, topk_length,
                              attn_sink, extra_k_cache, extra_indices, extra_topk_length,
                              head_dim_v, softmax_scale)


sparse_decode = torch.library.custom_op(
    f"{_NS}::sparse_decode", mutates_args=())(_sparse_decode_impl)


@sparse_decode.register_fake
def _(q, k_cache, indices, topk_length, attn_sink, extra_k_cache, extra_indices,
      extra_topk_length, head_dim_v, softmax_scale):
    b, s_q, h_q, _ = q.shape
    return (q.new_empty((b, s_q, h_q, head_dim_v), dtype=torch.bfloat16),
            q.new_empty((b, h_q, s_q), dtype=torch.float32))


def _sparse_decode_out_impl(q: Tensor, k_cache: Tensor, indices: Tensor,
                            topk_length: Optional[Tensor], attn_sink: Optional[Tensor],
                            extra_k_cache: Optional[Tensor], extra_indices: Optional[Tensor],
                            extra_topk_length: Optional[Tensor], out: Tensor, head_dim_v: int,
                            softmax_scale: Optional[float]) -> Tensor:
    return _ops.sparse_decode(_empty_on(q), torch_stream(q), q, k_cache, indices, topk_length,
                              attn_sink, extra_k_cache, extra_indices, extra_topk_length,
                              head_dim_v, softmax_scale, out)[1]


sparse_decode_out = torch.library.custom_op(
    f"{_NS}::sparse_decode_out", mutates_args=("out",))(_sparse_decode_out_impl)


@sparse_decode_out.register_fake
def _(q, k_cache, indices, topk_length, attn_sink, extra_k_cache, extra_indices,
      extra_topk_length, out, head_dim_v, softmax_scale):
    b, s_q, h_q, _ = q.shape
    return q.new_empty((b, h_q, s_q), dtype=torch.float32)


# ---- sparse prefill ----

def _sparse_prefill_impl(q: Tensor, kv: Tensor, indices: Tensor, sm_scale: float, d_v: int,
                         attn_sink: Optional[Tensor],
                         topk_length: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    return _ops.sparse_prefill(_empty_on(q), torch_stream(q), q, kv, indices, sm_scale, d_v,
                               attn_sink, topk_length)


sparse_prefill = torch.library.custom_op(
    f"{_NS}::sparse_prefill", mutates_args=())(_sparse_prefill_impl)


@sparse_prefill.register_fake
def _(q, kv, indices, sm_scale, d_v, attn_sink, topk_length):
    s_q, h_q, _ = q.shape
    return (q.new_empty((s_q, h_q, d_v), dtype=torch.bfloat16),
            q.new_empty((s_q, h_q), dtype=torch.float32),
            q.new_empty((s_q, h_q), dtype=torch.float32))


def _sparse_prefill_out_impl(q: Tensor, kv: Tensor, indices: Tensor, sm_scale: float, d_v: int,
                             attn_sink: Optional[Tensor], topk_length: Optional[Tensor],
                             out: Tensor) -> Tuple[Tensor, Tensor]:
    return _ops.sparse_prefill(_empty_on(q), torch_stream(q), q, kv, indices, sm_scale, d_v,
                               attn_sink, topk_length, out)[1:]


sparse_prefill_out = torch.library.custom_op(
    f"{_NS}::sparse_prefill_out", mutates_args=("out",))(_sparse_prefill_out_impl)


@sparse_prefill_out.register_fake
def _(q, kv, indices, sm_scale, d_v, attn_sink, topk_length, out):
    s_q, h_q, _ = q.shape
    return (q.new_empty((s_q, h_q), dtype=torch.float32),
            q.new_empty((s_q, h_q), dtype=torch.float32))


# ---- dense MHA prefill ----

def _mha_varlen_fwd_impl(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor,
                         cu_seqlens_k: Tensor, max_seqlen_q: int, max_seqlen_k: int,
                         softmax_scale: Optional[float], causal: bool) -> Tuple[Tensor, Tensor]:
    return _ops.mha_varlen_fwd(_empty_on(q), torch_stream(q), q, k, v, cu_seqlens_q,
                               cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal)


mha_varlen_fwd = torch.library.custom_op(
    f"{_NS}::mha_varlen_fwd", mutates_args=())(_mha_varlen_fwd_impl)


@mha_varlen_fwd.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal):
    total_q, h_q, _ = q.shape
    return (q.new_empty((total_q, h_q, v.shape[2])),
            q.new_empty((h_q, total_q), dtype=torch.float32))


# ---- FP8 KV cache codecs (write into a caller-allocated output) ----

def _kv_quantize_impl(k_cache: Tensor, quant_cache: Tensor, layout: str) -> None:
    _ops.kv_quantize(layout, k_cache, quant_cache, torch_stream(k_cache))


kv_quantize = torch.library.custom_op(
    f"{_NS}::kv_quantize", mutates_args=("quant_cache",))(_kv_quantize_impl)


@kv_quantize.register_fake
def _(k_cache, quant_cache, layout) -> None:
    return None


def _kv_dequantize_impl(quant_cache: Tensor, k_cache: Tensor, layout: str) -> None:
    _ops.kv_dequantize(layout, quant_cache, k_cache, torch_stream(quant_cache))


kv_dequantize = torch.library.custom_op(
    f"{_NS}::kv_dequantize", mutates_args=("k_cache",))(_kv_dequantize_impl)


@kv_dequantize.register_fake
def _(quant_cache, k_cache, layout) -> None:
    return None


def _mha_varlen_bwd_impl(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                         dlse: Optional[Tensor], cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
                         max_seqlen_q: int, max_seqlen_k: int, softmax_scale: Optional[float],
                         causal: bool) -> Tuple[Tensor, Tensor, Tensor]:
    return _ops.mha_varlen_bwd(_empty_on(q), torch_stream(q), dout, q, k, v, out, lse, dlse,
                               cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               softmax_scale, causal)


mha_varlen_bwd = torch.library.custom_op(
    f"{_NS}::mha_varlen_bwd", mutates_args=())(_mha_varlen_bwd_impl)


@mha_varlen_bwd.register_fake
def _(dout, q, k, v, out, lse, dlse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
      softmax_scale, causal):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _mha_varlen_setup_context(ctx, inputs, output) -> None:
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k)
    ctx.args = (max_seqlen_q, max_seqlen_k, softmax_scale, causal)


def _last_dim_contiguous(x: Optional[Tensor]) -> Optional[Tensor]:
    # Upstream gradients may be expanded views (e.g. of a sum): the kernels need a unit stride
    # on the last dimension.
    if x is None or x.dim() == 0 or x.stride(-1) == 1 or x.shape[-1] == 1:
        return x
    return x.contiguous()


def _mha_varlen_backward(ctx, grad_out, grad_lse):
    """Gradients for q, k and v (none for the offsets, lengths, scale and flag). Unlike
    FlashMLA, whose backward ignores it, the gradient of lse is honoured."""
    q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = mha_varlen_bwd(_last_dim_contiguous(grad_out.to(out.dtype)), q, k, v, out, lse,
                                grad_lse, cu_seqlens_q, cu_seqlens_k, *ctx.args)
    return dq, dk, dv, None, None, None, None, None, None


mha_varlen_fwd.register_autograd(_mha_varlen_backward, setup_context=_mha_varlen_setup_context)


_IMPLS = {
    "dense_decode_plan": _dense_decode_plan_impl,
    "dense_decode": _dense_decode_impl,
    "dense_decode_out": _dense_decode_out_impl,
    "sparse_decode": _sparse_decode_impl,
    "sparse_decode_out": _sparse_decode_out_impl,
    "sparse_prefill": _sparse_prefill_impl,
    "sparse_prefill_out": _sparse_prefill_out_impl,
    "mha_varlen_fwd": _mha_varlen_fwd_impl,
    "mha_varlen_bwd": _mha_varlen_bwd_impl,
    "kv_quantize": _kv_quantize_impl,
    "kv_dequantize": _kv_dequantize_impl,
}


def call(name: str, *args, autograd: bool = False):
    """Runs operation `name`: torch.ops.flash_mla.<name>, or its implementation directly for
    eager calls on plain tensors (see the module doc). `autograd`: the call must be recorded
    for autograd (an input requires grad)."""
    if autograd or torch.compiler.is_compiling() or type(args[0]) is not torch.Tensor:
        return getattr(torch.ops.flash_mla, name)(*args)
    return _IMPLS[name](*args)
