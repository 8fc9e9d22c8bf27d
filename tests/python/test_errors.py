"""Bad inputs raise ValueError/TypeError naming the public argument (and what was expected);
unimplemented features raise NotImplementedError. Never a crash or a silent wrong answer."""
from __future__ import annotations

import numpy as np
import pytest

import flash_mla
from conftest import act, to_fw, torch
from test_cpu_ops import _sparse_case, _varlen_case, make_dense


def _raises(kind, argument, fn, *args, **kwargs):
    with pytest.raises(kind) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert f"argument '{argument}'" in msg, msg
    assert getattr(info.value, "argument", None) == argument, msg
    return msg


@pytest.fixture
def dense(fw):
    rng = np.random.default_rng(20)
    q, k, bt, sl = make_dense(rng, 2, 1, 4, 1, 576, 16, [10, 30])
    return fw, q, k, bt, sl


def _call(fw, q, k, bt, sl, meta=None, **kw):
    meta = flash_mla.get_mla_metadata()[0] if meta is None else meta
    return flash_mla.flash_mla_with_kvcache(to_fw(q, fw), to_fw(k, fw), to_fw(bt, fw),
                                            to_fw(sl, fw), 512, meta, **kw)


def test_dense_rank_and_dtype(dense):
    fw, q, k, bt, sl = dense
    msg = _raises(ValueError, "q", _call, fw, q[0], k, bt, sl)
    assert "expected rank 4" in msg
    msg = _raises(TypeError, "block_table", _call, fw, q, k, bt.astype(np.int64), sl)
    assert "int32" in msg and "int64" in msg
    msg = _raises(TypeError, "q", _call, fw, q.astype(np.float32), k, bt, sl)
    assert "bfloat16" in msg and "float32" in msg
    _raises(TypeError, "k_cache", _call, fw, q, k.astype(np.float16), bt, sl)
    _raises(ValueError, "k_cache", _call, fw, q, k[..., :512], bt, sl)


def test_dense_values(dense):
    fw, q, k, bt, sl = dense
    msg = _raises(ValueError, "cache_seqlens", _call, fw, q, k, bt, np.array([10, 9999], np.int32))
    assert "9999" in msg
    bad = bt.copy()
    bad[0, 0] = 10 ** 6
    _raises(ValueError, "block_table", _call, fw, q, k, bad, sl)
    _raises(ValueError, "head_dim_v", flash_mla.flash_mla_with_kvcache, to_fw(q, fw),
            to_fw(k, fw), to_fw(bt, fw), to_fw(sl, fw), 256, flash_mla.get_mla_metadata()[0])
    _raises(ValueError, "softmax_scale", _call, fw, q, k, bt, sl, softmax_scale=-1.0)


def test_dense_argument_combinations(dense):
    fw, q, k, bt, sl = dense
    _raises(ValueError, "block_table", _call, fw, q, k, None, sl)
    _raises(ValueError, "attn_sink", _call, fw, q, k, bt, sl,
            attn_sink=to_fw(np.zeros(4, np.float32), fw))
    with pytest.raises(NotImplementedError, match="FP8"):
        _call(fw, q, k, bt, sl, is_fp8_kvcache=True)
    meta, _ = flash_mla.get_mla_metadata()
    _raises(ValueError, "num_splits", _call, fw, q, k, bt, sl, meta,
            num_splits=to_fw(np.zeros(3, np.int32), fw))
    _raises(TypeError, "k_cache", flash_mla.flash_mla_with_kvcache, to_fw(q, fw), [[1.0]],
            to_fw(bt, fw), to_fw(sl, fw), 512, flash_mla.get_mla_metadata()[0])
    _raises(ValueError, "tile_scheduler_metadata", flash_mla.flash_mla_with_kvcache,
            to_fw(q, fw), to_fw(k, fw), to_fw(bt, fw), to_fw(sl, fw), 512, None)


def test_metadata_mismatch(dense):
    fw, q, k, bt, sl = dense
    meta, _ = flash_mla.get_mla_metadata()
    _call(fw, q, k, bt, sl, meta)
    msg = _raises(ValueError, "tile_scheduler_metadata", _call, fw, q, k, bt, sl, meta, causal=True)
    assert "causal" in msg
    # Old form made for another batch size.
    tsm, _ = flash_mla.get_mla_metadata(to_fw(np.array([5, 5, 5], np.int32), fw), 4, 1, 4)
    _raises(ValueError, "tile_scheduler_metadata", _call, fw, q, k, bt, sl, tsm)
    _raises(TypeError, "tile_scheduler_metadata", _call, fw, q, k, bt, sl,
            to_fw(np.zeros((2, 2), np.float32), fw))
    _raises(ValueError, "num_heads_k", flash_mla.get_mla_metadata, to_fw(sl, fw), 4, 3, 4)
    _raises(ValueError, "cache_seqlens", flash_mla.get_mla_metadata, to_fw(sl[None], fw), 4, 1)


