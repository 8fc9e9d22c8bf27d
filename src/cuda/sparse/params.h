// Kernel parameters and the shared-memory plan of the sparse attention kernels.
#pragma once

#include <cstdint>

#include "core/fast_div.h"
#include "cuda/sparse/config.h"

namespace flashmla::cuda::sparse {

// Where a scope's selected keys live and how many of a query's entries count. Strides in
// elements of the pointee, bytes for the cache.
struct Scope {
  const int32_t* indices;      // [outer, inner, topk] (decode) or [s_q, h_kv, topk] (prefill)
  int64_t idx_stride_outer, idx_stride_inner, idx_stride_kvh;
  int topk;
  const int32_t* topk_length;  // optional, [outer]: only the first topk_length entries count
  int64_t topk_length_stride;
  const uint8_t* cache;        // FP8 page blocks (decode) or bf16 rows (prefill)
  int64_t num_slots;           // valid entries are 0 <= index < num_slots
  // bf16 rows (prefill): a key at cache + index * key_stride + kvh * kvh_stride (bytes).
  int64_t key_stride, kvh_stride;
  // FP8 pages (decode): slot = block * page + offset, block at cache + block * block_stride.
  int64_t block_stride;
  int page;
  FastDiv page_div;
};

// Everything the kernel reads, resolved on the host (passed as a __grid_constant__ parameter).
// Query tokens are numbered token = outer * inner + i: (request, query) for decode (inner =
// s_q), the query row for prefill (inner = 1). Strides in elements.
struct GatherParams {
  const void* q;       // bf16 [outer, inner, h_q, d_qk]
  int64_t q_stride_outer, q_stride_inner, q_stride_head;
  void* out;           // bf16 [outer, inner, h_q, 512]
  int64_t out_stride_outer, out_stride_inner, out_stride_head;
  float* lse;          // natural log, +inf where nothing was attended
  int64_t lse_stride_outer, lse_stride_inner, lse_stride_head;
  float* max_logits;   // optional (prefill): max scaled logit, -inf where nothing was attended
  int64_t ml_stride_outer, ml_stride_inner, ml_stride_head;
  const float* attn_sink;  // optional [h_q]: out *= 1 / (1 + exp(sink - lse))
  int64_t sink_stride;
  Scope scope[kMaxScopes];
  int num_scopes;
  int64_t num_tokens;  // outer * inner
  int inner;
  FastDiv inner_div;
  int h_q, h_kv;
  int group;           // h_q / h_kv: query heads per kv head (rows of a token's tiles)
  int head_tiles;      // ceil(group / 64)
  float scale_log2;    // softmax_scale * log2(e)
  int q_vec16;         // q's rows start on 16-byte boundaries: cp.async, else 2-byte loads
  int out_vec16;       // out's rows start on 16-byte boundaries: 16-byte stores
  int out_vec4;        // ... on 4-byte boundaries: 4-byte stores, else 2-byte stores
  // Split over the keys (the kSplit kernel): a cluster of 2^split_log2 CTAs shares each work
  // item's key tiles and folds its partial results into rank 0 (kernel.cuh). 0: no split.
  int split_log2;
  // Seesaw kernel: bar.sync on both sides of each warpgroup hand-off instead of bar.arrive on
  // one (for compute-sanitizer racecheck, as the dense pair kernel's switch).
  int sync_handoffs;
};

// Shared memory, in bytes from a 1024-aligned base (swizzle atoms must be 1024-aligned):
//   q      [kQAtoms][64 rows][128 B]       the Q tile, 128-byte swizzled per 64-dim column
//   k[s]   [kQAtoms][64 keys][128 B]       KV tile stage s (V = its first 8 atom columns)
//   p      [64 rows][64 keys] bf16         P, one swizzle atom column (A operand of P V)
//   row_max[2][64], row_sum[2][64] float  per-warpgroup row statistics
//   bias[s][64] float                      0 for a valid key of stage s, -inf for an invalid one
//   full[s], empty[s] (producer kernel)    mbarriers of stage s
// Split kernel: once its CTAs have left the key loop, the Q and KV stage region holds a peer's
// partial result for the fold: o [32][256 threads] float4 (each thread's 128 accumulators), then
// stats [256 threads] float4 {m0, m1, l0, l1}.
template <int kDqk>
struct SmemPlan {
  static constexpr int kQAtoms = kDqk / kAtomDims;
  static constexpr int kTileBytes = kQAtoms * kAtomBytes;
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kTileBytes;
  static constexpr int kP = kK + kKvStages * kTileBytes;
  static constexpr int kRowMax = kP + kAtomBytes;
  static constexpr int kRowSum = kRowMax + kWarpgroups * kRowsPerTile * 4;
  static constexpr int kBias = kRowSum + kWarpgroups * kRowsPerTile * 4;
  static constexpr int kEnd = kBias + kKvStages * kTokensPerTile * 4;
  static constexpr int kBytes = kEnd + 1024;  // slack to align the dynamic base to 1024
  // Producer kernel: the stages' "full" (producer -> consumers) and "empty" (consumers ->
  // producer) mbarriers after the rest.
  static constexpr int kFull = kEnd;
  static constexpr int kEmpty = kFull + kKvStages * 8;
  static constexpr int kBytesWithProducer = kEmpty + kKvStages * 8 + 1024;
  static_assert(kBytesWithProducer <= 227 * 1024, "the producer kernel's plan exceeds 227 KB");
  static constexpr int kFoldO = 0;
  static constexpr int kFoldStats = kFoldO + kThreads * 128 * 4;
  static constexpr int kFoldEnd = kFoldStats + kThreads * 16;
  static_assert(kFoldEnd <= kP, "a peer's partial result must fit in the Q and KV stages");
  static_assert(kDqk % kAtomDims == 0, "d_qk must be whole 64-dim atom columns");
  static_assert(kDqk >= kDimV, "V is the first 512 dims of K");
  static_assert(kBytes <= 227 * 1024, "shared memory plan exceeds the sm_90 per-block limit");
};

}  // namespace flashmla::cuda::sparse
