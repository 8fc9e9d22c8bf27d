// Dense MHA prefill forward on sm_90a, first version (config.h has the tile shape and the
// shared-memory plan). Per CTA: 128 rows of one (sequence, kv head), both warpgroups issuing the
// cp.async loads of a two-stage pipeline, then per key tile of 128 tokens and per warpgroup
//   S = Q K^T          wgmma m64n128k16, A and B from shared memory (K-major),
//   online softmax     in registers, exp2 domain, masked by the causal limit and the sequence end,
//   O += P V           wgmma m64n128k16, P from registers (A fragments), V MN-major.
// Tokens past a sequence's end are never read: their shared-memory rows are zero-filled by the
// copies (src-size 0), so the NaN garbage a caller may keep there cannot reach a product.
// Not yet here (the journal's next steps): a producer warp with mbarriers instead of the two CTA
// barriers per tile, the two warpgroups' softmax overlapped with the other's wgmmas (FA3's
// ping-pong), and a persistent tile scheduler.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/common/attn_math.cuh"
#include "cuda/common/sm90_ptx.cuh"
#include "cuda/common/wgmma_ops.cuh"
#include "cuda/mha_prefill/config.h"
#include "cuda/mha_prefill/copies.cuh"
#include "cuda/mha_prefill/tiling.h"

namespace flashmla::cuda::mha {

// Where this thread's K and V copies of a key tile come from: rows cs.row + 32 n of the tile,
// kept as pointers and moved by one tile at a time, so a copy costs a select and an offset
// rather than 64-bit stride products.
struct KvCursor {
  const uint16_t* k[kPasses];
  const uint16_t* v[kPasses];
  int first_key;  // key (in the sequence) of this thread's row of pass 0 in the next tile
  __device__ KvCursor(const Params& p, const Sequence& sq, int kvh, const CopySlot& cs)
      : first_key(cs.row) {
    const auto* kb = static_cast<const uint16_t*>(p.k) + sq.k0 * p.k_stride_tok +
                     kvh * p.k_stride_head + cs.chunk * 8;
    const auto* vb = static_cast<const uint16_t*>(p.v) + sq.k0 * p.v_stride_tok +
                     kvh * p.v_stride_head + cs.chunk * 8;
#pragma unroll
    for (int n = 0; n < kPasses; ++n) {
      k[n] = kb + (cs.row + kRowsPerPass * n) * p.k_stride_tok;
      v[n] = vb + (cs.row + kRowsPerPass * n) * p.v_stride_tok;
    }
  }
};

// The cursor's next key tile into a stage (K, then V), tokens past s_k zero-filled; then the
// cursor moves on by a tile.
template <int kDqk>
__device__ __forceinline__ void load_kv(const Params& p, const Sequence& sq, KvCursor& cur,
                                        uint32_t stage_addr, const CopySlot& cs) {
  const auto* k0 = static_cast<const uint16_t*>(p.k);
  const auto* v0 = static_cast<const uint16_t*>(p.v);
#pragma unroll
  for (int n = 0; n < kPasses; ++n) {
    const bool ok = cur.first_key + kRowsPerPass * n < sq.s_k;
    const uint16_t* ks = ok ? cur.k[n] : k0;
    const uint16_t* vs = ok ? cur.v[n] : v0;
    const int bytes = ok ? 16 : 0;
#pragma unroll
    for (int a = 0; a < SmemPlan<kDqk>::kQAtoms; ++a)
      sm90::cp_async_16(stage_addr + k_copy_offset<kDqk>(cs, n, a), ks + (ok ? a * kAtomDims : 0),
                        bytes);
#pragma unroll
    for (int a = 0; a < kDimV / kAtomDims; ++a)
      sm90::cp_async_16(stage_addr + v_copy_offset<kDqk>(cs, n, a), vs + (ok ? a * kAtomDims : 0),
                        bytes);
    cur.k[n] += kKeys * p.k_stride_tok;
    cur.v[n] += kKeys * p.v_stride_tok;
  }
  cur.first_key += kKeys;
}

// A thread's two rows of the CTA's tile (wgmma accumulator layout), their key limits and
// where their results go.
struct ThreadRows {
  int limit[2], tok[2], head[2];
  bool valid[2];
  __device__ ThreadRows(const Sequence& sq, const TilePlan& tp, int group, bool causal, int kvh,
                        int tid) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int rr = tp.row0 + thread_row(tid, h);
      valid[h] = rr < tp.rows;
      tok[h] = valid[h] ? rr / group : 0;
      head[h] = kvh * group + (valid[h] ? rr - tok[h] * group : 0);
      limit[h] = valid[h] ? key_limit(sq, causal, group, rr) : 0;
    }
  }
};

