// Kernel parameters and the shared-memory plan of the dense decode kernels.
#pragma once

#include <cstdint>

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
  int rows;                 // s_q * group: query rows per kv head
  int page_block_size;
  int64_t num_blocks;
  int64_t max_len;          // max_blocks_per_seq * page_block_size: lengths are clamped to it
  float scale_log2;         // softmax_scale * log2(e)
  int causal;
  int use_tma;              // KV tiles by TMA (page_block_size % 64 == 0), else cp.async gathers
  int lockstep;             // TMA path through main_kernel instead of the seesaw (A/B timing)
};

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

}  // namespace flashmla::cuda::mla_decode
