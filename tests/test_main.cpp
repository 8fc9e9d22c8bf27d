// Entry point of flashmla_tests (the build links GTest::gtest without gtest_main): prints the tier
// and the backends, then runs every test. Environment:
//   FLASHMLA_TEST_TIER=quick|full   which case tiers run (default quick)
//   FLASHMLA_TEST_SEED=<n>          replay one seed in every case (each failure prints its seed)
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "cases.h"
#include "flashmla/flashmla.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* seed = std::getenv("FLASHMLA_TEST_SEED");
  std::printf("flashmla_tests: tier %s, seeds %s\n%s",
              flashmla::test::tier_name(flashmla::test::selected_tier()),
              seed && *seed ? seed : "fresh per case", flashmla::describe_backends().c_str());
  return RUN_ALL_TESTS();
}
