// Launch shape of the FP8 KV-cache codec kernels (kv_codec.cu). With table lookups for the
// e4m3 codecs the kernels are memory-bound; these constants keep enough loads in flight.
// Measured on H100 (bench/cuda/bench_kv_codec.cu, 655360 tokens, page 64): 85-89 % of the
// device-to-device copy bandwidth in all four cases.
#pragma once

#include "flashmla/kv_layout.h"

namespace flashmla::cuda::kv_codec {

inline constexpr int kWarpSize = 32;
inline constexpr unsigned kFullMask = 0xFFFFFFFFu;

// One warp per token at a time, with the next token's loads in flight; 8 warps per CTA.
inline constexpr int kWarpsPerCta = 8;
inline constexpr int kThreadsPerCta = kWarpsPerCta * kWarpSize;
// Persistent grid: this many resident CTAs per SM loop over the tokens, so each CTA fills its
// lookup table once. __launch_bounds__ enforces the count by capping registers at
// 65536 / (CTAs * 256): 64 for the quantizer (it holds two tokens of bf16 loads), 48 for the
// dequantizer. Higher counts (fewer registers) spill.
inline constexpr int kQuantizeCtasPerSm = 4;
inline constexpr int kDequantizeCtasPerSm = 5;

// A "chunk" is what one lane handles in one access: 8 consecutive elements of a token, i.e.
// 16 bytes of bf16 and 8 bytes of e4m3.
inline constexpr int kBf16Bytes = 2;
inline constexpr int kChunkElems = 8;
inline constexpr int kChunkBf16Bytes = kChunkElems * kBf16Bytes;
inline constexpr int kChunkFp8Bytes = kChunkElems;
inline constexpr int kRopeChunks = v32::kDimRope / kChunkElems;  // lanes 0..7 copy the RoPE part
static_assert(v32::kDimRope == model1::kDimRope && kRopeChunks <= kWarpSize);

// Widest access: 16 bytes (LDG.128 / STG.128).
inline constexpr int kMaxAccessBytes = 16;

}  // namespace flashmla::cuda::kv_codec
