// The key gatherers of the sparse kernels: each fills one KV stage (kQAtoms atom columns of 64
// keys, 128-byte swizzled bf16, the layout wgmma reads) with the tile's selected keys, and the
// stage's bias row (0 for a valid key, -inf for an invalid or missing one, whose row is zeros so
// that P V never multiplies garbage).
//
// Every gatherer has two steps, so that a tile's global loads are in flight while the previous
// tile is computed:
//   begin(...)  issues the loads of tile it + 1 (cp.async straight into the stage, or into
//               registers for FP8 keys, which must be converted first);
//   finish(...) completes the stage (FP8: dequantize the registers and store them), after the
//               stage's previous readers are done.
// Thread t serves key t / 4, quarter t % 4 of its bytes (config.h, kThreadsPerKey): one index
// load per thread, four neighbouring lanes on one key's bytes.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common/sm90_ptx.cuh"
#include "cuda/sparse/config.h"
#include "cuda/sparse/dequant.cuh"
#include "cuda/sparse/params.h"
#include "flashmla/fp8.h"
#include "flashmla/kv_layout.h"

namespace flashmla::cuda::sparse {

// Byte offset of 16-byte chunk `chunk` of key (row) `key` in a stage: atom column chunk / 8.
__device__ __forceinline__ uint32_t stage_offset(int key, int chunk) {
  return (chunk / kChunksPerAtomRow) * kAtomBytes +
         sm90::swizzle128_offset(key, chunk % kChunksPerAtomRow);
}

__device__ __forceinline__ bool index_valid(const Scope& sc, int32_t idx) {
  return idx >= 0 && idx < sc.num_slots;
}

// 8 bf16 from a 2-byte aligned address (rows of strided views), as one 16-byte chunk.
__device__ __forceinline__ uint4 load_unaligned16(const uint16_t* p) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
    w[i] = uint32_t{__ldg(p + 2 * i)} | uint32_t{__ldg(p + 2 * i + 1)} << 16;
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// ---- bf16 keys (sparse prefill) ---------------------------------------------------------------
// kAligned (kv rows on 16-byte boundaries, the normal case): cp.async straight into the stage in
// begin(). Otherwise (a strided view): 2-byte loads and shared-memory stores in finish(), not
// overlapped with the previous tile, correct but slow.
template <int kDqk, bool kAligned = true>
struct Bf16Gather {
  static constexpr int kChunksPerKey = kDqk / kChunkElems;  // 72 or 64
  static_assert(kChunksPerKey % kThreadsPerKey == 0, "a key's chunks split evenly");
  struct Regs {
    const uint16_t* src;  // the key's row (unaligned path), null when invalid
  };

  __device__ __forceinline__ static const uint8_t* key_row(const Scope& sc, int kvh,
                                                           int32_t idx) {
    return sc.cache + idx * sc.key_stride + kvh * sc.kvh_stride;
  }

  __device__ __forceinline__ static void begin(const Scope& sc, int kvh, int32_t idx,
                                               uint32_t stage, float* bias, Regs& r) {
    const int key = threadIdx.x / kThreadsPerKey;
    const int quarter = threadIdx.x % kThreadsPerKey;
    const bool valid = index_valid(sc, idx);
    if (quarter == 0) bias[key] = valid ? 0.0f : -INFINITY;
    if constexpr (!kAligned) {
      r.src = valid ? reinterpret_cast<const uint16_t*>(key_row(sc, kvh, idx)) : nullptr;
      return;
    }
    const uint8_t* src = valid ? key_row(sc, kvh, idx) : sc.cache;  // 0 bytes read if invalid
#pragma unroll 6
    for (int k = 0; k < kChunksPerKey / kThreadsPerKey; ++k) {
      const int chunk = quarter + k * kThreadsPerKey;  // the key's 4 lanes read 64 B side by side
      sm90::cp_async_16(stage + stage_offset(key, chunk), valid ? src + chunk * 16 : src,
                        valid ? 16 : 0);
    }
  }

