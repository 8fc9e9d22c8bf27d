"""float64 numpy references for the tests, written independently of the package: the FP8 layouts
are decoded here from their byte definitions (SPEC.md §3) with ml_dtypes' e4m3 table, and
attention is a plain masked softmax per query row."""
from __future__ import annotations

import ml_dtypes
import numpy as np

E4M3 = ml_dtypes.float8_e4m3fn
BF16 = ml_dtypes.bfloat16


def f64(x) -> np.ndarray:
    return np.asarray(x).astype(np.float64)


def softmax_rows(logits: np.ndarray, d_v_values: np.ndarray):
    """logits [n, m] (-inf = masked), values [m, d_v] -> out [n, d_v], lse [n], max [n]."""
    n = logits.shape[0]
    out = np.zeros((n, d_v_values.shape[1]))
    lse = np.full(n, np.inf)
    mx = np.full(n, -np.inf)
    for i in range(n):
        row = logits[i]
        ok = np.isfinite(row)
        if not ok.any():
            continue
        m = row[ok].max()
        p = np.exp(row[ok] - m)
        out[i] = p @ d_v_values[ok] / p.sum()
        lse[i] = m + np.log(p.sum())
        mx[i] = m
    return out, lse, mx


def dense_decode(q, k_cache, block_table, cache_seqlens, d_v, scale, causal):
    q, k = f64(q), f64(k_cache)
    b, s_q, h_q, _ = q.shape
    pbs, h_kv = k.shape[1], k.shape[2]
    out = np.zeros((b, s_q, h_q, d_v))
    lse = np.zeros((b, h_q, s_q))
    for r in range(b):
        n = int(cache_seqlens[r])
        keys = np.stack([k[block_table[r, t // pbs], t % pbs] for t in range(n)]) if n else \
            np.zeros((0, h_kv, k.shape[3]))
        for h in range(h_q):
            kh = keys[:, h // (h_q // h_kv)]
            logits = scale * q[r, :, h] @ kh.T
            if causal:
                for i in range(s_q):
                    logits[i, max(0, n - s_q + i + 1):] = -np.inf
            o, l, _ = softmax_rows(logits, kh[:, :d_v])
            out[r, :, h], lse[r, h] = o, l
    return out, lse


def decode_fp8_v32(quant: np.ndarray) -> np.ndarray:
    """[nb, pbs, 1, 656] uint8 -> [nb * pbs, 576] float64."""
    t = np.ascontiguousarray(quant).reshape(-1, 656)
    nope = t[:, :512].copy().view(E4M3).astype(np.float64)
    scales = t[:, 512:528].copy().view(np.float32).astype(np.float64)  # [n, 4]
    rope = t[:, 528:656].copy().view(BF16).astype(np.float64)
    nope *= np.repeat(scales, 128, axis=1)
    return np.concatenate([nope, rope], axis=1)


def decode_fp8_model1(quant: np.ndarray) -> np.ndarray:
    """FlashMLA's nominal MODEL1 view [nb, pbs, 1, 584] (block stride = padded block bytes)
    -> [nb * pbs, 512] float64."""
    nb, pbs = quant.shape[:2]
    block = quant.strides[0]
    base = np.lib.stride_tricks.as_strided(quant, (nb, block), (block, 1))
    rows = []
    for blk in range(nb):
        data = base[blk, :pbs * 576].reshape(pbs, 576)
        sc = base[blk, pbs * 576:pbs * 584].reshape(pbs, 8)[:, :7].astype(np.float64)
        nope = data[:, :448].copy().view(E4M3).astype(np.float64) * np.repeat(
            np.exp2(sc - 127.0), 64, axis=1)
        rope = data[:, 448:576].copy().view(BF16).astype(np.float64)
        rows.append(np.concatenate([nope, rope], axis=1))
    return np.concatenate(rows)


def quantize_v32(k: np.ndarray) -> np.ndarray:
    """bf16 [nb, pbs, 1, 576] -> uint8 [nb, pbs, 1, 656], FlashMLA's scale rule."""
    x = k.astype(np.float32).reshape(-1, 576)
    n = x.shape[0]
    out = np.zeros((n, 656), np.uint8)
    scales = np.zeros((n, 4), np.float32)
    for t in range(4):
        tile = x[:, 128 * t:128 * (t + 1)]
        s = np.maximum(np.abs(tile).max(axis=1) / np.float32(448.0), np.float32(1e-4))
        m, e = np.frexp(s)
        scale = np.ldexp(np.float32(1.0), np.where(m == 0.5, e - 1, e)).astype(np.float32)
        scales[:, t] = scale
        out[:, 128 * t:128 * (t + 1)] = (tile / scale[:, None]).astype(E4M3).view(np.uint8)
    out[:, 512:528] = scales.view(np.uint8)
    out[:, 528:] = k.reshape(-1, 576)[:, 512:].copy().view(np.uint8)
    return out.reshape(k.shape[0], k.shape[1], 1, 656)


def sparse_decode(q, k_flat, indices, topk_length, attn_sink, extra_flat, extra_indices,
                  extra_topk_length, d_v, scale):
    q = f64(q)
    b, s_q, h_q, _ = q.shape
    out = np.zeros((b, s_q, h_q, d_v))
    lse = np.zeros((b, h_q, s_q))

    def rows(flat, idx, n):
        return [flat[j] for j in idx[:n] if 0 <= j < flat.shape[0]]

    for r in range(b):
        for i in range(s_q):
            n = indices.shape[2] if topk_length is None else int(topk_length[r])
            keys = rows(k_flat, indices[r, i], n)
            if extra_flat is not None:
                m = extra_indices.shape[2] if extra_topk_length is None else int(
                    extra_topk_length[r])
                keys += rows(extra_flat, extra_indices[r, i], m)
            keys = np.array(keys).reshape(-1, q.shape[3])
            o, l, _ = softmax_rows(scale * q[r, i] @ keys.T, keys[:, :d_v])
            if attn_sink is not None:
                with np.errstate(over="ignore", invalid="ignore"):
                    o = o / (1.0 + np.exp(f64(attn_sink) - l))[:, None]
                o[~np.isfinite(l)] = 0.0
            out[r, i], lse[r, :, i] = o, l
    return out, lse


def sparse_prefill(q, kv, indices, scale, d_v, attn_sink, topk_length):
    q, kv = f64(q), f64(kv)
    s_q, h_q, _ = q.shape
    s_kv, h_kv, _ = kv.shape
    out = np.zeros((s_q, h_q, d_v))
    lse = np.zeros((s_q, h_q))
    mx = np.zeros((s_q, h_q))
    for i in range(s_q):
        for g in range(h_kv):
            n = indices.shape[2] if topk_length is None else int(topk_length[i])
            sel = [j for j in indices[i, g, :n] if 0 <= j < s_kv]
            keys = kv[sel, g].reshape(-1, kv.shape[2])
            heads = range(g * (h_q // h_kv), (g + 1) * (h_q // h_kv))
            for h in heads:
                o, l, m = softmax_rows(scale * q[i, h][None] @ keys.T, keys[:, :d_v])
                if attn_sink is not None:
                    with np.errstate(over="ignore", invalid="ignore"):
                        o = o / (1.0 + np.exp(float(attn_sink[h]) - l))[:, None]
                    o[~np.isfinite(l)] = 0.0
                out[i, h], lse[i, h], mx[i, h] = o[0], l[0], m[0]
    return out, mx, lse


def _varlen_logits(q, k, cu_q, cu_k, scale, causal):
    """Per (sequence, query head): (q0, q1, k0, k1, h, kv head g, scaled logits), the keys a
    causal row does not see (bottom-right aligned) at -inf. q, k: float64."""
    h_q, h_kv = q.shape[1], k.shape[1]
    for r in range(len(cu_q) - 1):
        q0, q1, k0, k1 = int(cu_q[r]), int(cu_q[r + 1]), int(cu_k[r]), int(cu_k[r + 1])
        s_q, s_k = q1 - q0, k1 - k0
        for h in range(h_q):
            g = h // (h_q // h_kv)
            logits = scale * q[q0:q1, h] @ k[k0:k1, g].T
            if causal:
                for i in range(s_q):
                    logits[i, max(0, i + s_k - s_q + 1):] = -np.inf
            yield q0, q1, k0, k1, h, g, logits


def mha_varlen(q, k, v, cu_q, cu_k, scale, causal):
    q, k, v = f64(q), f64(k), f64(v)
    total_q, h_q, _ = q.shape
    out = np.zeros((total_q, h_q, v.shape[2]))
    lse = np.full((h_q, total_q), np.inf)
    for q0, q1, k0, k1, h, g, logits in _varlen_logits(q, k, cu_q, cu_k, scale, causal):
        o, l, _ = softmax_rows(logits, v[k0:k1, g])
        out[q0:q1, h], lse[h, q0:q1] = o, l
    return out, lse


def mha_varlen_bwd(q, k, v, dout, out, dlse, cu_q, cu_k, scale, causal):
    """Gradients (dq, dk, dv) of mha_varlen's out and lse: dout [total_q, h_q, d_v], dlse
    [h_q, total_q] or None. delta = dout . out uses the given out (what a backward kernel gets);
    P is recomputed in float64."""
    q, k, v, dout, out = f64(q), f64(k), f64(v), f64(dout), f64(out)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for q0, q1, k0, k1, h, g, logits in _varlen_logits(q, k, cu_q, cu_k, scale, causal):
        m = logits.max(axis=1, initial=-np.inf, keepdims=True)
        p = np.where(np.isfinite(logits), np.exp(logits - np.where(np.isfinite(m), m, 0)), 0)
        total = p.sum(axis=1, keepdims=True)
        p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
        delta = (dout[q0:q1, h] * out[q0:q1, h]).sum(axis=1, keepdims=True)
        if dlse is not None:
            delta -= f64(dlse)[h, q0:q1, None]
        ds = p * (dout[q0:q1, h] @ v[k0:k1, g].T - delta)
        dq[q0:q1, h] = scale * ds @ k[k0:k1, g]
        dk[k0:k1, g] += scale * ds.T @ q[q0:q1, h]
        dv[k0:k1, g] += p.T @ dout[q0:q1, h]
    return dq, dk, dv
