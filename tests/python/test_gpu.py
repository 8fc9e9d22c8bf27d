"""GPU suite: runs where torch sees a CUDA device (the H100 machine), skips elsewhere.

  - FP8 KV codecs (CUDA kernels exist): bytes equal to the CPU backend's, on PyTorch's current
    stream, under CUDA-graph capture + replay, under torch.compile(fullgraph=True), no host sync.
  - Every other operation: either it matches the CPU backend (a kernel has landed) or it raises
    NotImplementedError naming the operation and the device.
  - Dense decode: a FlashMLA-style grid against the CPU backend with FlashMLA's tolerances,
    poisoned (NaN) cache past each request's length, CUDA graph, torch.compile; these skip
    while the CUDA dense-decode kernel does not exist.
"""
from __future__ import annotations

import numpy as np
import pytest

import flash_mla
import reference as ref
from conftest import HAVE_CUDA, act, assert_close, to_fw, to_np, torch
from test_cpu_ops import _sparse_case, _varlen_case, make_dense

pytestmark = pytest.mark.skipif(not HAVE_CUDA, reason="needs torch with a CUDA device")


def cuda(x):
    return to_fw(x, "torch", "cuda")


def cpu(x):
    return to_fw(x, "torch", "cpu")


def no_kernel(err: NotImplementedError, op: str) -> None:
    msg = str(err)
    assert op in msg and "cuda" in msg, msg


# ---- FP8 codecs ----

@pytest.mark.parametrize("layout,d", [("v32", 576), ("model1", 512)])
@pytest.mark.parametrize("pbs", [64, 2, 33])
def test_kv_codec_matches_cpu_bytes(layout, d, pbs):
    rng = np.random.default_rng(30)
    k = act(rng, (5, pbs, 1, d))
    k[1, 0, 0, :64] = 0
    k[2, 1 % pbs, 0, 5] = 3.0  # a large outlier in one tile
    gq = flash_mla.quantize_kv_cache(cuda(k), layout)
    cq = flash_mla.quantize_kv_cache(cpu(k), layout)
    assert gq.is_cuda and gq.dtype == torch.float8_e4m3fn and gq.stride() == cq.stride()
    assert np.array_equal(to_np(gq), to_np(cq))
    gd = flash_mla.dequantize_kv_cache(gq, layout)
    cd = flash_mla.dequantize_kv_cache(cq, layout)
    assert torch.equal(gd.cpu().view(torch.int16), cd.view(torch.int16))


def test_kv_codec_on_current_stream_and_cuda_graph():
    rng = np.random.default_rng(31)
    k_np = act(rng, (4, 64, 1, 576))
    k = cuda(k_np)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        quant = flash_mla.quantize_kv_cache(k, "v32")  # warm-up + static output
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            torch.ops.flash_mla.kv_quantize(k, quant, "v32")
    torch.cuda.current_stream().wait_stream(side)
    k_np2 = act(rng, (4, 64, 1, 576))
    k.copy_(cuda(k_np2))
    graph.replay()
    torch.cuda.synchronize()
    expect = flash_mla.quantize_kv_cache(cpu(k_np2), "v32")
    assert np.array_equal(to_np(quant), to_np(expect))


def test_kv_codec_torch_compile_and_no_sync():
    rng = np.random.default_rng(32)
    k = cuda(act(rng, (3, 64, 1, 512)))
    eager = flash_mla.quantize_kv_cache(k, "model1")
    torch.cuda.set_sync_debug_mode("error")
    try:
        again = flash_mla.quantize_kv_cache(k, "model1")
        flash_mla.dequantize_kv_cache(again, "model1")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    fn = torch.compile(lambda x: flash_mla.dequantize_kv_cache(
        flash_mla.quantize_kv_cache(x, "model1"), "model1"), fullgraph=True)
    out = fn(k)
    assert torch.equal(out.view(torch.int16),
                       flash_mla.dequantize_kv_cache(eager, "model1").view(torch.int16))
    assert np.array_equal(to_np(again), to_np(eager))


# ---- every operation: a kernel matching the CPU backend, or NotImplementedError ----

