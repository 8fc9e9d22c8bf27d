// The MHA prefill kernels' 16-byte cp.async copies into 128-byte-swizzled atom columns (the
// offsets are tiling.h's, checked on the CPU). Rows past a sequence are zero-filled, never read:
// the NaN garbage a caller may keep there cannot reach a product.
#pragma once

#include <cstdint>

#include "cuda/common/sm90_ptx.cuh"
#include "cuda/mha_prefill/config.h"
#include "cuda/mha_prefill/tiling.h"

namespace flashmla::cuda::mha {

// Where rows of a [tokens, heads, kD] tensor are.
struct RowSource {
  const uint16_t* base;
  int64_t stride_tok, stride_head;
};

// Where chunk `chunk` of row rr of a (sequence, kv head) starts -- row rr is token rr / group,
// head kv_head * group + rr % group -- or null for rr >= rows (past the sequence).
__device__ __forceinline__ const uint16_t* row_chunk(const RowSource& x, int64_t tok0, int rows,
                                                     int rr, int kvh, int group, int chunk) {
  if (rr >= rows) return nullptr;
  const int i = rr / group;
  return x.base + (tok0 + i) * x.stride_tok + (kvh * group + rr - i * group) * x.stride_head +
         chunk * 8;
}

// Rows [row0, row0 + 128) of a (sequence, kv head) into per-warpgroup regions ([kD / 64 atoms]
// [64 rows x 128 B] each, q_copy_offset's layout); rows >= rows zero-filled.
template <int kD>
__device__ __forceinline__ void load_rows128(const RowSource& x, int64_t tok0, int rows,
                                             int row0, int kvh, int group, uint32_t addr,
                                             const CopySlot& cs) {
#pragma unroll
  for (int n = 0; n < kPasses; ++n) {
    const uint16_t* src = row_chunk(x, tok0, rows, row0 + cs.row_of(n), kvh, group, cs.chunk);
#pragma unroll
    for (int a = 0; a < kD / kAtomDims; ++a)
      sm90::cp_async_16(addr + q_copy_offset<kD>(cs, n, a), src ? src + a * kAtomDims : x.base,
                        src ? 16 : 0);
  }
}

// Rows [row0, row0 + 32) likewise into one tile of atom columns of 32 rows (4 KB each).
template <int kD>
__device__ __forceinline__ void load_rows32(const RowSource& x, int64_t tok0, int rows, int row0,
                                            int kvh, int group, uint32_t addr,
                                            const CopySlot& cs) {
  const uint16_t* src = row_chunk(x, tok0, rows, row0 + cs.row, kvh, group, cs.chunk);
#pragma unroll
  for (int a = 0; a < kD / kAtomDims; ++a)
    sm90::cp_async_16(addr + tile_copy_offset(cs, 0, a, kRowsPerPass * 128),
                      src ? src + a * kAtomDims : x.base, src ? 16 : 0);
}

// Keys (consecutive tokens tok0 + j of kv head kvh, valid for j < n_valid), kPassesN x 32 of
// them: into per-warpgroup regions (kWgSplit: 128 keys, q_copy_offset's layout) or into one
// tile of atom columns of kPassesN x 32 rows.
template <int kD, int kPassesN, bool kWgSplit>
__device__ __forceinline__ void load_keys(const RowSource& x, int64_t tok0, int n_valid, int kvh,
                                          uint32_t addr, const CopySlot& cs) {
  const uint16_t* src0 = x.base + (tok0 + cs.row) * x.stride_tok + kvh * x.stride_head + cs.chunk * 8;
#pragma unroll
  for (int n = 0; n < kPassesN; ++n) {
    const bool ok = cs.row_of(n) < n_valid;
    const uint16_t* src = src0 + kRowsPerPass * n * x.stride_tok;
#pragma unroll
    for (int a = 0; a < kD / kAtomDims; ++a) {
      const uint32_t off = kWgSplit ? q_copy_offset<kD>(cs, n, a)
                                    : tile_copy_offset(cs, n, a, kPassesN * kRowsPerPass * 128);
      sm90::cp_async_16(addr + off, ok ? src + a * kAtomDims : x.base, ok ? 16 : 0);
    }
  }
}

}  // namespace flashmla::cuda::mha