// S = Q K^T for a warpgroup's 64 rows and a stage's 128 keys (one commit group, not waited).
template <typename T, int kDqk>
__device__ __forceinline__ void issue_qk(float (&s)[64], uint64_t desc_q, uint32_t stage) {
  using Plan = SmemPlan<kDqk>;
  const uint64_t desc_k = sm90::make_smem_desc(stage, 16, 1024);
  sm90::wgmma_fence();
#pragma unroll
  for (int a = 0; a < Plan::kQAtoms; ++a) {
#pragma unroll
    for (int kk = 0; kk < kAtomDims / 16; ++kk)
      sm90::wgmma_m64n128k16_ss<T>(s, sm90::desc_advance(desc_q, a * Plan::kQAtomBytes + kk * 32),
                                   sm90::desc_advance(desc_k, a * Plan::kKeyAtomBytes + kk * 32),
                                   (a | kk) != 0);
  }
  sm90::wgmma_commit();
}

// O += P V with P in registers and the stage's V as the MN-major B (one commit group, not
// waited).
template <typename T, int kDqk>
__device__ __forceinline__ void issue_pv(float (&o)[64], const uint32_t (&pb)[32],
                                         uint32_t stage) {
  using Plan = SmemPlan<kDqk>;
  const uint64_t desc_v = sm90::make_smem_desc(stage + Plan::kKBytes, Plan::kKeyAtomBytes, 1024);
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk)
    sm90::wgmma_m64n128k16_rs_tb<T>(o, pb + 4 * kk, sm90::desc_advance(desc_v, kk * 16 * 128), 1);
  sm90::wgmma_commit();
}

// One warpgroup's online softmax of a key tile's S (m64n128, raw products): -inf past each
// row's limit, the running max m (exp2 domain) and this thread's share of the row sums l
// updated, O rescaled, and P as the A fragments of P V (k16 chunk kk in pb[4 kk, 4 kk + 4)).
template <typename T>
__device__ __forceinline__ void online_softmax(float (&s)[64], const TilePlan& tp, int it,
                                               const int (&limit)[2], int quad_col,
                                               float scale_log2, float (&m)[2], float (&l)[2],
                                               float (&o)[64], uint32_t (&pb)[32]) {
  // -inf past each row's limit; the rows' maxima, of the raw products (the scale is
  // positive, so it commutes with the max and is applied once per row, then folded into the
  // exponent's FFMA).
  const int key0 = it * kKeys;
  if (tile_needs_mask(tp, it)) {  // uniform over the CTA
#pragma unroll
    for (int j = 0; j < 16; ++j) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int e = 0; e < 2; ++e)
          if (key0 + acc_column(j, quad_col, e) >= limit[h]) s[4 * j + 2 * h + e] = -INFINITY;
      }
    }
  }
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int j = 0; j < 16; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
      mx[h] = fmaxf(mx[h], fmaxf(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]));
  }
  float alpha[2], m_use[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 2));
    const float m_new = fmaxf(m[h], mx[h] * scale_log2);  // exp2 domain
    m_use[h] = m_new == -INFINITY ? 0.0f : m_new;  // nothing seen yet: P = 0, no NaN
    alpha[h] = fast_exp2(m[h] - m_use[h]);
    m[h] = m_new;
    l[h] *= alpha[h];
  }
  // P = 2^(s scale log2(e) - m); a masked s (-inf) gives 2^-inf = 0.
#pragma unroll
  for (int j = 0; j < 16; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float p0 = fast_exp2(fmaf(s[4 * j + 2 * h], scale_log2, -m_use[h]));
      const float p1 = fast_exp2(fmaf(s[4 * j + 2 * h + 1], scale_log2, -m_use[h]));
      l[h] += p0 + p1;
      pb[2 * j + h] = pack2<T>(p0, p1);
    }
  }
  if (!__all_sync(0xffffffff, alpha[0] == 1.0f && alpha[1] == 1.0f)) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      o[4 * j + 0] *= alpha[0];
      o[4 * j + 1] *= alpha[0];
      o[4 * j + 2] *= alpha[1];
      o[4 * j + 3] *= alpha[1];
    }
  }
}

// The epilogue of a warpgroup's rows: row sums over the quad, out = O / l and
// lse = ln(sum exp(logits)) (out 0 and lse +inf where nothing was seen).
template <typename T>
__device__ __forceinline__ void store_rows(const Params& p, const Sequence& sq,
                                           const ThreadRows& r, int quad_col,
                                           const float (&o)[64], const float (&m)[2],
                                           float (&l)[2]) {
  auto* out = static_cast<uint16_t*>(p.out);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffff, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffff, l[h], 2);
    if (!r.valid[h]) continue;
    const bool seen = l[h] > 0.0f;
    const float inv = seen ? fast_rcp(l[h]) : 0.0f;
    const int64_t t = sq.q0 + r.tok[h];
    uint16_t* row =
        out + t * p.out_stride_tok + static_cast<int64_t>(r.head[h]) * p.out_stride_head;
