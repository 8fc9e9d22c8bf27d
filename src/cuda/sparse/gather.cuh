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
// A thread serves one part of one key (KeyLane; config.h): one index load per thread, the key's
// parts on neighbouring lanes. Stores go through a StageWriter, which in a crossover pair also
// writes the peer CTA's stage.
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

// The key of the stage a gathering thread serves (0..63) and which of its kTpk parts.
struct KeyLane {
  int key;
  int part;
};

// Stores a gathering thread's chunks and bias entries into this CTA's stage and, for a crossover
// pair (kPair), at the same offsets in the peer CTA's shared memory (distributed shared memory).
template <bool kPair>
struct StageWriter {
  uint32_t peer_delta;  // the peer's shared::cluster address of an offset minus this CTA's

  __device__ __forceinline__ void chunk(uint32_t addr, const uint4& v) const {
    sm90::st_shared_16(addr, v);
    if constexpr (kPair) sm90::st_cluster_16(addr + peer_delta, v);
  }
  __device__ __forceinline__ void bias(float* row, int key, float v) const {
    row[key] = v;
    if constexpr (kPair) sm90::st_cluster_f32(sm90::smem_addr(row + key) + peer_delta, v);
  }
};

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
  static constexpr int kThreadsPerKey = kThreadsPerKeySolo;
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
                                               KeyLane lane, uint32_t stage, float* bias,
                                               Regs& r) {
    const bool valid = index_valid(sc, idx);
    if (lane.part == 0) bias[lane.key] = valid ? 0.0f : -INFINITY;
    if constexpr (!kAligned) {
      r.src = valid ? reinterpret_cast<const uint16_t*>(key_row(sc, kvh, idx)) : nullptr;
      return;
    }
    const uint8_t* src = valid ? key_row(sc, kvh, idx) : sc.cache;  // 0 bytes read if invalid
#pragma unroll 6
    for (int k = 0; k < kChunksPerKey / kThreadsPerKey; ++k) {
      const int chunk = lane.part + k * kThreadsPerKey;  // a key's 4 lanes read 64 B side by side
      sm90::cp_async_16(stage + stage_offset(lane.key, chunk), valid ? src + chunk * 16 : src,
                        valid ? 16 : 0);
    }
  }

  template <class Writer>
  __device__ __forceinline__ static void finish(uint32_t stage, float*, const Regs& r,
                                                KeyLane lane, const Writer& w) {
    if constexpr (!kAligned) {
      for (int k = 0; k < kChunksPerKey / kThreadsPerKey; ++k) {
        const int chunk = lane.part + k * kThreadsPerKey;
        w.chunk(stage + stage_offset(lane.key, chunk),
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

// The end of an FP8 gatherer's finish(): this part's RoPE chunks (bf16 in the cache, stored as
// they are after the key's `dim_nope` NoPE values; zeros for an invalid key) and the bias entry.
template <int kTpk, int kRopeLoads, class Writer>
__device__ __forceinline__ void finish_rope_and_bias(uint32_t stage, float* bias,
                                                     const uint4 (&rope)[kRopeLoads], bool valid,
                                                     int dim_nope, KeyLane lane,
                                                     const Writer& w) {
#pragma unroll
  for (int k = 0; k < kRopeLoads; ++k) {
    const int chunk = dim_nope / kChunkElems + lane.part + kTpk * k;
    // (built as a value: selecting between the two lvalues put them on the stack)
    const uint4 v = valid ? make_uint4(rope[k].x, rope[k].y, rope[k].z, rope[k].w)
                          : make_uint4(0, 0, 0, 0);
    w.chunk(stage + stage_offset(lane.key, chunk), v);
  }
  if (lane.part == 0) w.bias(bias, lane.key, valid ? 0.0f : -INFINITY);
}

// ---- V3.2 FP8 keys (656 bytes: 512 e4m3 | 4 float scales | 64 bf16 RoPE) -------------------
// Part j of kTpk: NoPE 16-byte chunks j, j + kTpk, ... (a key's lanes read neighbouring bytes;
// load k lies in scale tile k * kTpk / 8 whatever j is, since kTpk divides the 8 chunks of a
// tile) and RoPE chunks j, j + kTpk, ...
template <Dequant kMode, int kTpk>
struct V32Gather {
  static constexpr int kThreadsPerKey = kTpk;
  static constexpr int kNopeLoads = v32::kDimNope / 16 / kTpk;     // 8 or 4
  static constexpr int kRopeLoads = v32::kDimRope * 2 / 16 / kTpk;  // 2 or 1
  static_assert(v32::kTile / 16 % kTpk == 0, "a scale tile's chunks split evenly");
  struct Regs {
    uint4 nope[kNopeLoads];
    uint4 rope[kRopeLoads];
    float4 scales;
    bool valid;
  };

  __device__ __forceinline__ static void begin(const Scope& sc, int, int32_t idx, KeyLane lane,
                                               uint32_t, float*, Regs& r) {
    r.valid = index_valid(sc, idx);
    if (r.valid) {
      uint32_t offset;
      const uint8_t* block = fp8_block(sc, idx, &offset);
      const uint8_t* tok = block + offset * v32::kBytesPerToken;
#pragma unroll
      for (int k = 0; k < kNopeLoads; ++k)
        r.nope[k] = load_nc16(tok + v32::kNopeOffset + 16 * (lane.part + kTpk * k));
      r.scales = __ldg(reinterpret_cast<const float4*>(tok + v32::kScaleOffset));
#pragma unroll
      for (int k = 0; k < kRopeLoads; ++k)
        r.rope[k] = load_nc16(tok + v32::kRopeOffset + 16 * (lane.part + kTpk * k));
    }
  }

  // Brings a key's 656 bytes (up to seven 128-byte lines) into L2 ahead of begin(): part j of 4
  // prefetches lines j and j + 4 from the token's start, part 2 its last byte's line too.
  __device__ __forceinline__ static void prefetch(const Scope& sc, int32_t idx, KeyLane lane) {
    static_assert(kTpk == 4, "written for four lanes a key");
    if (!index_valid(sc, idx)) return;
    uint32_t offset;
    const uint8_t* block = fp8_block(sc, idx, &offset);
    const uint8_t* tok = block + offset * v32::kBytesPerToken;
    sm90::prefetch_l2(tok + 128 * lane.part);
    if (lane.part < 2) sm90::prefetch_l2(tok + 128 * (lane.part + 4));
    if (lane.part == 2) sm90::prefetch_l2(tok + v32::kBytesPerToken - 1);
  }

  template <class Writer>
  __device__ __forceinline__ static void finish(uint32_t stage, float* bias, const Regs& r,
                                                KeyLane lane, const Writer& w) {
    const uint4 zero = make_uint4(0, 0, 0, 0);
    const float scale[4] = {r.scales.x, r.scales.y, r.scales.z, r.scales.w};
#pragma unroll
    for (int k = 0; k < kNopeLoads; ++k) {
      uint4 lo = zero, hi = zero;
      if (r.valid) dequant16<kMode>(r.nope[k], scale[k * kTpk * 16 / v32::kTile], lo, hi);
      const int chunk = 2 * (lane.part + kTpk * k);  // 16 e4m3 = two bf16 chunks
      w.chunk(stage + stage_offset(lane.key, chunk), lo);
      w.chunk(stage + stage_offset(lane.key, chunk + 1), hi);
    }
    finish_rope_and_bias<kTpk>(stage, bias, r.rope, r.valid, v32::kDimNope, lane, w);
  }
};

// ---- MODEL1 FP8 keys (per token 448 e4m3 | 64 bf16 RoPE; 7 UE8M0 scales in the block's scale
// area) ---------------------------------------------------------------------------------------
// Part j of kTpk: NoPE 16-byte chunks j, j + kTpk, ... below 28 (chunk c lies in scale tile
// c / 4) and RoPE chunks j, j + kTpk, ...
template <Dequant kMode, int kTpk>
struct Model1Gather {
  static constexpr int kThreadsPerKey = kTpk;
  static constexpr int kNopeChunks = model1::kDimNope / 16;                 // 28
  static constexpr int kNopeLoads = (kNopeChunks + kTpk - 1) / kTpk;        // 7 or 4
  static constexpr int kRopeLoads = model1::kDimRope * 2 / 16 / kTpk;       // 2 or 1
  struct Regs {
    uint4 nope[kNopeLoads];
    uint4 rope[kRopeLoads];
    uint2 scales;  // 7 UE8M0 bytes + pad
    bool valid;
  };

  // Whether load k of part j is a NoPE chunk (only the last load of 8-way parts can fall past).
  __device__ __forceinline__ static bool has_chunk(int part, int k) {
    return kNopeChunks % kTpk == 0 || k + 1 < kNopeLoads || part + kTpk * k < kNopeChunks;
  }

  __device__ __forceinline__ static void begin(const Scope& sc, int, int32_t idx, KeyLane lane,
                                               uint32_t, float*, Regs& r) {
    r.valid = index_valid(sc, idx);
    if (r.valid) {
      uint32_t offset;
      const uint8_t* block = fp8_block(sc, idx, &offset);
      const uint8_t* tok = block + model1::token_data_offset(offset);
#pragma unroll
      for (int k = 0; k < kNopeLoads; ++k)
        if (has_chunk(lane.part, k)) r.nope[k] = load_nc16(tok + 16 * (lane.part + kTpk * k));
#pragma unroll
      for (int k = 0; k < kRopeLoads; ++k)
        r.rope[k] = load_nc16(tok + model1::kDimNope + 16 * (lane.part + kTpk * k));
      r.scales = __ldg(reinterpret_cast<const uint2*>(
          block + model1::token_scale_offset(sc.page, offset)));
    }
  }

  // Brings a key's 576 data bytes (up to six 128-byte lines) and its scale bytes into L2 ahead
  // of begin(): part j of 4 prefetches data lines j and (part 0) 4, part 3 the last data byte's
  // line, part 1 the scales'.
  __device__ __forceinline__ static void prefetch(const Scope& sc, int32_t idx, KeyLane lane) {
    static_assert(kTpk == 4, "written for four lanes a key");
    if (!index_valid(sc, idx)) return;
    uint32_t offset;
    const uint8_t* block = fp8_block(sc, idx, &offset);
    const uint8_t* tok = block + model1::token_data_offset(offset);
    sm90::prefetch_l2(tok + 128 * lane.part);
    if (lane.part == 0) sm90::prefetch_l2(tok + 512);
    if (lane.part == 3) sm90::prefetch_l2(tok + model1::kTokenDataBytes - 1);
    if (lane.part == 1) sm90::prefetch_l2(block + model1::token_scale_offset(sc.page, offset));
  }

  template <class Writer>
  __device__ __forceinline__ static void finish(uint32_t stage, float* bias, const Regs& r,
                                                KeyLane lane, const Writer& w) {
    const uint4 zero = make_uint4(0, 0, 0, 0);
    const uint64_t scales = uint64_t{r.scales.x} | uint64_t{r.scales.y} << 32;
#pragma unroll
    for (int k = 0; k < kNopeLoads; ++k) {
      if (!has_chunk(lane.part, k)) continue;
      const int c = lane.part + kTpk * k;
      uint4 lo = zero, hi = zero;
      if (r.valid) {
        const int t = c / (model1::kTile / 16);  // the chunk's scale tile
        const float scale = fp8::ue8m0_to_float(static_cast<uint8_t>(scales >> (8 * t)));
        dequant16<kMode>(r.nope[k], scale, lo, hi);
      }
      w.chunk(stage + stage_offset(lane.key, 2 * c), lo);
      w.chunk(stage + stage_offset(lane.key, 2 * c + 1), hi);
    }
    finish_rope_and_bias<kTpk>(stage, bias, r.rope, r.valid, model1::kDimNope, lane, w);
  }
};

}  // namespace flashmla::cuda::sparse
