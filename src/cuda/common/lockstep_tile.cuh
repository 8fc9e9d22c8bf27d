// The lockstep attention step over one 64-key tile, shared by the dense decode kernels (the
// cp.async gather path's main_kernel; qk_half also by the seesaw kernel) and the sparse kernels:
// two consumer warpgroups (256 threads) on a 64-row Q tile, warpgroup w computing S for keys
// [32 w, 32 w + 32) and owning O's columns [256 w, 256 w + 256). Operands are 128-byte swizzled
// atom columns of 64 rows x 64 16-bit elements (Q, the key tile, P); V is the key tile's first
// 512 dims.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common/attn_math.cuh"
#include "cuda/common/sm90_ptx.cuh"
#include "cuda/common/wgmma_ops.cuh"

namespace flashmla::cuda::lockstep {

inline constexpr int kRows = 64;         // wgmma M: Q rows of a tile
inline constexpr int kKeys = 64;         // keys of a tile
inline constexpr int kKeysPerWg = 32;    // wgmma N of S
inline constexpr int kThreads = 256;     // two warpgroups
inline constexpr int kAtomDims = 64;     // 64 x 16-bit = one 128-byte swizzled row
inline constexpr int kAtomBytes = kRows * 128;
inline constexpr int kVAtomsPerWg = 4;   // 256 of V's 512 dims per warpgroup
inline constexpr int kBarRowMax = 1;     // named barrier: both warpgroups published row maxima
inline constexpr int kBarP = 2;          // named barrier: both halves of P are in shared memory

// Whether a kernel family's tile constants are the ones this step is written for.
constexpr bool same_tile_shape(int rows, int keys, int keys_per_wg, int threads, int atom_bytes,
                               int bar_row_max, int bar_p) {
  return rows == kRows && keys == kKeys && keys_per_wg == kKeysPerWg && threads == kThreads &&
         atom_bytes == kAtomBytes && bar_row_max == kBarRowMax && bar_p == kBarP;
}

// S_w = Q K[32 wg, 32 wg + 32)^T over d_qk for one key tile (wgmma m64n32k16, one commit group,
// waited for). The caller waits for the stage's data before: a spin loop between the wgmmas of
// one group makes ptxas serialize them (perf-journal.md, v3).
template <typename T, int kQAtoms>
__device__ __forceinline__ void qk_half(float (&s)[16], uint64_t desc_q, uint64_t desc_k) {
  sm90::wgmma_fence();
#pragma unroll
  for (int a = 0; a < kQAtoms; ++a) {
#pragma unroll
    for (int kk = 0; kk < kAtomDims / 16; ++kk)
      sm90::wgmma_m64n32k16_ss<T>(s, sm90::desc_advance(desc_q, a * kAtomBytes + kk * 32),
                                  sm90::desc_advance(desc_k, a * kAtomBytes + kk * 32),
                                  (a | kk) != 0);
  }
  sm90::wgmma_commit();
  sm90::wgmma_wait<0>();
  sm90::fence_regs(s);
}

// The rest of the step, given this warpgroup's S half already in the log2 domain and masked
// (-inf) and its quad-reduced row maxima `mx` (rows my_row[0], my_row[1]): the row maxima of both
// halves through shared memory, the online softmax (running max m, this thread's row sums l, O
// rescaled), P through shared memory (16-bit, swizzled) and O_w += P V[:, 256 wg, 256 wg + 256)
// from the key tile at `stage_addr`, waited for -- or, with kWaitPv = false, left in flight: the
// caller may then do work that touches neither O nor the stage, and must call wait_pv(o).
template <typename T, bool kWaitPv = true>
__device__ __forceinline__ void softmax_pv(const float (&s)[16], const float (&mx)[2],
                                           float (&o)[128], float (&m)[2], float (&l)[2],
                                           float* row_max_smem, uint8_t* p_smem, uint64_t desc_p,
                                           uint32_t stage_addr, int wg, int quad_col,
                                           const int (&my_row)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (quad_col == 0) row_max_smem[wg * kRows + my_row[h]] = mx[h];
  }
  sm90::named_barrier_sync(kBarRowMax, kThreads);

  // Online softmax: both warpgroups derive the same new max, so their halves of O and of the row
  // sums share one scale.
  float alpha[2], m_use[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float m_new =
        fmaxf(m[h], fmaxf(row_max_smem[my_row[h]], row_max_smem[kRows + my_row[h]]));
    m_use[h] = m_new == -INFINITY ? 0.0f : m_new;  // all masked so far: P = 0, no NaN
    alpha[h] = fast_exp2(m[h] - m_use[h]);
    m[h] = m_new;
    l[h] *= alpha[h];
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float p0 = fast_exp2(s[4 * j + 2 * h] - m_use[h]);
      const float p1 = fast_exp2(s[4 * j + 2 * h + 1] - m_use[h]);
      l[h] += p0 + p1;
      const int row = my_row[h];
      const int key = wg * kKeysPerWg + 8 * j + 2 * quad_col;
      *reinterpret_cast<uint32_t*>(p_smem + sm90::swizzle128_offset(row, key / 8) +
                                   (key % 8) * 2) = pack2<T>(p0, p1);
    }
  }
  // Once the running max settles, alpha is exactly 1: skip the 128 multiplies warp-wide.
  if (!__all_sync(0xffffffff, alpha[0] == 1.0f && alpha[1] == 1.0f)) {
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      o[4 * j + 0] *= alpha[0];
      o[4 * j + 1] *= alpha[0];
      o[4 * j + 2] *= alpha[1];
      o[4 * j + 3] *= alpha[1];
    }
  }
  sm90::fence_proxy_async();
  sm90::named_barrier_sync(kBarP, kThreads);

  // O_w += P V[:, 256 wg, 256 wg + 256): V rows are keys (K), columns dims (N, MN-major).
  const uint64_t desc_v =
      sm90::make_smem_desc(stage_addr + wg * kVAtomsPerWg * kAtomBytes, kAtomBytes, 1024);
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk)
    sm90::wgmma_m64n256k16_ss_tb<T>(o, sm90::desc_advance(desc_p, kk * 32),
                                    sm90::desc_advance(desc_v, kk * 16 * 128), 1);
  sm90::wgmma_commit();
  if constexpr (kWaitPv) {
    sm90::wgmma_wait<0>();
    sm90::fence_regs(o);
  }
}

// Completes a P V left in flight by softmax_pv<T, false>.
__device__ __forceinline__ void wait_pv(float (&o)[128]) {
  sm90::wgmma_wait<0>();
  sm90::fence_regs(o);
}

// This thread's share of its two rows' sums (l) reduced over the quad and published per warpgroup
// (row_sum_smem[wg][row]); the epilogue adds the two warpgroups' halves after a barrier.
__device__ __forceinline__ void publish_row_sums(float (&l)[2], float* row_sum_smem, int wg,
                                                 int quad_col, const int (&my_row)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffff, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffff, l[h], 2);
    if (quad_col == 0) row_sum_smem[wg * kRows + my_row[h]] = l[h];
  }
}

}  // namespace flashmla::cuda::lockstep
