// Dense MHA prefill, variable length (flash_attn_varlen_func forward) on the CPU backend: every
// case of the table against the float64 reference, plus bitwise determinism.
#include <gtest/gtest.h>

#include "cases.h"
#include "harness.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

class MhaVarlen : public ::testing::TestWithParam<MhaVarlenCase> {};

TEST_P(MhaVarlen, MatchesFloat64ReferenceAndIsDeterministic) {
  const MhaVarlenCase& c = GetParam();
  Rng rng(fresh_seed());
  SCOPED_TRACE(c.describe() + " " + seed_note(rng.seed()));
  const MhaVarlenInputs in = make_mha_varlen_inputs(c, rng);
  const MhaVarlenOutputs out = make_mha_varlen_outputs(c);
  ASSERT_NO_THROW(run_mha_varlen_cpu(c, in, out));
  EXPECT_TRUE(check_mha_varlen(c, mha_varlen_reference(c, in), out));

  const MhaVarlenOutputs again = make_mha_varlen_outputs(c);
  ASSERT_NO_THROW(run_mha_varlen_cpu(c, in, again));
  EXPECT_TRUE(
      bytes_equal("out, second run", out.out.bytes(), again.out.bytes(), out.out.storage_bytes()));
  EXPECT_TRUE(
      bytes_equal("lse, second run", out.lse.bytes(), again.lse.bytes(), out.lse.storage_bytes()));
}

INSTANTIATE_TEST_SUITE_P(Cases, MhaVarlen, ::testing::ValuesIn(cases_for_tier(mha_varlen_cases())),
                         CaseName());

}  // namespace
}  // namespace flashmla::test
