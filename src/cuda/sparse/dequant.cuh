// FP8 (e4m3) -> bf16 dequantization of 16 values at a time, times a tile scale: what the sparse
// decode gatherers (gather.cuh) do to every selected key. Two ways, chosen per launch (Dequant):
//
// kCvt: the hardware pair conversion e4m3x2 -> f16x2 (exact), f16 -> f32 (exact), one float
//   multiply by the scale, one rounding to bf16. Exact for the power-of-two scales both FP8
//   layouts use, and the reference for the other way. Its conversion instructions run at a
//   fraction of the ALU rate (KERNEL-NOTES.md: dequantization bounds FlashMLA's sparse decode).
// kBits: integer ops only, then packed bf16 multiplies. An e4m3 code s.eeee.mmm placed as the bf16
//   bit pattern s.0000eeee.mmm0000 is worth exactly 2^-120 times the e4m3 value, also for e4m3
//   subnormals (they land on bf16 subnormals of the same significand), so two exact bf16x2
//   multiplies, by 2^120 and by the scale, give the dequantized value. Valid when the scale is a
//   power of two (its bf16 is exact) and no code is NaN (0x7F / 0xFF would read as 480): the
//   16-value chunks where either fails take the kCvt way.
// tests/gpu/test_fp8_dequant_gpu.cu checks both against fp8.h on every code and a range of scales.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace flashmla::cuda::sparse {

enum class Dequant { kCvt, kBits };

__device__ __forceinline__ void dequant16_cvt(const uint4& v, float scale, uint4& lo, uint4& hi) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  uint32_t r[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(
          static_cast<__nv_fp8x2_storage_t>(w[i] >> (16 * half)), __NV_E4M3);
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
      const __nv_bfloat162 b = __floats2bfloat162_rn(f.x * scale, f.y * scale);
      r[2 * i + half] = *reinterpret_cast<const uint32_t*>(&b);
    }
  }
  lo = make_uint4(r[0], r[1], r[2], r[3]);
  hi = make_uint4(r[4], r[5], r[6], r[7]);
}

// Two e4m3 codes (bytes 0 and 2 of y, the others zero) -> their bf16 bit patterns times 2^-120.
__device__ __forceinline__ uint32_t e4m3x2_bits(uint32_t y) {
  return ((y & 0x00800080u) << 8) | ((y & 0x007F007Fu) << 4);
}

__device__ __forceinline__ uint32_t mul_bf16x2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// True when any of the 16 codes is NaN (magnitude 0x7F: adding 1 carries into bit 7).
__device__ __forceinline__ bool any_e4m3_nan(const uint4& v) {
  const uint32_t m = 0x7F7F7F7Fu, one = 0x01010101u, top = 0x80808080u;
  return ((((v.x & m) + one) | ((v.y & m) + one) | ((v.z & m) + one) | ((v.w & m) + one)) &
          top) != 0;
}

// kBits with the scale as a duplicated bf16x2 (scale2); the caller checked that the scale is a
// power of two and the chunk holds no NaN code.
__device__ __forceinline__ void dequant16_bits(const uint4& v, uint32_t scale2, uint4& lo,
                                               uint4& hi) {
  constexpr uint32_t kTwoPow120 = 0x7B807B80u;  // bf16x2 {2^120, 2^120}: exponent 247
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  uint32_t r[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    // codes 0, 1 -> bytes 0, 2; codes 2, 3 -> bytes 0, 2 (bf16 element order = code order)
    const uint32_t y01 = __byte_perm(w[i], 0, 0x4140);
    const uint32_t y23 = __byte_perm(w[i], 0, 0x4342);
    r[2 * i] = mul_bf16x2(mul_bf16x2(e4m3x2_bits(y01), kTwoPow120), scale2);
    r[2 * i + 1] = mul_bf16x2(mul_bf16x2(e4m3x2_bits(y23), kTwoPow120), scale2);
  }
  lo = make_uint4(r[0], r[1], r[2], r[3]);
  hi = make_uint4(r[4], r[5], r[6], r[7]);
}

// The scale as the duplicated bf16x2 kBits multiplies by, or 0 when kBits cannot take it (not a
// normal power of two in float: a mantissa bit set, a float subnormal, inf or NaN).
__device__ __forceinline__ uint32_t bits_scale2(float scale) {
  const uint32_t b = __float_as_uint(scale);
  const uint32_t exp = (b >> 23) & 0xFFu;
  if ((b & 0x007FFFFFu) != 0 || exp == 0 || exp == 0xFFu) return 0;
  return (b >> 16) | (b & 0xFFFF0000u);
}

// 16 e4m3 values times `scale` into 16 bf16 (two 16-byte chunks), the kMode way.
template <Dequant kMode>
__device__ __forceinline__ void dequant16(const uint4& v, float scale, uint4& lo, uint4& hi) {
  if constexpr (kMode == Dequant::kBits) {
    const uint32_t scale2 = bits_scale2(scale);
    if (scale2 != 0 && !any_e4m3_nan(v)) {
      dequant16_bits(v, scale2, lo, hi);
      return;
    }
  }
  dequant16_cvt(v, scale, lo, hi);
}

}  // namespace flashmla::cuda::sparse