#pragma unroll
    for (int j = 0; j < 16; ++j)
      *reinterpret_cast<uint32_t*>(row + 8 * j + 2 * quad_col) =
          pack2<T>(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
    if (quad_col == 0)
      p.lse[static_cast<int64_t>(r.head[h]) * p.lse_stride_head + t * p.lse_stride_tok] =
          seen ? (m[h] + fast_log2(l[h])) * 0.69314718055994531f : INFINITY;
  }
}

// Rows of q after the last sequence (cu_q[b], total_q) belong to none: out = 0, lse = +inf, as
// on the CPU. The grid's extra z slice (blockIdx.z == b) writes them, kv head blockIdx.y's heads.
template <typename T>
__device__ void clear_tail_rows(const Params& p, int kvh, int tid) {
  const int64_t begin = clamp_to<int64_t>(p.cu_q[p.b], 0, p.total_q);
  auto* out = static_cast<uint16_t*>(p.out);
  for (int64_t tok = begin + blockIdx.x; tok < p.total_q; tok += gridDim.x) {
    for (int e = tid; e < p.group * (kDimV / 2); e += kThreads) {
      const int g = e / (kDimV / 2), c = e % (kDimV / 2);
      const int64_t head = kvh * p.group + g;
      *reinterpret_cast<uint32_t*>(out + tok * p.out_stride_tok + head * p.out_stride_head +
                                   2 * c) = 0u;
      if (c == 0) p.lse[head * p.lse_stride_head + tok * p.lse_stride_tok] = INFINITY;
    }
  }
}

// Grid: x = 128-row tiles of the longest sequence's rows (heaviest first when causal), y = kv
// head, z = sequence (plus one slice for the tail rows).
template <typename T, int kDqk>
__global__ void __launch_bounds__(kThreads, 1) mha_fwd_kernel(const __grid_constant__ Params p) {
  using Plan = SmemPlan<kDqk>;
  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = sm90::smem_addr(align_smem_1024(smem_raw));
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32, quad_col = lane % 4;
  const int kvh = blockIdx.y;
  if (static_cast<int>(blockIdx.z) == p.b) {
    clear_tail_rows<T>(p, kvh, tid);
    return;
  }
  const Sequence sq = sequence_bounds(p.cu_q, p.cu_k, blockIdx.z, p.total_q, p.total_k);
  const TilePlan tp = plan_tile(sq, p.causal != 0, p.group, blockIdx.x, gridDim.x);
  if (tp.row0 >= tp.rows) return;
  const int row0 = tp.row0, rows = tp.rows, n_tiles = tp.n_tiles;


  const ThreadRows r(sq, tp, p.group, p.causal != 0, kvh, tid);

  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  if (n_tiles > 0) {
    const CopySlot cs(tid);
    // cp.async groups: 0 = Q + tile 0, 1 = tile 1 (maybe empty), then one per iteration, so that
    // before iteration it the groups up to it + 1 are committed and waiting for all but the
    // newest leaves tile it complete.
    load_rows128<kDqk>({static_cast<const uint16_t*>(p.q), p.q_stride_tok, p.q_stride_head},
                       sq.q0, rows, row0, kvh, p.group, base + Plan::kQ, cs);
    KvCursor cur(p, sq, kvh, cs);
    load_kv<kDqk>(p, sq, cur, base + Plan::kStage0, cs);
    sm90::cp_async_commit();
    if (n_tiles > 1)
      load_kv<kDqk>(p, sq, cur, base + Plan::kStage0 + Plan::kStageBytes, cs);
    sm90::cp_async_commit();
    const uint64_t desc_q = sm90::make_smem_desc(base + Plan::kQ + wg * Plan::kQWgBytes, 16, 1024);

    for (int it = 0; it < n_tiles; ++it) {
      const uint32_t stage = base + Plan::kStage0 + (it & 1) * Plan::kStageBytes;
      sm90::cp_async_wait<1>();
      sm90::fence_proxy_async();  // this thread's copies, before the wgmmas read them
      __syncthreads();            // everyone's copies

      float s[64];
      issue_qk<T, kDqk>(s, desc_q, stage);
      sm90::wgmma_wait<0>();
      sm90::fence_regs(s);

      uint32_t pb[32];
      online_softmax<T>(s, tp, it, r.limit, quad_col, p.scale_log2, m, l, o, pb);

      issue_pv<T, kDqk>(o, pb, stage);
      sm90::wgmma_wait<0>();
      sm90::fence_regs(o);

      __syncthreads();  // both warpgroups are done with this stage: refill it
      if (it + 2 < n_tiles) load_kv<kDqk>(p, sq, cur, stage, cs);
      sm90::cp_async_commit();
    }
  }

  store_rows<T>(p, sq, r, quad_col, o, m, l);
}

}  // namespace flashmla::cuda::mha