def test_sparse_decode_gpu_or_not_implemented():
    rng = np.random.default_rng(33)
    q, k, idx = _sparse_case(rng, "v32", b=2, h_q=64, pbs=64, num_blocks=4, topk=128)
    sink = np.linspace(-1, 1, 64).astype(np.float32)
    quant = flash_mla.quantize_kv_cache(cuda(k), "v32")

    def run(T, qc):
        return flash_mla.flash_mla_with_kvcache(
            T(q), qc, None, None, 512, flash_mla.get_mla_metadata()[0], is_fp8_kvcache=True,
            indices=T(idx), attn_sink=T(sink))

    try:
        out, lse = run(cuda, quant)
    except NotImplementedError as e:
        return no_kernel(e, "sparse_decode")
    cout, clse = run(cpu, quant.cpu())
    assert_close("out", out, to_np(cout).astype(np.float64), 8e-4, 2 / 128)
    assert_close("lse", lse, to_np(clse).astype(np.float64), 0, 8 / 65536)


def test_sparse_prefill_gpu_or_not_implemented():
    rng = np.random.default_rng(34)
    q, kv = act(rng, (8, 64, 576)), act(rng, (300, 1, 576))
    idx = rng.integers(-1, 300, (8, 1, 128)).astype(np.int32)

    def run(T):
        return flash_mla.flash_mla_sparse_fwd(T(q), T(kv), T(idx), 576 ** -0.5)

    try:
        out, mx, lse = run(cuda)
    except NotImplementedError as e:
        return no_kernel(e, "sparse_prefill")
    ro, rmx, rl = ref.sparse_prefill(q, kv, idx, 576 ** -0.5, 512, None, None)
    assert_close("out", out, ro, 8e-4, 3 / 128)
    assert_close("max_logits", mx, rmx, 1e-6, 2 / 65536)
    assert_close("lse", lse, rl, 1e-6, 2 / 65536)


@pytest.mark.parametrize("switch", ["1", "0"])
def test_mha_varlen_gpu_or_not_implemented(monkeypatch, switch):
    # FLASHMLA_MHA_FWD=1: the opt-in sm_90a kernel (docs/api.md); otherwise NotImplementedError.
    monkeypatch.setenv("FLASHMLA_MHA_FWD", switch)
    rng = np.random.default_rng(35)
    q, k, v, cu_q, cu_k = _varlen_case(rng, 192, 8, 8, [37, 1, 100], [50, 9, 100])
    try:
        out, lse = flash_mla.flash_attn_varlen_func(cuda(q), cuda(k), cuda(v), cuda(cu_q),
                                                    cuda(cu_k), 100, 100, causal=True)
    except NotImplementedError as e:
        assert switch == "0" or not flash_mla.built_with_cuda(), str(e)
        return no_kernel(e, "mha_varlen_fwd")
    assert switch == "1"
    ro, rl = ref.mha_varlen(q, k, v, cu_q, cu_k, 192 ** -0.5, True)
    assert_close("out", out, ro, 8e-4, 2 / 128)
    assert_close("lse", lse, rl.T, 0, 8 / 65536)


@pytest.mark.parametrize("switch", ["1", "0"])
def test_mha_varlen_backward_gpu_or_not_implemented(monkeypatch, switch):
    # FLASHMLA_MHA_BWD=1: the opt-in sm_90a kernels (docs/api.md); otherwise NotImplementedError.
    monkeypatch.setenv("FLASHMLA_MHA_BWD", switch)
    rng = np.random.default_rng(36)
    q, k, v, cu_q, cu_k = _varlen_case(rng, 128, 4, 2, [37, 5], [50, 3])
    out, lse = flash_mla.flash_attn_varlen_func(cpu(q), cpu(k), cpu(v), cpu(cu_q), cpu(cu_k), 37,
                                                50, causal=True)
    do = act(rng, out.shape)
    args = (do, q, k, v, to_np(out), to_np(lse), cu_q, cu_k)
    bwd = flash_mla.flash_mla_interface._flash_attn_varlen_backward
    try:
        got = bwd(*(cuda(x) for x in args), 37, 50, causal=True)
    except NotImplementedError as e:
        assert switch == "0" or not flash_mla.built_with_cuda(), str(e)
        return no_kernel(e, "mha_varlen_bwd")
    assert switch == "1"
    want = bwd(*(cpu(x) for x in args), 37, 50, causal=True)
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        w = to_np(w).astype(np.float64)
        assert_close(name, g, w, 2 ** -10 * np.abs(w).max(), 2 / 128)


