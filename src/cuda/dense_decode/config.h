// Named constants of the sm_90a dense decode kernels (tile sizes, thread roles, barrier ids).
// docs/dense-decode-design.md explains the choices.
#pragma once

#include "core/decode_schedule.h"

namespace flashmla::cuda::mla_decode {

// A CTA owns one (part, kv head, q-row tile). Rows of a kv head are its s_q * (h_q / h_kv)
// queries, row = i * group + local head (s_q folded into M, as FlashMLA does).
inline constexpr int kRowsPerTile = 64;                       // wgmma M
inline constexpr int kTokensPerTile = sched::kTileTokens;     // keys per KV tile (= 64)
inline constexpr int kDimV = 512;                             // d_v, the first 512 dims of K
inline constexpr int kAtomDims = 64;                          // 128-byte swizzle atom: 64 x 16-bit
inline constexpr int kAtomBytes = kRowsPerTile * 128;         // one 64-row x 64-dim atom column
inline constexpr int kChunkElems = 8;                         // 16-byte copy = 8 x 16-bit
inline constexpr int kChunksPerAtomRow = 128 / 16;

// Two consumer warpgroups. Each computes half of S's key columns (64 x 32) and owns half of
// O's columns (64 x 256 fp32 = 128 registers per thread).
// The pair kernel's "V box" form: each V half copied as one 5-D box of kVBoxAtoms atom columns
// through `vmap`, completing on the half's first barrier (3 copies per block instead of 9; S
// waits once per V half). It pays where more than two q-tile CTAs share every KV block (s_q >= 2
// at 128 heads: D4, L5) and costs where two do (D1, L1; sessions 19-20, H200, same runs: D4
// -1.3 / -1.4 %, L5 -1.2 / -1.0 %, D1 +0.3 / +1.2 %, D3 +0.2 / 0 %), so it is chosen per launch
// from the q-tile count (FLASHMLA_DENSE_DECODE_VBOX=0/1 overrides, for A/B timing and tests).
inline constexpr int kVBoxAtoms = 4;
inline constexpr int kVBoxMinQTiles = 3;
inline constexpr int kWarpgroups = 2;
inline constexpr int kThreads = kWarpgroups * 128;
inline constexpr int kTokensPerWarpgroup = kTokensPerTile / kWarpgroups;  // 32 = wgmma N of S
inline constexpr int kDimVPerWarpgroup = kDimV / kWarpgroups;             // 256 = wgmma N of PV
inline constexpr int kKvStages = 2;

// Named barriers (0 is __syncthreads).
inline constexpr int kBarRowMax = 1;   // both warpgroups published their row maxima
inline constexpr int kBarP = 2;        // both halves of P are in shared memory

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

// Combine: one warp per (request, query, head) row; each lane owns kDimV / 32 columns.
inline constexpr int kCombineWarpsPerBlock = 8;
// The combine grid: one warp per item, at most this many waves of resident blocks (combine.cu).
inline constexpr int kCombineMaxWaves = 4;
// The combine's two shapes (combine.cu): a lane's partial float4s in flight at once (a batch of
// slots) and the blocks per SM it is compiled for (__launch_bounds__), without spills:
// - whole rows (many rows of few slots: L3, L4, D3): 4 float4s (one slot) at <= 64 registers,
//   4 x 8 warps per SM, so more rows are merged in one pass of the resident warps (session 18,
//   against 8 float4s at 3 blocks: L3 -4 %, L4 -0.4 to -0.8 %, D3's tail -1.3 µs);
// - quarter rows (few rows of many slots: L1, L2, L6): 8 float4s (eight slots) at <= 80
//   registers, 3 x 8 warps (with 4 in flight: L6 +2.4 µs, L2 +0.8 µs).
#ifndef FLASHMLA_COMBINE_ROWS_F4
#define FLASHMLA_COMBINE_ROWS_F4 4
#endif
#ifndef FLASHMLA_COMBINE_ROWS_BLOCKS
#define FLASHMLA_COMBINE_ROWS_BLOCKS 4
#endif
inline constexpr int kCombineRowsF4InFlight = FLASHMLA_COMBINE_ROWS_F4;
inline constexpr int kCombineRowsMinBlocksPerSm = FLASHMLA_COMBINE_ROWS_BLOCKS;
inline constexpr int kCombineQuartersF4InFlight = 8;
inline constexpr int kCombineQuartersMinBlocksPerSm = 3;
// Plan: threads that gather cache_seqlens into shared memory before one thread builds.
inline constexpr int kPlanThreads = 256;
inline constexpr int kPlanMaxBatch = 48 * 1024;  // int32 lengths in <= 192 KB of shared memory

static_assert(kTokensPerTile == 64, "the P tile is one 128-byte swizzle atom wide");
static_assert(kDimV % (kWarpgroups * kAtomDims) == 0, "V halves must be whole atom columns");

}  // namespace flashmla::cuda::mla_decode
