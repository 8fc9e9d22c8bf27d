"""CPU backend through the Python API, numpy and torch (CPU), against float64 references."""
from __future__ import annotations

import numpy as np
import pytest

import flash_mla
import reference as ref
from conftest import BF16, act, assert_close, to_fw, to_np, torch

OUT_ATOL, OUT_RTOL, LSE_RTOL = 8e-4, 2 / 128, 8 / 65536  # FlashMLA's dense-decode tolerances


def make_dense(rng, b, s_q, h_q, h_kv, d, pbs, seqlens, dtype=BF16):
    max_blocks = max(1, max((n + pbs - 1) // pbs for n in seqlens))
    num_blocks = b * max_blocks + 3
    q = act(rng, (b, s_q, h_q, d), dtype)
    k = act(rng, (num_blocks, pbs, h_kv, d), dtype)
    # A shuffled block table; entries past each request's length are garbage on purpose.
    perm = rng.permutation(num_blocks)[:b * max_blocks].astype(np.int32)
    bt = perm.reshape(b, max_blocks)
    for r, n in enumerate(seqlens):
        bt[r, (n + pbs - 1) // pbs:] = 10 ** 6
    return q, k, bt, np.array(seqlens, np.int32)


@pytest.mark.parametrize("b,s_q,h_q,h_kv,seqlens,causal", [
    (2, 1, 8, 1, [37, 64], False),
    (2, 2, 3, 1, [1, 50], True),
    (3, 3, 4, 2, [0, 17, 33], True),
    (1, 4, 9, 3, [70], False),
])
def test_dense_decode(fw, b, s_q, h_q, h_kv, seqlens, causal):
    rng = np.random.default_rng(1)
    q, k, bt, sl = make_dense(rng, b, s_q, h_q, h_kv, 576, 16, seqlens)
    meta, none = flash_mla.get_mla_metadata()
    assert none is None
    out, lse = flash_mla.flash_mla_with_kvcache(
        to_fw(q, fw), to_fw(k, fw), to_fw(bt, fw), to_fw(sl, fw), 512, meta, causal=causal)
    assert type(out) is type(to_fw(q, fw)) and tuple(out.shape) == (b, s_q, h_q, 512)
    assert tuple(lse.shape) == (b, h_q, s_q)
    assert str(to_np(out).dtype) == "bfloat16" and str(to_np(lse).dtype) == "float32"
    ro, rl = ref.dense_decode(q, k, bt, sl, 512, 576 ** -0.5, causal)
    assert_close("out", out, ro, OUT_ATOL, OUT_RTOL)
    assert_close("lse", lse, rl, 0, LSE_RTOL)
    # The lazily filled metadata is reused by a second call with the same shapes.
    assert meta.have_initialized and meta.tile_scheduler_metadata is not None
    out2, lse2 = flash_mla.flash_mla_with_kvcache(
        to_fw(q, fw), to_fw(k, fw), to_fw(bt, fw), to_fw(sl, fw), 512, meta, causal=causal)
    assert np.array_equal(to_np(out2).view(np.uint16), to_np(out).view(np.uint16))


def test_dense_decode_fp16_and_scale(fw):
    rng = np.random.default_rng(2)
    q, k, bt, sl = make_dense(rng, 2, 1, 4, 1, 576, 16, [20, 40], dtype=np.float16)
    meta, _ = flash_mla.get_mla_metadata()
    out, lse = flash_mla.flash_mla_with_kvcache(
        to_fw(q, fw), to_fw(k, fw), to_fw(bt, fw), to_fw(sl, fw), 512, meta, softmax_scale=0.3)
    assert str(to_np(out).dtype) == "float16"
    ro, rl = ref.dense_decode(q, k, bt, sl, 512, 0.3, False)
    assert_close("out", out, ro, OUT_ATOL, OUT_RTOL)
    assert_close("lse", lse, rl, 0, LSE_RTOL)


@pytest.mark.parametrize("with_heads_q", [True, False])
def test_old_form_metadata(fw, with_heads_q):
    rng = np.random.default_rng(3)
    b, s_q, h_q, h_kv = 3, 2, 8, 1
    q, k, bt, sl = make_dense(rng, b, s_q, h_q, h_kv, 576, 16, [5, 80, 33])
    args = (to_fw(sl, fw), s_q * h_q // h_kv, h_kv) + ((h_q,) if with_heads_q else ())
    tsm, num_splits = flash_mla.get_mla_metadata(*args)
    assert str(to_np(tsm).dtype) == "int32" and len(tsm.shape) == 2
    assert tuple(num_splits.shape) == (b,) and (to_np(num_splits) >= 1).all()
    out, lse = flash_mla.flash_mla_with_kvcache(
        to_fw(q, fw), to_fw(k, fw), to_fw(bt, fw), to_fw(sl, fw), 512, tsm, num_splits,
        causal=True)
    ro, rl = ref.dense_decode(q, k, bt, sl, 512, 576 ** -0.5, True)
    assert_close("out", out, ro, OUT_ATOL, OUT_RTOL)
    assert_close("lse", lse, rl, 0, LSE_RTOL)
    # num_splits is optional for the run.
    out2, _ = flash_mla.flash_mla_with_kvcache(
        to_fw(q, fw), to_fw(k, fw), to_fw(bt, fw), to_fw(sl, fw), 512, tsm, causal=True)
    assert np.array_equal(to_np(out2).view(np.uint16), to_np(out).view(np.uint16))


def test_old_form_metadata_sparse_is_empty(fw):
    tsm, ns = flash_mla.get_mla_metadata(to_fw(np.array([3, 4], np.int32), fw), 64, 1, 64, True,
                                         128)
    assert tuple(tsm.shape) == (0, 0) and tuple(ns.shape) == (0,)


# ---- FP8 codecs ----

def test_quantize_v32_bytes_match_reference(fw):
    rng = np.random.default_rng(4)
    k = act(rng, (3, 16, 1, 576))
    k[0, 0, 0, :128] = 0  # an all-zero tile takes the 1e-4 scale floor
    quant = flash_mla.quantize_kv_cache(to_fw(k, fw), "v32")
    assert tuple(quant.shape) == (3, 16, 1, 656)
    if fw == "torch":
        assert quant.dtype == torch.float8_e4m3fn
    assert np.array_equal(to_np(quant), ref.quantize_v32(k))
    deq = flash_mla.dequantize_kv_cache(quant, "v32")
    assert np.array_equal(ref.decode_fp8_v32(to_np(quant)), to_np(deq).astype(np.float64).reshape(-1, 576))


@pytest.mark.parametrize("pbs", [2, 16, 63])
def test_model1_roundtrip(fw, pbs):
    rng = np.random.default_rng(5)
    k = act(rng, (2, pbs, 1, 512))
    quant = flash_mla.quantize_kv_cache(to_fw(k, fw), "model1")
    assert tuple(quant.shape) == (2, pbs, 1, 584)
    block = (pbs * 584 + 575) // 576 * 576
    assert quant.stride()[0] == block if fw == "torch" else quant.strides[0] == block
    deq = to_np(flash_mla.dequantize_kv_cache(quant, "model1")).astype(np.float64)
    assert np.array_equal(ref.decode_fp8_model1(to_np(quant)), deq.reshape(-1, 512))
    # Quantization error: at most half an e4m3 step (2^-4 relative), or a subnormal step.
    x = k.astype(np.float64)
    assert (np.abs(deq - x) <= np.abs(x) / 16 + 2e-3).all()


def test_out_argument_dense(fw):
    """out= (FlashMLA's pre-allocated output): written in place, returned, same bits; a wrong
    shape or dtype is an error naming it."""
    rng = np.random.default_rng(21)
    q, k, bt, sl = make_dense(rng, 2, 2, 4, 2, 576, 16, [30, 45])
    args = [to_fw(x, fw) for x in (q, k, bt, sl)]
    meta, _ = flash_mla.get_mla_metadata()
    want_out, want_lse = flash_mla.flash_mla_with_kvcache(*args, 512, meta, causal=True)
    buf = to_fw(np.full((2, 2, 4, 512), np.nan, BF16), fw)
    out, lse = flash_mla.flash_mla_with_kvcache(*args, 512, meta, causal=True, out=buf)
    assert out is buf
    assert np.array_equal(to_np(buf).view(np.uint16), to_np(want_out).view(np.uint16))
    assert np.array_equal(to_np(lse), to_np(want_lse))
    with pytest.raises(ValueError, match="out"):
        flash_mla.flash_mla_with_kvcache(*args, 512, meta, causal=True,
                                         out=to_fw(np.zeros((2, 2, 4, 256), BF16), fw))
    with pytest.raises((TypeError, ValueError), match="out"):
        flash_mla.flash_mla_with_kvcache(*args, 512, meta, causal=True,
                                         out=to_fw(np.zeros((2, 2, 4, 512), np.float32), fw))


# ---- sparse decode ----

def _sparse_case(rng, layout, b=2, s_q=2, h_q=4, pbs=16, num_blocks=5, topk=24):
    d = 576 if layout == "v32" else 512
    k = act(rng, (num_blocks, pbs, 1, d))
    slots = num_blocks * pbs
    idx = rng.integers(0, slots, (b, s_q, topk)).astype(np.int32)
    idx[0, 0, :5] = -1          # invalid entries
    idx[-1, -1, -3:] = slots + 7  # out-of-cache entries are invalid too
    if b > 1:
        idx[1, 0, :] = -1       # a query with nothing to attend
    q = act(rng, (b, s_q, h_q, d))
    return q, k, idx


@pytest.mark.parametrize("layout", ["v32", "model1"])
@pytest.mark.parametrize("features", ["plain", "topk_length+sink", "extra"])
def test_sparse_decode(fw, layout, features):
    rng = np.random.default_rng(6)
    b, h_q = 3, 4
    q, k, idx = _sparse_case(rng, layout, b=b, h_q=h_q)
    quant = flash_mla.quantize_kv_cache(to_fw(k, fw), layout)
    decode = ref.decode_fp8_v32 if layout == "v32" else ref.decode_fp8_model1
    kw = {}
    topk_length = sink = extra = extra_idx = extra_len = None
    if features == "topk_length+sink":
        topk_length = np.array([24, 7, 0], np.int32)
        sink = np.array([0.5, -1.0, np.inf, 2.0], np.float32)
        kw = dict(topk_length=to_fw(topk_length, fw), attn_sink=to_fw(sink, fw))
    elif features == "extra":
        ek = act(rng, (3, 8, 1, k.shape[-1]))
        extra = flash_mla.quantize_kv_cache(to_fw(ek, fw), layout)
        extra_idx = rng.integers(-1, 24, (b, 2, 10)).astype(np.int32)
        extra_len = np.array([10, 3, 6], np.int32)
        kw = dict(extra_k_cache=extra, extra_indices_in_kvcache=to_fw(extra_idx, fw),
                  extra_topk_length=to_fw(extra_len, fw))
    meta, _ = flash_mla.get_mla_metadata()
    out, lse = flash_mla.flash_mla_with_kvcache(
        to_fw(q, fw), quant, None, None, 512, meta, is_fp8_kvcache=True,
        indices=to_fw(idx, fw), **kw)
    ro, rl = ref.sparse_decode(q, decode(to_np(quant)), idx, topk_length, sink,
                               None if extra is None else decode(to_np(extra)), extra_idx,
                               extra_len, 512, q.shape[-1] ** -0.5)
    assert_close("out", out, ro, OUT_ATOL, OUT_RTOL)
    assert_close("lse", lse, rl, 0, LSE_RTOL)
    # verify_mla_attention agrees, against both of its references.
    for reference in ("cpu", "float64"):
        report = flash_mla.verify_mla_attention(
            out, lse, to_fw(q, fw), quant, None, None, 512, is_fp8_kvcache=True,
            indices=to_fw(idx, fw), reference=reference, **kw)
        assert report.passed, str(report)


def test_out_argument_sparse(fw):
    rng = np.random.default_rng(22)
    q, k, idx = _sparse_case(rng, "v32", b=2, h_q=4)
    quant = flash_mla.quantize_kv_cache(to_fw(k, fw), "v32")
    meta, _ = flash_mla.get_mla_metadata()
    kw = dict(is_fp8_kvcache=True, indices=to_fw(idx, fw))
    want_out, want_lse = flash_mla.flash_mla_with_kvcache(to_fw(q, fw), quant, None, None, 512,
                                                          meta, **kw)
    buf = to_fw(np.full((2, 2, 4, 512), np.nan, BF16), fw)
    out, lse = flash_mla.flash_mla_with_kvcache(to_fw(q, fw), quant, None, None, 512, meta,
                                                out=buf, **kw)
    assert out is buf
    assert np.array_equal(to_np(buf).view(np.uint16), to_np(want_out).view(np.uint16))
    assert np.array_equal(to_np(lse), to_np(want_lse))
    with pytest.raises(ValueError, match="out"):
        flash_mla.flash_mla_with_kvcache(to_fw(q, fw), quant, None, None, 512, meta,
                                         out=to_fw(np.zeros((2, 2, 3, 512), BF16), fw), **kw)


# ---- sparse prefill ----

@pytest.mark.parametrize("d_qk,h_kv", [(576, 1), (512, 1), (576, 2)])
@pytest.mark.parametrize("extras", [False, True])
def test_sparse_prefill(fw, d_qk, h_kv, extras):
    rng = np.random.default_rng(7)
    s_q, s_kv, h_q, topk = 5, 30, 4, 16
    q, kv = act(rng, (s_q, h_q, d_qk)), act(rng, (s_kv, h_kv, d_qk))
    idx = rng.integers(0, s_kv, (s_q, h_kv, topk)).astype(np.int32)
    idx[0, :, :4] = -1
    idx[1, :, -2:] = s_kv + 3
    idx[2] = -1
    sink = np.array([0.1, np.inf, -2.0, 1.0], np.float32) if extras else None
    tl = np.array([16, 3, 0, 9, 16], np.int32) if extras else None
    out, mx, lse = flash_mla.flash_mla_sparse_fwd(
        to_fw(q, fw), to_fw(kv, fw), to_fw(idx, fw), 0.07, 512, to_fw(sink, fw), to_fw(tl, fw))
    assert str(to_np(out).dtype) == "bfloat16" and tuple(mx.shape) == (s_q, h_q)
    ro, rmx, rl = ref.sparse_prefill(q, kv, idx, 0.07, 512, sink, tl)
    assert_close("out", out, ro, OUT_ATOL, 3 / 128)
    assert_close("max_logits", mx, rmx, 1e-6, 2 / 65536)
    assert_close("lse", lse, rl, 1e-6, 2 / 65536)
    # out= writes the same bits in place and returns the caller's array.
    buf = to_fw(np.full((s_q, h_q, 512), np.nan, BF16), fw)
    out2, mx2, lse2 = flash_mla.flash_mla_sparse_fwd(
        to_fw(q, fw), to_fw(kv, fw), to_fw(idx, fw), 0.07, 512, to_fw(sink, fw), to_fw(tl, fw),
        out=buf)
    assert out2 is buf
    assert np.array_equal(to_np(buf).view(np.uint16), to_np(out).view(np.uint16))
    assert np.array_equal(to_np(lse2), to_np(lse)) and np.array_equal(to_np(mx2), to_np(mx))


# ---- dense MHA prefill ----

def _varlen_case(rng, d_qk, h_q, h_kv, lens_q, lens_k, dtype=BF16):
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q = act(rng, (cu_q[-1], h_q, d_qk), dtype)
    k = act(rng, (cu_k[-1], h_kv, d_qk), dtype)
    v = act(rng, (cu_k[-1], h_kv, 128), dtype)
    return q, k, v, cu_q, cu_k


@pytest.mark.parametrize("d_qk,h_q,h_kv,causal,dtype", [
    (128, 4, 2, False, BF16), (192, 4, 4, True, BF16), (128, 2, 1, True, np.float16)])
def test_flash_attn_varlen_func(fw, d_qk, h_q, h_kv, causal, dtype):
    rng = np.random.default_rng(8)
    lens_q, lens_k = [3, 0, 5], [4, 2, 7]
    q, k, v, cu_q, cu_k = _varlen_case(rng, d_qk, h_q, h_kv, lens_q, lens_k, dtype)
    out, lse = flash_mla.flash_attn_varlen_func(
        to_fw(q, fw), to_fw(k, fw), to_fw(v, fw), to_fw(cu_q, fw), to_fw(cu_k, fw), 5, 7,
        causal=causal)
    ro, rl = ref.mha_varlen(q, k, v, cu_q, cu_k, d_qk ** -0.5, causal)
    assert tuple(lse.shape) == (q.shape[0], h_q)  # FlashMLA's [total_q, h_q] (transposed view)
    assert_close("out", out, ro, OUT_ATOL, OUT_RTOL)
    assert_close("lse", lse, rl.T, 0, LSE_RTOL)


def test_varlen_packed_variants(fw):
    rng = np.random.default_rng(9)
    lens = [3, 6]
    q, k, v, cu, _ = _varlen_case(rng, 128, 2, 2, lens, lens)
    qkv = np.concatenate([q, k, v], axis=2)
    out, lse = flash_mla.flash_attn_varlen_qkvpacked_func(to_fw(qkv, fw), to_fw(cu, fw), 6, 128,
                                                          causal=True)
    ro, rl = ref.mha_varlen(q, k, v, cu, cu, 128 ** -0.5, True)
    assert_close("qkvpacked out", out, ro, OUT_ATOL, OUT_RTOL)
    assert_close("qkvpacked lse", lse, rl.T, 0, LSE_RTOL)
    kv = np.concatenate([k, v], axis=2)
    out, lse = flash_mla.flash_attn_varlen_kvpacked_func(to_fw(q, fw), to_fw(kv, fw), to_fw(cu, fw),
                                                         to_fw(cu, fw), 6, 6, 128)
    ro, rl = ref.mha_varlen(q, k, v, cu, cu, 128 ** -0.5, False)
    assert_close("kvpacked out", out, ro, OUT_ATOL, OUT_RTOL)


def _grad_close(name, got, want, dtype):
    # Relative to the tensor's largest gradient (a gradient element is a sum with both signs):
    # one 16-bit rounding elementwise plus 2^-10 of the largest |ref| (harness.cpp's
    # grad_tolerance).
    atol = np.abs(want).max() * 2.0 ** (-12 if dtype == np.float16 else -10)
    assert_close(name, got, want, atol, 2.0 ** (-10 if dtype == np.float16 else -8))


@pytest.mark.parametrize("d_qk,h_q,h_kv,causal,dtype,with_dlse", [
    (128, 4, 2, True, BF16, True), (192, 2, 2, False, BF16, False),
    (128, 3, 1, True, np.float16, True)])
def test_flash_attn_varlen_backward(fw, d_qk, h_q, h_kv, causal, dtype, with_dlse):
    rng = np.random.default_rng(11)
    lens_q, lens_k = [3, 0, 6, 2], [4, 2, 5, 0]  # sequence 2: s_q > s_k; 3: nothing to attend
    q, k, v, cu_q, cu_k = _varlen_case(rng, d_qk, h_q, h_kv, lens_q, lens_k, dtype)
    T = lambda x: to_fw(x, fw)
    out, lse = flash_mla.flash_attn_varlen_func(T(q), T(k), T(v), T(cu_q), T(cu_k), 6, 5,
                                                causal=causal)
    do = act(rng, out.shape, dtype)
    dlse = act(rng, lse.shape, np.float32) if with_dlse else None
    dq, dk, dv = flash_mla.flash_mla_interface._flash_attn_varlen_backward(
        T(do), T(q), T(k), T(v), out, lse, T(cu_q), T(cu_k), 6, 5, causal=causal, dlse=T(dlse))
    want = ref.mha_varlen_bwd(q, k, v, do, to_np(out), None if dlse is None else dlse.T, cu_q,
                              cu_k, d_qk ** -0.5, causal)
    for name, got, w, like in zip(("dq", "dk", "dv"), (dq, dk, dv), want, (q, k, v)):
        assert tuple(got.shape) == like.shape and to_np(got).dtype == dtype, name
        _grad_close(name, got, w, dtype)
    assert not to_np(dq)[-2:].astype(np.float32).any()  # sequence 3 attended nothing

    # Into the caller's arrays.
    bufs = [to_fw(np.full(x.shape, np.nan, dtype), fw) for x in (q, k, v)]
    got = flash_mla.flash_mla_interface._flash_attn_varlen_backward(
        T(do), T(q), T(k), T(v), out, lse, T(cu_q), T(cu_k), 6, 5, *bufs, causal=causal,
        dlse=T(dlse))
    for a, b, buf in zip(got, (dq, dk, dv), bufs):
        assert a is buf and np.array_equal(to_np(a).view(np.uint16), to_np(b).view(np.uint16))


@pytest.mark.skipif(torch is None, reason="needs torch")
@pytest.mark.parametrize("h_kv", [1, 2])
def test_flash_attn_varlen_autograd(h_kv):
    """torch autograd through flash_attn_varlen_func gives what the backward function gives,
    the gradient of lse included; a loss that reads only out (an expanded upstream gradient)
    works too."""
    rng = np.random.default_rng(12)
    q, k, v, cu_q, cu_k = _varlen_case(rng, 128, 2, h_kv, [5, 3], [4, 6])
    tq, tk, tv = (to_fw(x, "torch").requires_grad_(True) for x in (q, k, v))
    tcu_q, tcu_k = to_fw(cu_q, "torch"), to_fw(cu_k, "torch")
    out, lse = flash_mla.flash_attn_varlen_func(tq, tk, tv, tcu_q, tcu_k, 5, 6, causal=True)
    g_out = to_fw(act(rng, out.shape), "torch")
    g_lse = to_fw(act(rng, lse.shape, np.float32), "torch")
    ((out.float() * g_out.float()).sum() + (lse * g_lse).sum()).backward()
    want = flash_mla.flash_mla_interface._flash_attn_varlen_backward(
        g_out, tq.detach(), tk.detach(), tv.detach(), out.detach(), lse.detach(), tcu_q, tcu_k,
        5, 6, causal=True, dlse=g_lse)
    for t, w in zip((tq, tk, tv), want):
        assert torch.equal(t.grad, w)
    r = ref.mha_varlen_bwd(q, k, v, to_np(g_out), to_np(out.detach()), to_np(g_lse).T, cu_q,
                           cu_k, 128 ** -0.5, True)
    for name, t, w in zip(("dq", "dk", "dv"), (tq, tk, tv), r):
        _grad_close(name, t.grad, w, BF16)

    for t in (tq, tk, tv):
        t.grad = None
    out, _ = flash_mla.flash_attn_varlen_func(tq, tk, tv, tcu_q, tcu_k, 5, 6, causal=True)
    out.float().sum().backward()
    r = ref.mha_varlen_bwd(q, k, v, np.ones(out.shape), to_np(out.detach()), None, cu_q, cu_k,
                           128 ** -0.5, True)
    for name, t, w in zip(("dq", "dk", "dv"), (tq, tk, tv), r):
        _grad_close(name, t.grad, w, BF16)


@pytest.mark.skipif(torch is None, reason="needs torch")
def test_flash_attn_varlen_backward_under_torch_compile():
    """A training step traced by torch.compile (fullgraph): the custom ops' fake implementations
    and registered backward let it trace; its gradients equal eager ones bit for bit."""
    rng = np.random.default_rng(14)
    q, k, v, cu_q, cu_k = (to_fw(x, "torch") for x in _varlen_case(rng, 128, 4, 2, [5, 3], [4, 6]))

    def loss(q, k, v):
        out, lse = flash_mla.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 5, 6, causal=True)
        return (out.float() ** 2).sum() + lse.sum()

    grads = []
    for f in (loss, torch.compile(loss, fullgraph=True)):
        tq, tk, tv = (t.clone().requires_grad_(True) for t in (q, k, v))
        f(tq, tk, tv).backward()
        grads.append((tq.grad, tk.grad, tv.grad))
    for eager, compiled in zip(*grads):
        assert torch.equal(eager, compiled)


# ---- misc ----

def test_verify_reports_a_wrong_result(fw):
    rng = np.random.default_rng(10)
    q, k, bt, sl = make_dense(rng, 1, 1, 4, 1, 576, 16, [30])
    meta, _ = flash_mla.get_mla_metadata()
    args = (to_fw(q, fw), to_fw(k, fw), to_fw(bt, fw), to_fw(sl, fw), 512)
    out, lse = flash_mla.flash_mla_with_kvcache(*args, meta)
    good = flash_mla.verify_mla_attention(out, lse, *args)
    assert good.passed and good.pass_rate == 1.0, str(good)
    bad_out = to_np(out).astype(np.float32)
    bad_out[0, 0, 2, 7] += 0.05
    bad = flash_mla.verify_mla_attention(bad_out.astype(BF16), lse, *args, reference="cpu")
    assert not bad.passed and bad.worst_index == (0, 0, 2, 7), str(bad)
    with pytest.raises(AssertionError, match="FAIL"):
        flash_mla.verify_mla_attention(bad_out.astype(BF16), lse, *args, raise_on_failure=True)


def test_readonly_and_strided_numpy_inputs():
    rng = np.random.default_rng(11)
    q, k, bt, sl = make_dense(rng, 2, 1, 4, 1, 576, 16, [10, 20])
    wide = np.zeros((2, 1, 8, 576), BF16)
    wide[:, :, ::2] = q
    qs = wide[:, :, ::2]  # strided heads
    k.setflags(write=False)
    meta, _ = flash_mla.get_mla_metadata()
    out, lse = flash_mla.flash_mla_with_kvcache(qs, k, bt, sl, 512, meta)
    ro, rl = ref.dense_decode(q, k, bt, sl, 512, 576 ** -0.5, False)
    assert_close("out", out, ro, OUT_ATOL, OUT_RTOL)


def test_describe_backends_and_main():
    import subprocess
    import sys

    text = flash_mla.describe_backends()
    assert "cpu" in text and "dense_decode" in text
    run = subprocess.run([sys.executable, "-m", "flash_mla"], capture_output=True, text=True)
    assert run.returncode == 0 and "flashmla backends" in run.stdout


@pytest.mark.skipif(torch is None, reason="needs torch")
def test_torch_compile_cpu():
    rng = np.random.default_rng(12)
    q, k, bt, sl = (to_fw(x, "torch") for x in make_dense(rng, 2, 2, 4, 1, 576, 16, [9, 40]))
    eager, _ = flash_mla.flash_mla_with_kvcache(q, k, bt, sl, 512, flash_mla.get_mla_metadata()[0],
                                                causal=True)

    def fn(q, k, bt, sl):
        meta, _ = flash_mla.get_mla_metadata()
        out, lse = flash_mla.flash_mla_with_kvcache(q, k, bt, sl, 512, meta, causal=True)
        return out.float() + 1, lse

    out, _ = torch.compile(fn, fullgraph=True)(q, k, bt, sl)
    assert torch.equal(out, eager.float() + 1)

    def fn_out(q, k, bt, sl, buf):  # out= under torch.compile: the op mutates buf
        meta, _ = flash_mla.get_mla_metadata()
        flash_mla.flash_mla_with_kvcache(q, k, bt, sl, 512, meta, causal=True, out=buf)
        return buf.float() + 1

    buf = torch.empty_like(eager)
    assert torch.equal(torch.compile(fn_out, fullgraph=True)(q, k, bt, sl, buf),
                       eager.float() + 1)
    assert torch.equal(buf, eager)


@pytest.mark.skipif(torch is None, reason="needs torch")
def test_torch_custom_ops_registered():
    for name in ("dense_decode_plan", "dense_decode", "dense_decode_out", "sparse_decode",
                 "sparse_decode_out", "sparse_prefill", "sparse_prefill_out", "mha_varlen_fwd",
                 "mha_varlen_bwd", "kv_quantize", "kv_dequantize"):
        assert hasattr(torch.ops.flash_mla, name)
    rng = np.random.default_rng(13)
    q, k, bt, sl = (to_fw(x, "torch") for x in make_dense(rng, 1, 1, 2, 1, 576, 16, [9]))
    tsm, _ = flash_mla.get_mla_metadata(sl, 2, 1, 2)
    torch.library.opcheck(torch.ops.flash_mla.dense_decode.default,
                          (q, k, bt, sl, tsm, 512, None, False))
    torch.library.opcheck(torch.ops.flash_mla.dense_decode_out.default,
                          (q, k, bt, sl, tsm, torch.empty(1, 1, 2, 512, dtype=q.dtype), 512,
                           None, False))
    qp, kvp = (to_fw(act(rng, shape), "torch") for shape in ((3, 4, 576), (20, 1, 576)))
    idx = torch.from_numpy(rng.integers(-1, 20, (3, 1, 8)).astype(np.int32))
    torch.library.opcheck(torch.ops.flash_mla.sparse_prefill_out.default,
                          (qp, kvp, idx, 0.05, 512, None, None,
                           torch.empty(3, 4, 512, dtype=torch.bfloat16)))
    # The varlen forward with inputs that require grad: opcheck also runs its registered
    # backward (autograd registration, AOT dispatch).
    vq, vk, vv, cu_q, cu_k = (to_fw(x, "torch") for x in _varlen_case(rng, 128, 2, 1, [3], [4]))
    vq, vk, vv = (t.requires_grad_(True) for t in (vq, vk, vv))
    torch.library.opcheck(torch.ops.flash_mla.mha_varlen_fwd.default,
                          (vq, vk, vv, cu_q, cu_k, 3, 4, None, True))


@pytest.mark.skipif(torch is None, reason="needs torch")
@pytest.mark.parametrize("layout,d", [("v32", 576), ("model1", 512)])
def test_torch_compile_codecs_cpu(layout, d):
    k = to_fw(act(np.random.default_rng(14), (2, 5, 1, d)), "torch")
    fn = torch.compile(lambda x: flash_mla.dequantize_kv_cache(
        flash_mla.quantize_kv_cache(x, layout), layout), fullgraph=True)
    eager = flash_mla.dequantize_kv_cache(flash_mla.quantize_kv_cache(k, layout), layout)
    assert torch.equal(fn(k).view(torch.int16), eager.view(torch.int16))


def test_imports_and_runs_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"  # makes `import torch` fail
        "import numpy as np, ml_dtypes, flash_mla\n"
        "q = np.zeros((1, 1, 2, 576), ml_dtypes.bfloat16); k = np.ones((1, 16, 1, 576), ml_dtypes.bfloat16)\n"
        "out, lse = flash_mla.flash_mla_with_kvcache(q, k, np.zeros((1, 1), np.int32),\n"
        "    np.array([5], np.int32), 512, flash_mla.get_mla_metadata()[0])\n"
        "assert out.dtype == ml_dtypes.bfloat16 and abs(float(out.astype(np.float32).mean()) - 1) < 1e-6\n"
        "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr
