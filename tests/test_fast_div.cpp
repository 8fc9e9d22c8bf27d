// FastDiv (src/core/fast_div.h): the multiply-high division the GPU kernels use for row -> (query,
// head), checked against the / operator on every divisor up to 1,100 over every dividend that
// matters to them and around each multiple, plus large divisors and dividends.
#include <gtest/gtest.h>

#include <cstdint>

#include "core/fast_div.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

TEST(FastDiv, SmallDivisorsEveryDividendUpTo70000) {
  for (uint32_t d = 1; d <= 1100; ++d) {
    const FastDiv f(d);
    for (uint32_t n = 0; n < 70000; ++n) ASSERT_EQ(f.div(n), n / d) << "d=" << d << " n=" << n;
  }
}

TEST(FastDiv, AroundMultiplesAndAtTheTopOfTheRange) {
  const uint32_t ds[] = {1u,        2u,          3u,          7u,         64u,        127u,
                         128u,      129u,        1000u,       65535u,     65536u,     65537u,
                         1u << 31,  (1u << 31) + 1, 0xFFFFFFFEu, 0xFFFFFFFFu};
  for (const uint32_t d : ds) {
    const FastDiv f(d);
    for (uint64_t q = 0; q * d <= 0xFFFFFFFFull && q < 5000; ++q)
      for (int64_t e = -2; e <= 2; ++e) {
        const int64_t n = static_cast<int64_t>(q * d) + e;
        if (n < 0 || n > 0xFFFFFFFFll) continue;
        ASSERT_EQ(f.div(static_cast<uint32_t>(n)), static_cast<uint32_t>(n) / d)
            << "d=" << d << " n=" << n;
      }
    for (uint32_t k = 0; k < 1000; ++k) {
      const uint32_t n = 0xFFFFFFFFu - k;
      ASSERT_EQ(f.div(n), n / d) << "d=" << d << " n=" << n;
    }
  }
}

TEST(FastDiv, RandomDivisorsAndDividends) {
  const uint64_t seed = fresh_seed();
  Rng rng(seed);
  for (int k = 0; k < 200000; ++k) {
    const auto d = static_cast<uint32_t>(rng.uniform_int(1, 0xFFFFFFFFll));
    const auto n = static_cast<uint32_t>(rng.uniform_int(0, 0xFFFFFFFFll));
    ASSERT_EQ(FastDiv(d).div(n), n / d) << "d=" << d << " n=" << n << " " << seed_note(seed);
  }
}

}  // namespace
}  // namespace flashmla::test
