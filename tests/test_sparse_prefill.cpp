// Sparse prefill (flash_mla_sparse_fwd) on the CPU backend: every case of the table against the
// float64 reference (out, max_logits, lse), plus bitwise determinism.
#include <gtest/gtest.h>

#include "cases.h"
#include "harness.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

class SparsePrefill : public ::testing::TestWithParam<SparsePrefillCase> {};

TEST_P(SparsePrefill, MatchesFloat64ReferenceAndIsDeterministic) {
  const SparsePrefillCase& c = GetParam();
  Rng rng(fresh_seed());
  SCOPED_TRACE(c.describe() + " " + seed_note(rng.seed()));
  const SparsePrefillInputs in = make_sparse_prefill_inputs(c, rng);
  const SparsePrefillOutputs out = make_sparse_prefill_outputs(c);
  ASSERT_NO_THROW(run_sparse_prefill_cpu(c, in, out));
  EXPECT_TRUE(check_sparse_prefill(c, sparse_prefill_reference(c, in), out));

  const SparsePrefillOutputs again = make_sparse_prefill_outputs(c);
  ASSERT_NO_THROW(run_sparse_prefill_cpu(c, in, again));
  EXPECT_TRUE(
      bytes_equal("out, second run", out.out.bytes(), again.out.bytes(), out.out.storage_bytes()));
  EXPECT_TRUE(bytes_equal("max_logits, second run", out.max_logits.bytes(),
                          again.max_logits.bytes(), out.max_logits.storage_bytes()));
  EXPECT_TRUE(
      bytes_equal("lse, second run", out.lse.bytes(), again.lse.bytes(), out.lse.storage_bytes()));
}

INSTANTIATE_TEST_SUITE_P(Cases, SparsePrefill,
                         ::testing::ValuesIn(cases_for_tier(sparse_prefill_cases())), CaseName());

}  // namespace
}  // namespace flashmla::test
