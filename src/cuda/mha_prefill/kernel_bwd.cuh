// Dense MHA prefill backward on sm_90a, first version: the dq kernel and the dk/dv kernel
// (config_bwd.h has the shapes and the reasons). Both keep the forward's building blocks: wgmma
// with operands in 128-byte swizzled atom columns, register-resident P / dS as A fragments, a
// two-stage cp.async pipeline filled by both warpgroups, two CTA barriers a step.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/attn_math.cuh"
#include "cuda/common/sm90_ptx.cuh"
#include "cuda/common/wgmma_ops.cuh"
#include "cuda/mha_prefill/config_bwd.h"
#include "cuda/mha_prefill/copies.cuh"
#include "cuda/mha_prefill/kernel.cuh"
#include "cuda/mha_prefill/tiling.h"

namespace flashmla::cuda::mha {

inline constexpr float kLog2e = 1.4426950408889634f;

// acc[m64 x N] += A (fragments) B, B MN-major from shared memory, N = 128 or 192.
template <typename T, int N>
__device__ __forceinline__ void wgmma_rs_tb(float (&acc)[N / 2], const uint32_t* a,
                                            uint64_t desc_b) {
  if constexpr (N == 128) sm90::wgmma_m64n128k16_rs_tb<T>(acc, a, desc_b, 1);
  else sm90::wgmma_m64n192k16_rs_tb<T>(acc, a, desc_b, 1);
}

// Sum of the products of eight 16-bit pairs.
template <typename T>
__device__ __forceinline__ float dot8(const uint4& x, const uint4& y) {
  const uint32_t xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
  float d = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 a, b;
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&xs[i]));
      b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ys[i]));
    } else {
      a = __half22float2(*reinterpret_cast<const __half2*>(&xs[i]));
      b = __half22float2(*reinterpret_cast<const __half2*>(&ys[i]));
    }
    d = fmaf(a.x, b.x, fmaf(a.y, b.y, d));
  }
  return d;
}

// Rows [begin, end) of heads [head0, head0 + heads) of a [tokens, heads, dims] output set to
// zero (the rows after the last sequence), grid-stride over blockIdx.x.
__device__ void clear_rows(void* x, int64_t stride_tok, int64_t stride_head, int64_t begin,
                           int64_t end, int head0, int heads, int dims, int tid) {
  auto* base = static_cast<uint16_t*>(x);
  for (int64_t tok = begin + blockIdx.x; tok < end; tok += gridDim.x)
    for (int e = tid; e < heads * (dims / 2); e += kThreads) {
      const int g = e / (dims / 2), c = e % (dims / 2);
      *reinterpret_cast<uint32_t*>(base + tok * stride_tok + (head0 + g) * stride_head + 2 * c) =
          0u;
    }
}

// The per-row statistics of query row (t, head): lse in the exp2 domain (+inf: the row saw
// nothing, or is not a row: P = 0) and the gradient of lse subtracted from dout . out.
__device__ __forceinline__ float row_lse2(const BwdParams& p, int64_t t, int head) {
  return p.lse[head * p.lse_stride_head + t * p.lse_stride_tok] * kLog2e;
}
__device__ __forceinline__ float row_dlse(const BwdParams& p, int64_t t, int head) {
  return p.dlse ? p.dlse[head * p.dlse_stride_head + t * p.dlse_stride_tok] : 0.0f;
}

