// One token of an FP8 KV cache (SPEC.md §3, byte layouts in flashmla/kv_layout.h): where it
// lives, how to decode it to float32 and how to encode a bf16 token into it.
//
// Every rounding step is one of fp8.h's scalar codecs, so the bytes written here are the bytes
// the CUDA codec writes. Decoding is exact: an e4m3 value times a power-of-two scale is the
// bf16 value FlashMLA's dequantization produces, so the attention kernels can work on these
// floats directly.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>

#include "flashmla/fp8.h"
#include "flashmla/kv_layout.h"

namespace flashmla::cpu {

// One scope of an FP8 cache, as validate.cpp describes it.
struct FP8Cache {
  const uint8_t* data = nullptr;
  KVCacheLayout layout = KVCacheLayout::kV32;
  int64_t num_blocks = 0;
  int64_t page_block_size = 0;
  int64_t block_stride_bytes = 0;

  int64_t num_slots() const { return num_blocks * page_block_size; }
};

namespace detail {

// e4m3 byte -> float32, tabulated once from fp8.h's exact decoder (a gather beats the branches).
inline const float* e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v) t[v] = fp8::e4m3_to_float(static_cast<uint8_t>(v));
    return t;
  }();
  return table.data();
}

inline void decode_tile(const uint8_t* src, int n, float scale, const float* lut, float* dst) {
  for (int k = 0; k < n; ++k) dst[k] = lut[src[k]] * scale;
}

// Both layouts keep 64 bf16 RoPE values per token.
inline constexpr int kDimRope = v32::kDimRope;
static_assert(model1::kDimRope == kDimRope);

inline void decode_rope(const uint8_t* src, float* dst) {
  uint16_t bits[kDimRope];
  std::memcpy(bits, src, sizeof bits);
  for (int k = 0; k < kDimRope; ++k) dst[k] = fp8::bf16_to_float(bits[k]);
}

// Scale exponent of one bf16 tile. amax is taken on the bit patterns of |x|, which order like
// the values for non-negative floats and put NaN above +inf: a tile holding a NaN has a NaN
// amax (as torch.amax), which fp8.h maps to the floor scale.
inline int tile_exponent(const uint16_t* x, int n) {
  uint16_t amax = 0;
  for (int k = 0; k < n; ++k) {
    const uint16_t a = x[k] & 0x7FFFu;
    amax = a > amax ? a : amax;
  }
  return fp8::scale_exponent_for_amax(fp8::bf16_to_float(amax));
}

// x * 2^-e is exact (a power-of-two multiply), so float_to_e4m3 does the only rounding.
inline void encode_tile(const uint16_t* x, int n, int e, uint8_t* dst) {
  const float inv_scale = fp8::exp2_int(-e);
  for (int k = 0; k < n; ++k) dst[k] = fp8::float_to_e4m3(fp8::bf16_to_float(x[k]) * inv_scale);
}

}  // namespace detail

// ---- V3.2: one 656-byte token ---------------------------------------------------------------

inline void decode_v32_token(const uint8_t* token, float* out /* [576] */) {
  const float* lut = detail::e4m3_table();
  for (int t = 0; t < v32::kNumTiles; ++t) {
    float scale;
    std::memcpy(&scale, token + v32::kScaleOffset + t * sizeof(float), sizeof scale);
    detail::decode_tile(token + v32::kNopeOffset + t * v32::kTile, v32::kTile, scale, lut,
                        out + t * v32::kTile);
  }
  detail::decode_rope(token + v32::kRopeOffset, out + v32::kDimNope);
}

inline void encode_v32_token(const uint16_t* x /* [576] bf16 */, uint8_t* token) {
  for (int t = 0; t < v32::kNumTiles; ++t) {
    const int e = detail::tile_exponent(x + t * v32::kTile, v32::kTile);
    const float scale = fp8::exp2_int(e);
    std::memcpy(token + v32::kScaleOffset + t * sizeof(float), &scale, sizeof scale);
    detail::encode_tile(x + t * v32::kTile, v32::kTile, e, token + v32::kNopeOffset + t * v32::kTile);
  }
  std::memcpy(token + v32::kRopeOffset, x + v32::kDimNope, v32::kDimRope * sizeof(uint16_t));
}

// ---- MODEL1: 576 data bytes in the token area, 8 scale bytes in the block's scale area -------

inline void decode_model1_token(const uint8_t* data, const uint8_t* scales, float* out /* [512] */) {
  const float* lut = detail::e4m3_table();
  for (int t = 0; t < model1::kNumTiles; ++t)
    detail::decode_tile(data + t * model1::kTile, model1::kTile, fp8::ue8m0_to_float(scales[t]),
                        lut, out + t * model1::kTile);
  detail::decode_rope(data + model1::kDimNope, out + model1::kDimNope);
}

inline void encode_model1_token(const uint16_t* x /* [512] bf16 */, uint8_t* data, uint8_t* scales) {
  for (int t = 0; t < model1::kNumTiles; ++t) {
    const int e = detail::tile_exponent(x + t * model1::kTile, model1::kTile);
    scales[t] = fp8::exponent_to_ue8m0(e);
    detail::encode_tile(x + t * model1::kTile, model1::kTile, e, data + t * model1::kTile);
  }
  scales[model1::kNumTiles] = 0;  // pad byte
  std::memcpy(data + model1::kDimNope, x + model1::kDimNope, model1::kDimRope * sizeof(uint16_t));
}

// ---- By page block and offset (either layout) -----------------------------------------------

// out: kv_layout_dim(layout) floats.
inline void decode_token(KVCacheLayout layout, const uint8_t* block, int64_t page_block_size,
                         int64_t offset, float* out) {
  if (layout == KVCacheLayout::kV32) {
    decode_v32_token(block + offset * v32::kBytesPerToken, out);
  } else {
    decode_model1_token(block + model1::token_data_offset(offset),
                        block + model1::token_scale_offset(page_block_size, offset), out);
  }
}

// x: kv_layout_dim(layout) bf16 values.
inline void encode_token(KVCacheLayout layout, const uint16_t* x, uint8_t* block,
                         int64_t page_block_size, int64_t offset) {
  if (layout == KVCacheLayout::kV32) {
    encode_v32_token(x, block + offset * v32::kBytesPerToken);
  } else {
    encode_model1_token(x, block + model1::token_data_offset(offset),
                        block + model1::token_scale_offset(page_block_size, offset));
  }
}

// Token at slot = block * page_block_size + offset; the caller has checked 0 <= slot < num_slots.
inline void decode_slot(const FP8Cache& cache, int64_t slot, float* out) {
  const int64_t block = slot / cache.page_block_size;
  const int64_t offset = slot - block * cache.page_block_size;
  decode_token(cache.layout, cache.data + block * cache.block_stride_bytes, cache.page_block_size,
               offset, out);
}

}  // namespace flashmla::cpu
