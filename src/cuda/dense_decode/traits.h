// Kernel parameters and the shared-memory plan of the dense decode kernels.
#pragma once

#include <cstdint>

#include "core/fast_div.h"
#include "cuda/dense_decode/config.h"

namespace flashmla::cuda::mla_decode {

// Everything the main kernel reads, resolved on the host from DenseDecodeParams (strides in
// elements). Passed by value as a __grid_constant__ parameter.
struct MainParams {
  const void* q;            // [b, s_q, h_q, d_qk]
  int64_t q_stride[3];
  const void* k_cache;      // [num_blocks, page_block_size, h_kv, d_qk]
  int64_t k_stride[3];
  const int32_t* block_table;  // [b, max_blocks_per_seq]
  int64_t bt_stride[2];
  const int32_t* seqlens;   // [b]
  int64_t seqlens_stride;
  void* out;                // [b, s_q, h_q, 512], q's dtype
  int64_t out_stride[3];
  float* lse;               // [b, h_q, s_q]
  int64_t lse_stride[3];
  const int32_t* sched_meta;  // sched::View layout
  float* o_partial;         // [max_slots, s_q * h_q, 512]
  float* lse_partial;       // [max_slots, s_q * h_q]
  int64_t b;
  int num_parts;
  int s_q, h_q, h_kv;
  int group;                // h_q / h_kv
  FastDiv group_div;        // division by group (a row's query index)
  int rows;                 // s_q * group: query rows per kv head
  int page_block_size;
  FastDiv page_div;         // division by page_block_size (the TMA path's page of a token)
  int64_t num_blocks;
  int64_t max_len;          // max_blocks_per_seq * page_block_size: lengths are clamped to it
  float scale_log2;         // softmax_scale * log2(e)
  int causal;
  int use_tma;              // KV tiles by TMA (page_block_size % 64 == 0), else cp.async gathers
  int inline_loads;         // pair kernel: consumer lanes issue the KV copies, no producer (A/B)
  int kv_evict_normal;      // KV TMA loads with the evict-normal L2 hint, else evict-first
  int sync_handoffs;        // pair kernel: bar.sync on both sides of each hand-off (racecheck)
  int out_vec16;            // out's rows start on 16-byte boundaries: 16-byte output stores
  int q_tma;                // pair kernel: Q tiles by TMA from the producer (a Q map exists)
  int v_box;                // pair kernel: V halves as one box each (config.h, kVBoxAtoms)
  int combine_bulk;         // combine: the bulk-copy kernel, not the row-per-warp one (A/B)
  int variant;              // TMA path kernel: kVariantPair (default), kVariantSeesaw,
                            //   kVariantLockstep (A/B timing and tests)
  long long* trace;         // pair kernel clock64 timeline (builds with
                            //   FLASHMLA_DENSE_DECODE_TRACE only; see trace.cuh), else null
};

inline constexpr int kVariantPair = 0;
inline constexpr int kVariantSeesaw = 1;
inline constexpr int kVariantLockstep = 2;

// Shared memory, in bytes from a 1024-aligned base (swizzle atoms must be 1024-aligned).
//   q      [kQAtoms][64 rows][128 B]         the Q tile, 128-byte swizzled per 64-dim column
//   k[s]   [kQAtoms][64 tokens][128 B]       KV tile stage s (V = its first 8 atom columns)
//   p      [64 rows][64 tokens] 16-bit       P, one swizzle atom column (A operand of P V)
//   row_max[2][64], row_sum[2][64] float    per-warpgroup row statistics
//   full[kKvStages], empty[kKvStages] uint64 mbarriers of the TMA path
template <int kDqk>
struct SmemPlan {
  static constexpr int kQAtoms = kDqk / kAtomDims;
  static constexpr int kTileBytes = kQAtoms * kAtomBytes;
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kTileBytes;
  static constexpr int kP = kK + kKvStages * kTileBytes;
  static constexpr int kRowMax = kP + kAtomBytes;
  static constexpr int kRowSum = kRowMax + kWarpgroups * kRowsPerTile * 4;
  static constexpr int kBars = kRowSum + kWarpgroups * kRowsPerTile * 4;
  static constexpr int kEnd = kBars + 2 * kKvStages * 8;
  static constexpr int kBytes = kEnd + 1024;  // slack to align the dynamic base to 1024
  static_assert(kDqk % kAtomDims == 0, "d_qk must be whole 64-dim atom columns");
  static_assert(kDqk >= kDimV, "V is the first 512 dims of K");
  static_assert(kBytes <= 227 * 1024, "shared memory plan exceeds the sm_90 per-block limit");
};

// Shared memory of the pair kernel (kernel_pair.cuh), in bytes from a 1024-aligned base:
//   q        [kQAtoms] atom columns; with d_qk = 576 the RoPE atom (8) is copied to registers
//            after the Q load and its 8 KB then hold P1
//   k0, k1   [kQAtoms] atom columns each: KV blocks b (warpgroup 0's) and b + 1 (warpgroup 1's)
//   p0       one atom column: P0 (16-bit), the A operand of WG1's P0 V0_R
//   p1       one atom column (own, or Q's RoPE atom): P1, the A operand of WG0's P1 V1_L
//   m[64], scale0[64], scale1[64], row_sum[2][64] float
//   bars     [2][kQAtoms] uint64 mbarriers: one per atom column of k0 and k1
//   empty    [6] uint64 mbarriers: buffer parts (k0, k1 x V_L, V_R, RoPE) released by the
//            consumers for the producer warpgroup
//   q_full, q_empty  uint64 mbarriers of the Q tile loaded by TMA (p.q_tma)
template <int kDqk>
struct PairSmemPlan {
  static constexpr int kQAtoms = kDqk / kAtomDims;
  static constexpr bool kRopeInRegs = kQAtoms == kDimV / kAtomDims + 1;
  static constexpr int kTileBytes = kQAtoms * kAtomBytes;
  static constexpr int kQ = 0;
  static constexpr int kK0 = kQ + kTileBytes;
  static constexpr int kK1 = kK0 + kTileBytes;
  static constexpr int kP0 = kK1 + kTileBytes;
  static constexpr int kP1 = kRopeInRegs ? kQ + (kQAtoms - 1) * kAtomBytes : kP0 + kAtomBytes;
  static constexpr int kM = kP0 + kAtomBytes + (kRopeInRegs ? 0 : kAtomBytes);
  static constexpr int kScale0 = kM + kRowsPerTile * 4;
  static constexpr int kScale1 = kScale0 + kRowsPerTile * 4;
  static constexpr int kRowSum = kScale1 + kRowsPerTile * 4;
  static constexpr int kBars = kRowSum + kWarpgroups * kRowsPerTile * 4;
  static constexpr int kEmpty = kBars + 2 * kQAtoms * 8;
  static constexpr int kQFull = kEmpty + 6 * 8;
  static constexpr int kQEmpty = kQFull + 8;
  static constexpr int kEnd = kQEmpty + 8;
  static constexpr int kBytes = kEnd + 1024;  // slack to align the dynamic base to 1024
  static_assert(kQAtoms == kDimV / kAtomDims || kRopeInRegs, "d_qk must be 512 or 576");
  static_assert(kBytes <= 227 * 1024, "shared memory plan exceeds the sm_90 per-block limit");
};

}  // namespace flashmla::cuda::mla_decode