# ---- dense decode ----

def _dense_on_gpu(b, s_q, h_q, h_kv, seqlens, pbs, causal, seed=40):
    rng = np.random.default_rng(seed)
    q, k, bt, sl = make_dense(rng, b, s_q, h_q, h_kv, 576, pbs, seqlens)
    k = k.copy()
    # Poison every cache slot past each request's length (FlashMLA's tests do the same).
    for r, n in enumerate(seqlens):
        for t in range(n, bt.shape[1] * pbs):
            blk = bt[r, t // pbs]
            if blk < k.shape[0]:
                k[blk, t % pbs] = np.nan
    return q, k, bt, sl


def _dense_or_skip(q, k, bt, sl, causal):
    meta, _ = flash_mla.get_mla_metadata()
    try:
        out, lse = flash_mla.flash_mla_with_kvcache(cuda(q), cuda(k), cuda(bt), cuda(sl), 512,
                                                    meta, causal=causal)
    except NotImplementedError as e:
        no_kernel(e, "dense_decode")
        pytest.skip(f"no CUDA dense-decode kernel yet: {e}")
    return meta, out, lse


def test_dense_decode_not_implemented_or_runs():
    q, k, bt, sl = _dense_on_gpu(1, 1, 16, 1, [70], 64, False)
    meta, _ = flash_mla.get_mla_metadata()
    try:
        flash_mla.flash_mla_with_kvcache(cuda(q), cuda(k), cuda(bt), cuda(sl), 512, meta)
    except NotImplementedError as e:
        no_kernel(e, "dense_decode")


GRID = [  # (b, s_q, h_q, h_kv, seqlens, causal): FlashMLA-style shapes plus awkward ones
    (2, 1, 128, 1, [4096, 4000], False),
    (4, 2, 64, 1, [1000, 0, 513, 64], True),
    (3, 4, 16, 1, [129, 2048, 7], True),
    (8, 1, 128, 1, [1, 100, 200, 300, 400, 500, 600, 4096], False),
    (2, 1, 63, 1, [777, 1], False),
    (2, 2, 126, 1, [300, 65], True),
    (3, 1, 9, 3, [200, 1, 0], True),
    (2, 3, 16, 2, [1500, 33], False),
    (32, 1, 16, 1, [int(x) for x in np.random.default_rng(1).integers(0, 2048, 32)], False),
]


@pytest.mark.parametrize("b,s_q,h_q,h_kv,seqlens,causal", GRID)
def test_dense_decode_grid(b, s_q, h_q, h_kv, seqlens, causal):
    q, k, bt, sl = _dense_on_gpu(b, s_q, h_q, h_kv, seqlens, 64, causal)
    meta, out, lse = _dense_or_skip(q, k, bt, sl, causal)
    report = flash_mla.verify_mla_attention(out, lse, cuda(q), cuda(k), cuda(bt), cuda(sl), 512,
                                            causal=causal, reference="cpu")
    assert report.passed, str(report)
    # Same metadata, second run: bitwise identical (deterministic split-KV combine).
    out2, lse2 = flash_mla.flash_mla_with_kvcache(cuda(q), cuda(k), cuda(bt), cuda(sl), 512,
                                                  meta, causal=causal)
    assert torch.equal(out.view(torch.int16), out2.view(torch.int16)) and torch.equal(lse, lse2)


def test_dense_decode_old_form_metadata():
    q, k, bt, sl = _dense_on_gpu(4, 2, 64, 1, [300, 0, 1000, 64], 64, True)
    _dense_or_skip(q, k, bt, sl, True)
    tsm, num_splits = flash_mla.get_mla_metadata(cuda(sl), 2 * 64, 1, 64)
    assert tsm.is_cuda and num_splits.shape == (4,)
    out, lse = flash_mla.flash_mla_with_kvcache(cuda(q), cuda(k), cuda(bt), cuda(sl), 512, tsm,
                                                num_splits, causal=True)
    report = flash_mla.verify_mla_attention(out, lse, cuda(q), cuda(k), cuda(bt), cuda(sl), 512,
                                            causal=True, reference="cpu")
    assert report.passed, str(report)


def test_dense_decode_cuda_graph():
    q_np, k, bt, sl = _dense_on_gpu(4, 1, 128, 1, [2000, 5, 700, 64], 64, False)
    meta, _, _ = _dense_or_skip(q_np, k, bt, sl, False)
    q, kc, btc, slc = cuda(q_np), cuda(k), cuda(bt), cuda(sl)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        flash_mla.flash_mla_with_kvcache(q, kc, btc, slc, 512, meta)  # warm-up
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            out, lse = flash_mla.flash_mla_with_kvcache(q, kc, btc, slc, 512, meta)
    torch.cuda.current_stream().wait_stream(side)
    q2 = act(np.random.default_rng(41), q_np.shape)
    q.copy_(cuda(q2))
    graph.replay()
    torch.cuda.synchronize()
    report = flash_mla.verify_mla_attention(out, lse, q, kc, btc, slc, 512, reference="cpu")
    assert report.passed, str(report)


def test_dense_decode_out_argument_in_cuda_graph():
    """out= (vLLM's pre-allocated output) on the GPU: written in place under CUDA-graph capture,
    bitwise equal to the allocating call's result."""
    q_np, k, bt, sl = _dense_on_gpu(4, 2, 64, 1, [1500, 3, 700, 64], 64, True)
    meta, want, want_lse = _dense_or_skip(q_np, k, bt, sl, True)
    q, kc, btc, slc = cuda(q_np), cuda(k), cuda(bt), cuda(sl)
    buf = torch.full_like(want, float("nan"))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        flash_mla.flash_mla_with_kvcache(q, kc, btc, slc, 512, meta, causal=True, out=buf)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            out, lse = flash_mla.flash_mla_with_kvcache(q, kc, btc, slc, 512, meta, causal=True,
                                                        out=buf)
    torch.cuda.current_stream().wait_stream(side)
    assert out is buf
    buf.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(buf.view(torch.int16), want.view(torch.int16))
    assert torch.equal(lse, want_lse)


def test_dense_decode_torch_compile_fullgraph():
    q, k, bt, sl = (cuda(x) for x in _dense_on_gpu(2, 2, 64, 1, [900, 77], 64, True))
    meta, eager, _ = _dense_or_skip(to_np(q), to_np(k), to_np(bt), to_np(sl), True)

    def fn(q, k, bt, sl):
        meta, _ = flash_mla.get_mla_metadata()
        out, lse = flash_mla.flash_mla_with_kvcache(q, k, bt, sl, 512, meta, causal=True)
        return out * 2, lse

    out, _ = torch.compile(fn, fullgraph=True)(q, k, bt, sl)
    assert torch.equal(out, eager * 2)


def test_run_path_allocates_only_outputs_and_never_syncs():
    q, k, bt, sl = (cuda(x) for x in _dense_on_gpu(4, 1, 64, 1, [300, 0, 1000, 64], 64, False))
    try:
        meta, _ = flash_mla.get_mla_metadata()
        flash_mla.flash_mla_with_kvcache(q, k, bt, sl, 512, meta)  # plans + allocates metadata
        have_dense = True
    except NotImplementedError as e:
        no_kernel(e, "dense_decode")
        have_dense = False
    kb = cuda(act(np.random.default_rng(42), (2, 64, 1, 576)))
    torch.cuda.synchronize()

    def allocations():
        return torch.cuda.memory_stats().get("allocation.all.allocated", 0)

    torch.cuda.set_sync_debug_mode("error")
    try:
        before = allocations()
        flash_mla.quantize_kv_cache(kb, "v32")
        assert allocations() - before == 1  # the FP8 cache itself
        if have_dense:
            before = allocations()
            flash_mla.flash_mla_with_kvcache(q, k, bt, sl, 512, meta)
            assert allocations() - before == 2  # out and lse, nothing else
    finally:
        torch.cuda.set_sync_debug_mode("default")