def test_sparse_errors(fw):
    rng = np.random.default_rng(21)
    q, k, idx = _sparse_case(rng, "v32", b=2, h_q=4)
    quant = flash_mla.quantize_kv_cache(to_fw(k, fw), "v32")
    meta = flash_mla.get_mla_metadata()[0]

    def call(**kw):
        args = dict(is_fp8_kvcache=True, indices=to_fw(idx, fw))
        args.update(kw)
        return flash_mla.flash_mla_with_kvcache(to_fw(q, fw), quant, None, None, 512,
                                                flash_mla.get_mla_metadata()[0], **args)

    _raises(ValueError, "causal", call, causal=True)
    _raises(ValueError, "is_fp8_kvcache", call, is_fp8_kvcache=False)
    _raises(ValueError, "extra_indices_in_kvcache", call, extra_k_cache=quant,
            extra_indices_in_kvcache=to_fw(idx[:1], fw))
    _raises(ValueError, "topk_length", call, topk_length=to_fw(np.array([1, 99], np.int32), fw))
    _raises(ValueError, "attn_sink", call, attn_sink=to_fw(np.zeros(3, np.float32), fw))
    msg = _raises(ValueError, "k_cache", flash_mla.flash_mla_with_kvcache, to_fw(q, fw),
                  quant[:, :, :, :600], None, None, 512, meta, is_fp8_kvcache=True,
                  indices=to_fw(idx, fw))
    assert "656" in msg


def test_sparse_prefill_errors(fw):
    rng = np.random.default_rng(22)
    q, kv = act(rng, (3, 4, 576)), act(rng, (10, 1, 576))
    idx = np.zeros((3, 1, 8), np.int32)
    f = flash_mla.flash_mla_sparse_fwd
    _raises(ValueError, "sm_scale", f, to_fw(q, fw), to_fw(kv, fw), to_fw(idx, fw), 0.0)
    _raises(ValueError, "indices", f, to_fw(q, fw), to_fw(kv, fw), to_fw(idx[:2], fw), 0.1)
    _raises(ValueError, "d_v", f, to_fw(q, fw), to_fw(kv, fw), to_fw(idx, fw), 0.1, 256)
    _raises(NotImplementedError, "indexer_topk", f, to_fw(q, fw), to_fw(kv, fw), to_fw(idx, fw),
            0.1, indexer_topk=512)


def test_varlen_errors(fw):
    rng = np.random.default_rng(23)
    q, k, v, cu_q, cu_k = _varlen_case(rng, 128, 2, 1, [2, 3], [2, 3])
    f = flash_mla.flash_attn_varlen_func
    T = lambda x: to_fw(x, fw)
    _raises(ValueError, "cu_seqlens_qo", f, T(q), T(k), T(v), T(np.array([0, 3, 2], np.int32)),
            T(cu_k), 5, 5)
    _raises(ValueError, "max_seqlen_kv", f, T(q), T(k), T(v), T(cu_q), T(cu_k), 3, 1)
    _raises(NotImplementedError, "dropout_p", f, T(q), T(k), T(v), T(cu_q), T(cu_k), 3, 3, 0.1)
    _raises(ValueError, "v", f, T(q), T(k), T(v[..., :64]), T(cu_q), T(cu_k), 3, 3)
    qkv = np.concatenate([q, q, v[:, :1].repeat(2, axis=1)], axis=2)
    _raises(ValueError, "cu_seqlens", flash_mla.flash_attn_varlen_qkvpacked_func, T(qkv),
            T(np.array([0, 9], np.int32)), 9, 128)


def test_codec_errors(fw):
    rng = np.random.default_rng(24)
    k = act(rng, (2, 4, 1, 576))
    _raises(ValueError, "layout", flash_mla.quantize_kv_cache, to_fw(k, fw), "fp4")
    _raises(ValueError, "k_cache", flash_mla.quantize_kv_cache, to_fw(k, fw), "model1")
    _raises(TypeError, "k_cache", flash_mla.quantize_kv_cache, to_fw(k.astype(np.float16), fw))
    _raises(ValueError, "k_cache", flash_mla.quantize_kv_cache, to_fw(k[0], fw))


def test_varlen_backward_errors(fw):
    rng = np.random.default_rng(25)
    q, k, v, cu_q, cu_k = _varlen_case(rng, 128, 2, 1, [2], [3])
    T = lambda x: to_fw(x, fw)
    out, lse = flash_mla.flash_attn_varlen_func(T(q), T(k), T(v), T(cu_q), T(cu_k), 2, 3)
    f = flash_mla.flash_mla_interface._flash_attn_varlen_backward
    do = act(rng, out.shape)
    _raises(ValueError, "do", f, T(do[:1]), T(q), T(k), T(v), out, lse, T(cu_q), T(cu_k), 2, 3)
    _raises(TypeError, "do", f, T(do.astype(np.float16)), T(q), T(k), T(v), out, lse, T(cu_q),
            T(cu_k), 2, 3)
    _raises(ValueError, "lse", f, T(do), T(q), T(k), T(v), out, lse[:1], T(cu_q), T(cu_k), 2, 3)
    _raises(ValueError, "dlse", f, T(do), T(q), T(k), T(v), out, lse, T(cu_q), T(cu_k), 2, 3,
            dlse=lse[:, :1])
    _raises(ValueError, "max_seqlen_kv", f, T(do), T(q), T(k), T(v), out, lse, T(cu_q), T(cu_k),
            2, 2)
    _raises(ValueError, "dk", f, T(do), T(q), T(k), T(v), out, lse, T(cu_q), T(cu_k), 2, 3,
            T(np.zeros_like(q)), T(np.zeros_like(q)), T(np.zeros_like(v)))