  __device__ __forceinline__ static void finish(uint32_t stage, float*, const Regs& r) {
    if constexpr (!kAligned) {
      const int key = threadIdx.x / kThreadsPerKey;
      const int quarter = threadIdx.x % kThreadsPerKey;
      for (int k = 0; k < kChunksPerKey / kThreadsPerKey; ++k) {
        const int chunk = quarter + k * kThreadsPerKey;
        sm90::st_shared_16(stage + stage_offset(key, chunk),
                           r.src != nullptr ? load_unaligned16(r.src + chunk * kChunkElems)
                                            : make_uint4(0, 0, 0, 0));
      }
    }
  }
};

__device__ __forceinline__ uint4 load_nc16(const uint8_t* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// Where slot `idx` of an FP8 scope's page blocks starts (the caller checked the index).
__device__ __forceinline__ const uint8_t* fp8_block(const Scope& sc, int32_t idx,
                                                    uint32_t* offset) {
  const uint32_t block = sc.page_div.div(static_cast<uint32_t>(idx));
  *offset = static_cast<uint32_t>(idx) - block * static_cast<uint32_t>(sc.page);
  return sc.cache + static_cast<int64_t>(block) * sc.block_stride;
}

// ---- V3.2 FP8 keys (656 bytes: 512 e4m3 | 4 float scales | 64 bf16 RoPE) -------------------
// Quarter j of a key: NoPE bytes [128 j, 128 j + 128) (exactly scale tile j) and RoPE values
// [16 j, 16 j + 16).
template <Dequant kMode>
struct V32Gather {
  static constexpr int kNopeLoads = v32::kTile / 16;  // 8 x 16 bytes
  struct Regs {
    uint4 nope[kNopeLoads];
    uint4 rope[2];
    float scale;
    bool valid;
  };

  __device__ __forceinline__ static void begin(const Scope& sc, int, int32_t idx, uint32_t,
                                               float*, Regs& r) {
    const int quarter = threadIdx.x % kThreadsPerKey;
    r.valid = index_valid(sc, idx);
    if (r.valid) {
      uint32_t offset;
      const uint8_t* block = fp8_block(sc, idx, &offset);
      const uint8_t* tok = block + offset * v32::kBytesPerToken;
#pragma unroll
      for (int k = 0; k < kNopeLoads; ++k)
        r.nope[k] = load_nc16(tok + v32::kNopeOffset + quarter * v32::kTile + 16 * k);
      r.scale = __ldg(reinterpret_cast<const float*>(tok + v32::kScaleOffset) + quarter);
#pragma unroll
      for (int k = 0; k < 2; ++k)
        r.rope[k] = load_nc16(tok + v32::kRopeOffset + quarter * 32 + 16 * k);
    }
  }

  __device__ __forceinline__ static void finish(uint32_t stage, float* bias, const Regs& r) {
    const int key = threadIdx.x / kThreadsPerKey;
    const int quarter = threadIdx.x % kThreadsPerKey;
    const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int k = 0; k < kNopeLoads; ++k) {
      uint4 lo = zero, hi = zero;
      if (r.valid) dequant16<kMode>(r.nope[k], r.scale, lo, hi);
      const int chunk = quarter * (v32::kTile / kChunkElems) + 2 * k;  // 16 chunks per quarter
      sm90::st_shared_16(stage + stage_offset(key, chunk), lo);
      sm90::st_shared_16(stage + stage_offset(key, chunk + 1), hi);
    }
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int chunk = v32::kDimNope / kChunkElems + 2 * quarter + k;
      sm90::st_shared_16(stage + stage_offset(key, chunk), r.valid ? r.rope[k] : zero);
    }
    if (quarter == 0) bias[key] = r.valid ? 0.0f : -INFINITY;
  }
};

// ---- MODEL1 FP8 keys (per token 448 e4m3 | 64 bf16 RoPE; 7 UE8M0 scales in the block's scale
// area) ---------------------------------------------------------------------------------------
// Quarter j of a key: NoPE 16-byte chunks j, j + 4, ..., j + 24 (chunk c lies in scale tile
// c / 4, so load k of every quarter is in tile k) and RoPE chunks 2 j, 2 j + 1.
template <Dequant kMode>
struct Model1Gather {
  static constexpr int kNopeLoads = model1::kDimNope / 16 / kThreadsPerKey;  // 7
  struct Regs {
    uint4 nope[kNopeLoads];
    uint4 rope[2];
    uint2 scales;  // 7 UE8M0 bytes + pad
    bool valid;
  };

  __device__ __forceinline__ static void begin(const Scope& sc, int, int32_t idx, uint32_t,
                                               float*, Regs& r) {
    const int quarter = threadIdx.x % kThreadsPerKey;
    r.valid = index_valid(sc, idx);
    if (r.valid) {
      uint32_t offset;
      const uint8_t* block = fp8_block(sc, idx, &offset);
      const uint8_t* tok = block + model1::token_data_offset(offset);
#pragma unroll
      for (int k = 0; k < kNopeLoads; ++k)
        r.nope[k] = load_nc16(tok + 16 * (quarter + kThreadsPerKey * k));
#pragma unroll
      for (int k = 0; k < 2; ++k)
        r.rope[k] = load_nc16(tok + model1::kDimNope + 32 * quarter + 16 * k);
      r.scales = __ldg(reinterpret_cast<const uint2*>(
          block + model1::token_scale_offset(sc.page, offset)));
    }
  }

  __device__ __forceinline__ static void finish(uint32_t stage, float* bias, const Regs& r) {
    const int key = threadIdx.x / kThreadsPerKey;
    const int quarter = threadIdx.x % kThreadsPerKey;
    const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int k = 0; k < kNopeLoads; ++k) {
      uint4 lo = zero, hi = zero;
      if (r.valid) {
        const uint32_t word = k < 4 ? r.scales.x : r.scales.y;
        const float scale = fp8::ue8m0_to_float(static_cast<uint8_t>(word >> (8 * (k % 4))));
        dequant16<kMode>(r.nope[k], scale, lo, hi);
      }
      const int chunk = 2 * (quarter + kThreadsPerKey * k);  // 16 e4m3 = two bf16 chunks
      sm90::st_shared_16(stage + stage_offset(key, chunk), lo);
      sm90::st_shared_16(stage + stage_offset(key, chunk + 1), hi);
    }
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int chunk = model1::kDimNope / kChunkElems + 2 * quarter + k;
      sm90::st_shared_16(stage + stage_offset(key, chunk), r.valid ? r.rope[k] : zero);
    }
    if (quarter == 0) bias[key] = r.valid ? 0.0f : -INFINITY;
  }
};

}  // namespace flashmla::cuda::sparse