// ---- dq: a CTA owns 128 query rows, walks key tiles of 64 ------------------------------------
// Grid: x = 128-row tiles of the longest sequence (heaviest first when causal), y = kv head,
// z = sequence, plus a slice that zeroes dq's rows after the last sequence.
template <typename T, int kDqk>
__global__ void __launch_bounds__(kThreads, 1) mha_bwd_dq_kernel(const __grid_constant__ BwdParams p) {
  using Plan = DqSmemPlan<kDqk>;
  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = sm90::smem_addr(align_smem_1024(smem_raw));
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32, quad_col = lane % 4;
  const int kvh = blockIdx.y;
  if (static_cast<int>(blockIdx.z) == p.b) {
    clear_rows(p.dq, p.dq_stride_tok, p.dq_stride_head,
               clamp_to<int64_t>(p.cu_q[p.b], 0, p.total_q), p.total_q, kvh * p.group, p.group,
               kDqk, tid);
    return;
  }
  const Sequence sq = sequence_bounds(p.cu_q, p.cu_k, blockIdx.z, p.total_q, p.total_k);
  const TilePlan tp = plan_tile<kDqKeys>(sq, p.causal != 0, p.group, blockIdx.x, gridDim.x);
  if (tp.row0 >= tp.rows) return;

  // This thread's two rows, their lse and delta = dout . out - dlse (the quad's lanes take 32 of
  // the 128 dims each, straight from global memory).
  const ThreadRows r(sq, tp, p.group, p.causal != 0, kvh, tid);
  float lse2[2], delta[2];
  const auto* dout = static_cast<const uint16_t*>(p.dout);
  const auto* out = static_cast<const uint16_t*>(p.out);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t t = sq.q0 + r.tok[h];
    float d = 0.0f;
    if (r.valid[h]) {
      const auto* dr =
          dout + t * p.dout_stride_tok + r.head[h] * p.dout_stride_head + 32 * quad_col;
      const auto* orow =
          out + t * p.out_stride_tok + r.head[h] * p.out_stride_head + 32 * quad_col;
#pragma unroll
      for (int c = 0; c < 4; ++c)
        d += dot8<T>(*reinterpret_cast<const uint4*>(dr + 8 * c),
                     *reinterpret_cast<const uint4*>(orow + 8 * c));
    }
    d += __shfl_xor_sync(0xffffffff, d, 1);
    d += __shfl_xor_sync(0xffffffff, d, 2);
    delta[h] = r.valid[h] ? d - row_dlse(p, t, r.head[h]) : 0.0f;
    lse2[h] = r.valid[h] ? row_lse2(p, t, r.head[h]) : INFINITY;
  }

  float acc[kDqk / 2];
#pragma unroll
  for (int i = 0; i < kDqk / 2; ++i) acc[i] = 0.0f;

  if (tp.n_tiles > 0) {
    const CopySlot cs(tid);
    const RowSource ks{static_cast<const uint16_t*>(p.k), p.k_stride_tok, p.k_stride_head};
    const RowSource vs{static_cast<const uint16_t*>(p.v), p.v_stride_tok, p.v_stride_head};
    auto load_tile = [&](int tile, uint32_t stage) {
      const int key0 = tile * kDqKeys;
      load_keys<kDqk, kDqKeys / kRowsPerPass, false>(ks, sq.k0 + key0, sq.s_k - key0, kvh, stage,
                                                     cs);
      load_keys<kDimV, kDqKeys / kRowsPerPass, false>(vs, sq.k0 + key0, sq.s_k - key0, kvh,
                                                      stage + Plan::kKBytes, cs);
    };
    // cp.async groups as in the forward: 0 = Q, dO and tile 0; 1 = tile 1 (maybe empty); then one
    // an iteration.
    load_rows128<kDqk>({static_cast<const uint16_t*>(p.q), p.q_stride_tok, p.q_stride_head},
                       sq.q0, tp.rows, tp.row0, kvh, p.group, base + Plan::kQ, cs);
    load_rows128<kDimV>({dout, p.dout_stride_tok, p.dout_stride_head}, sq.q0, tp.rows, tp.row0,
                        kvh, p.group, base + Plan::kDo, cs);
    load_tile(0, base + Plan::kStage0);
    sm90::cp_async_commit();
    if (tp.n_tiles > 1) load_tile(1, base + Plan::kStage0 + Plan::kStageBytes);
    sm90::cp_async_commit();
    const uint64_t desc_q =
        sm90::make_smem_desc(base + Plan::kQ + wg * Plan::kQWgBytes, 16, 1024);
    const uint64_t desc_do =
        sm90::make_smem_desc(base + Plan::kDo + wg * Plan::kDoWgBytes, 16, 1024);

    for (int it = 0; it < tp.n_tiles; ++it) {
      const uint32_t stage = base + Plan::kStage0 + (it & 1) * Plan::kStageBytes;
      sm90::cp_async_wait<1>();
      sm90::fence_proxy_async();
      __syncthreads();

      // S = Q K^T and dP = dO V^T, one commit group.
      float s[32], dp[32];
      const uint64_t desc_k = sm90::make_smem_desc(stage, 16, 1024);
      const uint64_t desc_v = sm90::make_smem_desc(stage + Plan::kKBytes, 16, 1024);
      sm90::wgmma_fence();
#pragma unroll
      for (int a = 0; a < Plan::kQAtoms; ++a)
#pragma unroll
        for (int kk = 0; kk < kAtomDims / 16; ++kk)
          sm90::wgmma_m64n64k16_ss<T>(
              s, sm90::desc_advance(desc_q, a * Plan::kRowAtomBytes + kk * 32),
              sm90::desc_advance(desc_k, a * Plan::kKeyAtomBytes + kk * 32), (a | kk) != 0);
#pragma unroll
      for (int a = 0; a < kDimV / kAtomDims; ++a)
#pragma unroll
        for (int kk = 0; kk < kAtomDims / 16; ++kk)
          sm90::wgmma_m64n64k16_ss<T>(
              dp, sm90::desc_advance(desc_do, a * Plan::kRowAtomBytes + kk * 32),
              sm90::desc_advance(desc_v, a * Plan::kKeyAtomBytes + kk * 32), (a | kk) != 0);
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90::fence_regs(s);
      sm90::fence_regs(dp);

      // P = 2^(s scale log2(e) - lse2) (0 where masked), dS = P (dP - delta) as A fragments.
      const int key0 = it * kDqKeys;
      const bool mask = tile_needs_mask<kDqKeys>(tp, it);
      uint32_t db[16];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float ds[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float pr = fast_exp2(fmaf(s[4 * j + 2 * h + e], p.scale_log2, -lse2[h]));
            if (mask && key0 + acc_column(j, quad_col, e) >= r.limit[h]) pr = 0.0f;
            ds[e] = pr * (dp[4 * j + 2 * h + e] - delta[h]);
          }
          db[2 * j + h] = pack2<T>(ds[0], ds[1]);
        }
      }

      // dQ += dS K: K as the MN-major B (N = d_qk in atom columns of 64 keys, K = keys).
      const uint64_t desc_kt = sm90::make_smem_desc(stage, Plan::kKeyAtomBytes, 1024);
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kDqKeys / 16; ++kk)
        wgmma_rs_tb<T, kDqk>(acc, db + 4 * kk, sm90::desc_advance(desc_kt, kk * 16 * 128));
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90::fence_regs(acc);

      __syncthreads();  // both warpgroups are done with this stage: refill it
      if (it + 2 < tp.n_tiles) load_tile(it + 2, stage);
      sm90::cp_async_commit();
    }
  }

  auto* dq = static_cast<uint16_t*>(p.dq);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (!r.valid[h]) continue;
    uint16_t* row = dq + (sq.q0 + r.tok[h]) * p.dq_stride_tok +
                    static_cast<int64_t>(r.head[h]) * p.dq_stride_head;
