// Small numeric helpers shared by the CPU backend: 16-bit float rows <-> float32 (bf16 and fp16,
// round to nearest even on the way back) and the online-softmax bookkeeping every attention
// kernel here uses.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "flashmla/fp8.h"  // bf16 codecs, bit casts, shift_right_rne

namespace flashmla::cpu {

inline constexpr float kInf = std::numeric_limits<float>::infinity();

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// fp16 -> float32, exact (subnormals, infinities and NaN included), without branches so that
// row conversions vectorise: place exponent and mantissa in a float32 and multiply by 2^112 to
// rebias 15 -> 127, which also normalises fp16 subnormals exactly (they land on float32
// subnormals; assumes denormals-are-zero is off, the default).
inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const float mag = fp8::bits_float(static_cast<uint32_t>(h & 0x7FFFu) << 13) * 0x1p112f;
  const uint32_t inf_nan = (h & 0x7C00u) == 0x7C00u ? 0x7F800000u : 0u;  // exponent 31 -> 255
  return fp8::bits_float(sign | inf_nan | fp8::float_bits(mag));
}

// float32 -> fp16, round to nearest even; overflow gives inf, NaN stays NaN.
inline uint16_t float_to_fp16(float f) {
  const uint32_t bits = fp8::float_bits(f);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to inf
  const int exp = static_cast<int>(abs >> 23) - 127;
  if (exp >= -14) {
    // Rebias the exponent (127 -> 15) and round 23 mantissa bits to 10; a mantissa carry
    // correctly bumps the exponent.
    return static_cast<uint16_t>(sign | fp8::shift_right_rne(abs - (112u << 23), 13));
  }
  // Subnormal in fp16: value = m * 2^-24 with m in 0..1024 (1024 is the smallest normal).
  if (abs < 0x00800000u) return static_cast<uint16_t>(sign);  // float32 subnormals round to 0
  const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
  return static_cast<uint16_t>(sign | fp8::shift_right_rne(mant, -exp - 1));
}

// dst[i] = scale * src[i] for a row of n bf16 / fp16 values. The dtype branch sits outside
// the loops so that each loop vectorises.
inline void load_row(const uint16_t* src, bool is_fp16, int n, float scale, float* dst) {
  if (is_fp16) {
    for (int i = 0; i < n; ++i) dst[i] = scale * fp16_to_float(src[i]);
  } else {
    for (int i = 0; i < n; ++i) dst[i] = scale * fp8::bf16_to_float(src[i]);
  }
}

inline void store_row(const float* src, int n, bool is_fp16, uint16_t* dst) {
  if (is_fp16) {
    for (int i = 0; i < n; ++i) dst[i] = float_to_fp16(src[i]);
  } else {
    for (int i = 0; i < n; ++i) dst[i] = fp8::float_to_bf16(src[i]);
  }
}

// exp(x) for x <= 0 within 1.02 ulp (checked on every float in [-87, 0]), written without
// branches or calls so that loops over it vectorise: 3x faster than glibc's expf per softmax row.
// Cephes' expf: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-7 polynomial, times 2^n.
// Inputs below -87 give exp(-87) ~ 1.6e-38, nothing next to a softmax denominator >= 1.
inline float exp_nonpositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln2 = hi + lo, hi exact
  constexpr float kRound = 12582912.0f;                              // 1.5 * 2^23
  // Clamp to -87 on the bit pattern (among negative floats a larger pattern is a larger
  // magnitude; -inf and -NaN clamp too): a float compare keeps GCC from vectorising the loop
  // under the default -ftrapping-math.
  x = fp8::bits_float(std::min(fp8::float_bits(x), fp8::float_bits(-87.0f)));
  const float n = (x * kLog2e + kRound) - kRound;  // round to nearest
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * fp8::bits_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
}

// Online softmax of one query row: running max m and running sum l of exp(logit - m).
struct SoftmaxState {
  float m = -kInf;
  float l = 0.0f;

  // Folds in finite logits s[0, n) (n >= 1): turns s into p = exp(s - m_new) in place and
  // returns the factor that earlier accumulations must be multiplied by.
  float update(float* s, int n) {
    float mx = m;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < n; ++j) mx = s[j] > mx ? s[j] : mx;
    const float alpha = std::exp(m - mx);  // m = -inf on the first tile: alpha = 0
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; ++j) {
      s[j] = exp_nonpositive(s[j] - mx);
      sum += s[j];
    }
    m = mx;
    l = l * alpha + sum;
    return alpha;
  }
  bool empty() const { return !(l > 0.0f); }
  // Natural-log sum of exp(logits); `none` where nothing was attended.
  float lse(float none) const { return empty() ? none : m + std::log(l); }
  float inv_l() const { return empty() ? 0.0f : 1.0f / l; }
};

}  // namespace flashmla::cpu
