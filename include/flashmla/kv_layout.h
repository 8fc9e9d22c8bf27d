// Byte layouts of the FP8 KV caches (SPEC.md §3). Every number is named here once.
//
// V3.2 ("kV32"), d_qk = 576, 656 bytes per token, tokens contiguous inside a page block:
//   [0, 512)    512 e4m3 NoPE values
//   [512, 528)  4 float32 scales, scale t covers NoPE elements [128t, 128t + 128)
//   [528, 656)  64 bf16 RoPE values
//   The block stride (bytes between page blocks) may exceed page_block_size * 656; it must be a
//   multiple of 16 bytes (FlashMLA's allocations are), so GPU kernels can use 16-byte accesses.
//
// MODEL1 ("kModel1"), d_qk = 512 (448 NoPE + 64 RoPE), per page block:
//   [0, pbs * 576)              per token: 448 e4m3 NoPE values, then 64 bf16 RoPE values
//   [pbs * 576, pbs * 584)      per token: 7 UE8M0 scale bytes (one per 64 NoPE values) + 1 pad
//   block padded to a multiple of 576 bytes (any block stride >= pbs * 584 that is a multiple of
//   16 bytes is accepted).
//   The tensor handed over is FlashMLA's nominal view [num_blocks, pbs, 1, 584] (strides
//   [block_stride, 584, 584, 1]); only its data pointer, num_blocks, pbs and block stride matter.
#pragma once

#include <cstdint>

namespace flashmla {

enum class KVCacheLayout : uint8_t { kV32, kModel1 };

const char* kv_layout_name(KVCacheLayout layout);

namespace v32 {
inline constexpr int kDimQK = 576;
inline constexpr int kDimNope = 512;
inline constexpr int kDimRope = 64;
inline constexpr int kTile = 128;  // NoPE elements per scale
inline constexpr int kNumTiles = kDimNope / kTile;
inline constexpr int kNopeOffset = 0;
inline constexpr int kScaleOffset = kDimNope;                       // 4 x float32
inline constexpr int kRopeOffset = kScaleOffset + kNumTiles * 4;    // 64 x bf16
inline constexpr int kBytesPerToken = kRopeOffset + kDimRope * 2;
static_assert(kBytesPerToken == 656);
}  // namespace v32

namespace model1 {
inline constexpr int kDimQK = 512;
inline constexpr int kDimNope = 448;
inline constexpr int kDimRope = 64;
inline constexpr int kTile = 64;  // NoPE elements per scale
inline constexpr int kNumTiles = kDimNope / kTile;
inline constexpr int kTokenDataBytes = kDimNope + kDimRope * 2;  // e4m3 NoPE + bf16 RoPE
inline constexpr int kScaleBytesPerToken = 8;                    // 7 UE8M0 + 1 pad
inline constexpr int kNominalBytesPerToken = kTokenDataBytes + kScaleBytesPerToken;
inline constexpr int kBlockAlign = 576;
static_assert(kNumTiles == 7 && kTokenDataBytes == 576 && kNominalBytesPerToken == 584);

// Offsets inside one page block of `page_block_size` tokens.
constexpr int64_t token_data_offset(int64_t token) { return token * kTokenDataBytes; }
constexpr int64_t token_scale_offset(int64_t page_block_size, int64_t token) {
  return page_block_size * kTokenDataBytes + token * kScaleBytesPerToken;
}
// Smallest block stride FlashMLA's allocator produces (bytes).
constexpr int64_t min_block_bytes(int64_t page_block_size) {
  return (page_block_size * kNominalBytesPerToken + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
}
}  // namespace model1

// Head dim of the dequantized cache for a layout.
constexpr int kv_layout_dim(KVCacheLayout layout) {
  return layout == KVCacheLayout::kV32 ? v32::kDimQK : model1::kDimQK;
}
// Last dim of the uint8 cache view for a layout.
constexpr int kv_layout_token_bytes(KVCacheLayout layout) {
  return layout == KVCacheLayout::kV32 ? v32::kBytesPerToken : model1::kNominalBytesPerToken;
}

}  // namespace flashmla