#pragma unroll
    for (int j = 0; j < kDqk / 8; ++j)
      *reinterpret_cast<uint32_t*>(row + 8 * j + 2 * quad_col) =
          pack2<T>(acc[4 * j + 2 * h] * p.scale, acc[4 * j + 2 * h + 1] * p.scale);
  }
}

// ---- dk / dv: a CTA owns 128 keys, walks the rows that see them, 32 at a time ---------------
// Grid: x = 128-key tiles of the longest sequence, y = kv head, z = sequence, plus a slice that
// zeroes dk's and dv's rows after the last sequence.
template <typename T, int kDqk>
__global__ void __launch_bounds__(kThreads, 1) mha_bwd_dkdv_kernel(const __grid_constant__ BwdParams p) {
  using Plan = DkvSmemPlan<kDqk>;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = align_smem_1024(smem_raw);
  const uint32_t base = sm90::smem_addr(smem);
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32, quad_col = lane % 4;
  const int kvh = blockIdx.y;
  if (static_cast<int>(blockIdx.z) == p.b) {
    const int64_t begin = clamp_to<int64_t>(p.cu_k[p.b], 0, p.total_k);
    clear_rows(p.dk, p.dk_stride_tok, p.dk_stride_head, begin, p.total_k, kvh, 1, kDqk, tid);
    clear_rows(p.dv, p.dv_stride_tok, p.dv_stride_head, begin, p.total_k, kvh, 1, kDimV, tid);
    return;
  }
  const Sequence sq = sequence_bounds(p.cu_q, p.cu_k, blockIdx.z, p.total_q, p.total_k);
  const bool causal = p.causal != 0;
  const KeyTilePlan kp = plan_key_tile(sq, causal, p.group, blockIdx.x);
  if (kp.key0 >= sq.s_k) return;

  // This thread's two keys (rows of the accumulators).
  int key[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) key[h] = kp.key0 + thread_row(tid, h);
  float* stat_lse2 = reinterpret_cast<float*>(smem + Plan::kStats);
  float* stat_delta = stat_lse2 + kStepRows;
  int* stat_limit = reinterpret_cast<int*>(stat_delta + kStepRows);

  float dk[kDqk / 2], dv[kDimV / 2];
#pragma unroll
  for (int i = 0; i < kDqk / 2; ++i) dk[i] = 0.0f;
#pragma unroll
  for (int i = 0; i < kDimV / 2; ++i) dv[i] = 0.0f;

  if (kp.n_steps > 0) {
    const CopySlot cs(tid);
    const RowSource qs{static_cast<const uint16_t*>(p.q), p.q_stride_tok, p.q_stride_head};
    const RowSource dos{static_cast<const uint16_t*>(p.dout), p.dout_stride_tok,
                        p.dout_stride_head};
    const RowSource os{static_cast<const uint16_t*>(p.out), p.out_stride_tok, p.out_stride_head};
    auto load_step = [&](int step, uint32_t stage) {
      const int row0 = kp.row_begin + step * kStepRows;
      load_rows32<kDqk>(qs, sq.q0, kp.rows, row0, kvh, p.group, stage, cs);
      load_rows32<kDimV>(dos, sq.q0, kp.rows, row0, kvh, p.group, stage + Plan::kQBytes, cs);
      load_rows32<kDimV>(os, sq.q0, kp.rows, row0, kvh, p.group,
                         stage + Plan::kQBytes + Plan::kDoBytes, cs);
    };
    // Groups: 0 = K, V and step 0; 1 = step 1 (maybe empty); then one a step.
    const int n_keys = sq.s_k - kp.key0;
    load_keys<kDqk, kPasses, true>({static_cast<const uint16_t*>(p.k), p.k_stride_tok,
                                    p.k_stride_head},
                                   sq.k0 + kp.key0, n_keys, kvh, base + Plan::kK, cs);
    load_keys<kDimV, kPasses, true>({static_cast<const uint16_t*>(p.v), p.v_stride_tok,
                                     p.v_stride_head},
                                    sq.k0 + kp.key0, n_keys, kvh, base + Plan::kV, cs);
    load_step(0, base + Plan::kStage0);
    sm90::cp_async_commit();
    if (kp.n_steps > 1) load_step(1, base + Plan::kStage0 + Plan::kStageBytes);
    sm90::cp_async_commit();
    const uint64_t desc_k =
        sm90::make_smem_desc(base + Plan::kK + wg * Plan::kKWgBytes, 16, 1024);
    const uint64_t desc_v =
        sm90::make_smem_desc(base + Plan::kV + wg * Plan::kVWgBytes, 16, 1024);

    for (int st = 0; st < kp.n_steps; ++st) {
      const uint32_t stage = base + Plan::kStage0 + (st & 1) * Plan::kStageBytes;
      sm90::cp_async_wait<1>();
      sm90::fence_proxy_async();
      __syncthreads();

      // S^T = K Q^T and dP^T = V dO^T (keys on M, the step's rows on N), one commit group.
      float s[16], dp[16];
      const uint64_t desc_q = sm90::make_smem_desc(stage, 16, 1024);
      const uint64_t desc_do = sm90::make_smem_desc(stage + Plan::kQBytes, 16, 1024);
      sm90::wgmma_fence();
#pragma unroll
      for (int a = 0; a < Plan::kQAtoms; ++a)
#pragma unroll
        for (int kk = 0; kk < kAtomDims / 16; ++kk)
          sm90::wgmma_m64n32k16_ss<T>(
              s, sm90::desc_advance(desc_k, a * Plan::kKeyAtomBytes + kk * 32),
              sm90::desc_advance(desc_q, a * Plan::kStepAtomBytes + kk * 32), (a | kk) != 0);
#pragma unroll
      for (int a = 0; a < kDimV / kAtomDims; ++a)
#pragma unroll
        for (int kk = 0; kk < kAtomDims / 16; ++kk)
          sm90::wgmma_m64n32k16_ss<T>(
              dp, sm90::desc_advance(desc_v, a * Plan::kKeyAtomBytes + kk * 32),
              sm90::desc_advance(desc_do, a * Plan::kStepAtomBytes + kk * 32), (a | kk) != 0);
      sm90::wgmma_commit();

      // Meanwhile, the step's per-row statistics: eight threads a row sum dout . out over 16
      // dims each (from the stage), the row's first thread adds lse, dlse and the limit.
      {
        const int r = tid / 8, part = tid % 8;
        const uint8_t* st_do = smem + (stage - base) + Plan::kQBytes;
        const uint8_t* st_o = st_do + Plan::kDoBytes;
        float d = 0.0f;
#pragma unroll
        for (int c2 = 0; c2 < 2; ++c2) {
          const int c = 2 * part + c2;  // chunk of the row: dims [8 c, 8 c + 8)
          const uint32_t off = (c / 8) * Plan::kStepAtomBytes + swizzle128(r, c % 8);
          d += dot8<T>(*reinterpret_cast<const uint4*>(st_do + off),
                       *reinterpret_cast<const uint4*>(st_o + off));
        }
        d += __shfl_xor_sync(0xffffffff, d, 1);
        d += __shfl_xor_sync(0xffffffff, d, 2);
        d += __shfl_xor_sync(0xffffffff, d, 4);
        if (part == 0) {
          const int rr = kp.row_begin + st * kStepRows + r;
          const bool ok = rr < kp.rows;
          const int i = ok ? rr / p.group : 0;
          const int head = kvh * p.group + (ok ? rr - i * p.group : 0);
          const int64_t t = sq.q0 + i;
          stat_lse2[r] = ok ? row_lse2(p, t, head) : INFINITY;
          stat_delta[r] = ok ? d - row_dlse(p, t, head) : 0.0f;
          stat_limit[r] = ok ? key_limit(sq, causal, p.group, rr) : 0;
        }
      }
      __syncthreads();  // the statistics are in shared memory
      sm90::wgmma_wait<0>();
      sm90::fence_regs(s);
      sm90::fence_regs(dp);

      // P^T and dS^T (0 where a row may not see a key) as A fragments.
      const bool mask = step_needs_mask(kp, sq, causal, p.group, st);
      uint32_t pb[8], db[8];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float pr[2], ds[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int col = acc_column(j, quad_col, e);
            pr[e] = fast_exp2(fmaf(s[4 * j + 2 * h + e], p.scale_log2, -stat_lse2[col]));
            if (mask && key[h] >= stat_limit[col]) pr[e] = 0.0f;
            ds[e] = pr[e] * (dp[4 * j + 2 * h + e] - stat_delta[col]);
          }
          pb[2 * j + h] = pack2<T>(pr[0], pr[1]);
          db[2 * j + h] = pack2<T>(ds[0], ds[1]);
        }
      }

      // dV += P^T dO and dK += dS^T Q: the step's dO and Q as MN-major B (N = dims in atom
      // columns of 32 rows, K = the step's rows).
      const uint64_t desc_dot = sm90::make_smem_desc(stage + Plan::kQBytes, Plan::kStepAtomBytes,
                                                     1024);
      const uint64_t desc_qt = sm90::make_smem_desc(stage, Plan::kStepAtomBytes, 1024);
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kStepRows / 16; ++kk) {
        sm90::wgmma_m64n128k16_rs_tb<T>(dv, pb + 4 * kk,
                                        sm90::desc_advance(desc_dot, kk * 16 * 128), 1);
        wgmma_rs_tb<T, kDqk>(dk, db + 4 * kk, sm90::desc_advance(desc_qt, kk * 16 * 128));
      }
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90::fence_regs(dk);
      sm90::fence_regs(dv);

      __syncthreads();  // both warpgroups are done with this stage: refill it
      if (st + 2 < kp.n_steps) load_step(st + 2, stage);
      sm90::cp_async_commit();
    }
  }

  auto* dk_out = static_cast<uint16_t*>(p.dk);
  auto* dv_out = static_cast<uint16_t*>(p.dv);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (key[h] >= sq.s_k) continue;
    const int64_t t = sq.k0 + key[h];
    uint16_t* krow = dk_out + t * p.dk_stride_tok + kvh * p.dk_stride_head;
    uint16_t* vrow = dv_out + t * p.dv_stride_tok + kvh * p.dv_stride_head;
#pragma unroll
    for (int j = 0; j < kDqk / 8; ++j)
      *reinterpret_cast<uint32_t*>(krow + 8 * j + 2 * quad_col) =
          pack2<T>(dk[4 * j + 2 * h] * p.scale, dk[4 * j + 2 * h + 1] * p.scale);
#pragma unroll
    for (int j = 0; j < kDimV / 8; ++j)
      *reinterpret_cast<uint32_t*>(vrow + 8 * j + 2 * quad_col) =
          pack2<T>(dv[4 * j + 2 * h], dv[4 * j + 2 * h + 1]);
  }
}

}  // namespace flashmla::cuda::mha
