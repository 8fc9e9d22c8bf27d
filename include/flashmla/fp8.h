// Bit-exact scalar FP8 codecs, shared verbatim by the CPU backend and the CUDA kernels so the
// two cannot disagree by a single byte.
//
// e4m3 ("fn" flavour): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; 0x7F and
// 0xFF are NaN; largest finite 448 (0x7E); smallest subnormal 2^-9.
// UE8M0: an unsigned 8-bit exponent, value 2^(byte - 127); 0xFF is NaN.
//
// Quantization scale of a tile (SPEC.md §3, FlashMLA's tests/quant.py):
//   s = max(float32(amax / 448), 1e-4f);  scale = 2^ceil(log2(s)) (the smallest power of two >= s)
// computed here with exact integer operations on the float32 bits. (PyTorch's float log2 may
// round a value one ulp above a power of two down to it; ours never does, so every stored value
// satisfies |x / scale| <= 448 and nothing saturates by accident.)
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FLASHMLA_HD __host__ __device__ __forceinline__
#else
#define FLASHMLA_HD inline
#endif

namespace flashmla::fp8 {

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kScaleFloor = 1e-4f;  // FlashMLA's FP8_AMAX_MARGIN
inline constexpr int kUE8M0Bias = 127;

FLASHMLA_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

FLASHMLA_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// x >> shift, rounded to nearest, ties to even. shift >= 1.
FLASHMLA_HD uint32_t shift_right_rne(uint32_t x, int shift) {
  if (shift >= 32) return 0;  // callers pass x < 2^24, so x / 2^shift < 1/2 rounds to 0
  const uint32_t q = x >> shift;
  const uint32_t rem = x & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  return q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
}

// float32 -> e4m3, round to nearest even, saturating to +-448; every NaN -> 0x7F. (NaN signs and
// payloads are not preserved by GPU arithmetic, so both backends emit one canonical NaN.)
FLASHMLA_HD uint8_t float_to_e4m3(float f) {
  const uint32_t bits = float_bits(f);
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return 0x7Fu;  // NaN
  if (abs >= 0x43E00000u) return static_cast<uint8_t>(sign | 0x7Eu);  // >= 448 (and inf)
  const int exp = static_cast<int>(abs >> 23) - 127;
  uint32_t code;
  if (exp >= -6) {
    // Normal in e4m3: rebias the exponent (127 -> 7) and round 23 mantissa bits to 3. A carry
    // out of the mantissa correctly bumps the exponent; 448 is the largest result (checked above).
    code = shift_right_rne(abs - (120u << 23), 20);
  } else {
    // Subnormal (or zero) in e4m3: value = m * 2^-9 with m in 0..8 (8 is the smallest normal).
    const uint32_t mant = (abs & 0x7FFFFFu) | (abs >= 0x00800000u ? 0x800000u : 0u);
    const int e_unb = abs >= 0x00800000u ? exp : -126;
    code = shift_right_rne(mant, 14 - e_unb);
  }
  return static_cast<uint8_t>(sign | code);
}

// e4m3 -> float32, exact.
FLASHMLA_HD float e4m3_to_float(uint8_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x80u) << 24;
  const uint32_t exp = (v >> 3) & 0xFu;
  const uint32_t mant = v & 0x7u;
  if (exp == 0xFu && mant == 0x7u) return bits_float(sign | 0x7FC00000u);  // NaN
  if (exp == 0) {
    // m * 2^-9, exact in float32
    return bits_float(sign | float_bits(static_cast<float>(mant) * (1.0f / 512.0f)));
  }
  return bits_float(sign | ((exp + 120u) << 23) | (mant << 20));
}

// Ordering key for a tile's amax: the float32 bits of |x| compared as integers order finite
// values and inf as floats do and put NaN above everything, so a NaN in a tile propagates to its
// amax (as torch.amax does). Both backends reduce a tile with max() over these keys and pass
// bits_float(max key) to scale_exponent_for_amax.
FLASHMLA_HD uint32_t abs_key(float x) { return float_bits(x) & 0x7FFFFFFFu; }

// Largest exponent whose reciprocal exp2_int(-e) is still a normal float32.
inline constexpr int kMaxScaleExponent = 126;

// Exponent e of the tile scale 2^e for a tile whose largest |x| is amax (see file header).
// Non-finite tiles are garbage whatever we do; they get defined bytes: a NaN amax gives the
// floor scale (NaN values encode as 0x7F), an infinite amax the largest scale.
FLASHMLA_HD int scale_exponent_for_amax(float amax) {
#if defined(__CUDA_ARCH__)
  float s = __fdiv_rn(amax, kE4M3Max);
#else
  float s = amax / kE4M3Max;
#endif
  if (!(s >= kScaleFloor)) s = kScaleFloor;  // also maps NaN amax to the floor
  const uint32_t bits = float_bits(s);
  if (bits >= 0x7F800000u) return kMaxScaleExponent;  // inf
  const int exp = static_cast<int>(bits >> 23) - 127;  // s is normal (>= 1e-4)
  const int e = (bits & 0x7FFFFFu) ? exp + 1 : exp;
  return e > kMaxScaleExponent ? kMaxScaleExponent : e;
}

FLASHMLA_HD float exp2_int(int e) {  // 2^e for -126 <= e <= 127, exact
  return bits_float(static_cast<uint32_t>(e + 127) << 23);
}

FLASHMLA_HD uint8_t exponent_to_ue8m0(int e) { return static_cast<uint8_t>(e + kUE8M0Bias); }

FLASHMLA_HD float ue8m0_to_float(uint8_t v) {
  if (v == 0xFFu) return bits_float(0x7FC00000u);
  if (v == 0) return bits_float(0x00400000u);  // 2^-127, a float32 subnormal
  return bits_float(static_cast<uint32_t>(v) << 23);
}

// bf16 <-> float32. bf16 is the top half of a float32; rounding is to nearest even; every NaN
// becomes the canonical 0x7FC0 (see float_to_e4m3).
FLASHMLA_HD float bf16_to_float(uint16_t v) { return bits_float(static_cast<uint32_t>(v) << 16); }

FLASHMLA_HD uint16_t float_to_bf16(float f) {
  const uint32_t bits = float_bits(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0u;
  const uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

}  // namespace flashmla::fp8
