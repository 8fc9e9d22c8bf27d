// Unsigned division by a divisor fixed at launch, as a multiply-high, an add and two shifts
// (Granlund and Montgomery, "Division by invariant integers using multiplication", 1994,
// fig. 4.1): exact for every 32-bit dividend and every divisor >= 1. The host builds it; a kernel
// divides with ~5 instructions instead of the ~25 of a general integer division (which sat in
// the dense decode epilogue, on the path every CTA runs once per chunk).
#pragma once

#include <cstdint>

#include "flashmla/fp8.h"  // FLASHMLA_HD

namespace flashmla {

struct FastDiv {
  uint32_t mul = 1;
  uint32_t sh1 = 0, sh2 = 0;

  FastDiv() = default;
  explicit FastDiv(uint32_t divisor) {
    uint32_t l = 0;  // ceil(log2(divisor))
    while ((uint64_t{1} << l) < divisor) ++l;
    // floor(2^32 (2^l - d) / d) + 1 < 2^32 because 2^l - d < d
    mul = static_cast<uint32_t>((uint64_t{1} << 32) * ((uint64_t{1} << l) - divisor) / divisor + 1);
    sh1 = l < 1 ? l : 1;
    sh2 = l > 1 ? l - 1 : 0;
  }

  FLASHMLA_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t t = __umulhi(n, mul);
#else
    const uint32_t t = static_cast<uint32_t>((uint64_t{n} * mul) >> 32);
#endif
    return (t + ((n - t) >> sh1)) >> sh2;
  }
};

}  // namespace flashmla
