// Loads and stores of a few bytes of global memory to and from 32-bit register words (little
// endian, as in memory), using the widest access that the guaranteed alignment allows.
// kAlign is a power of two that divides the address; narrower alignment means more, smaller
// accesses of the same bytes.
#pragma once

#include <cstdint>

#include "cuda/kv_codec/config.h"

namespace flashmla::cuda::kv_codec {

template <int kBytes, int kAlign>
struct ByteAccess {
  static constexpr int kWords = (kBytes + 3) / 4;
  // Bytes per memory instruction.
  static constexpr int kWidth =
      kAlign < kBytes ? (kAlign < kMaxAccessBytes ? kAlign : kMaxAccessBytes)
                      : (kBytes < kMaxAccessBytes ? kBytes : kMaxAccessBytes);
  static_assert((kAlign & (kAlign - 1)) == 0 && (kBytes & (kBytes - 1)) == 0,
                "alignment and size must be powers of two");
  static_assert(kBytes % kWidth == 0);

  __device__ __forceinline__ static void load(const uint8_t* p, uint32_t (&w)[kWords]) {
#pragma unroll
    for (int i = 0; i < kBytes / kWidth; ++i) {
      if constexpr (kWidth == 16) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i);
        w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
      } else if constexpr (kWidth == 8) {
        const uint2 v = __ldg(reinterpret_cast<const uint2*>(p) + i);
        w[2 * i] = v.x, w[2 * i + 1] = v.y;
      } else if constexpr (kWidth == 4) {
        w[i] = __ldg(reinterpret_cast<const unsigned*>(p) + i);
      } else {
        const uint32_t v = kWidth == 2 ? __ldg(reinterpret_cast<const unsigned short*>(p) + i)
                                       : __ldg(p + i);
        const int shift = 8 * (i * kWidth % 4);
        w[i * kWidth / 4] = (shift == 0 ? 0u : w[i * kWidth / 4]) | (v << shift);
      }
    }
  }

  __device__ __forceinline__ static void store(uint8_t* p, const uint32_t (&w)[kWords]) {
#pragma unroll
    for (int i = 0; i < kBytes / kWidth; ++i) {
      if constexpr (kWidth == 16) {
        reinterpret_cast<uint4*>(p)[i] =
            make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
      } else if constexpr (kWidth == 8) {
        reinterpret_cast<uint2*>(p)[i] = make_uint2(w[2 * i], w[2 * i + 1]);
      } else if constexpr (kWidth == 4) {
        reinterpret_cast<uint32_t*>(p)[i] = w[i];
      } else {
        const uint32_t v = w[i * kWidth / 4] >> (8 * (i * kWidth % 4));
        if constexpr (kWidth == 2) reinterpret_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(v);
        else p[i] = static_cast<uint8_t>(v);
      }
    }
  }
};

}  // namespace flashmla::cuda::kv_codec
