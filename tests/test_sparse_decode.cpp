// Sparse decode over FP8 caches (V3.2 and MODEL1) on the CPU backend: every case of the table
// against the float64 reference run on the dequantized cache (so quantization error is not
// counted as kernel error), plus bitwise determinism.
#include <gtest/gtest.h>

#include "cases.h"
#include "harness.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

class SparseDecode : public ::testing::TestWithParam<SparseDecodeCase> {};

TEST_P(SparseDecode, MatchesFloat64ReferenceAndIsDeterministic) {
  const SparseDecodeCase& c = GetParam();
  Rng rng(fresh_seed());
  SCOPED_TRACE(c.describe() + " " + seed_note(rng.seed()));
  const SparseDecodeInputs in = make_sparse_decode_inputs(c, rng);
  const SparseDecodeOutputs out = make_sparse_decode_outputs(c);
  ASSERT_NO_THROW(run_sparse_decode_cpu(c, in, out));
  EXPECT_TRUE(check_sparse_decode(c, sparse_decode_reference(c, in), out));

  const SparseDecodeOutputs again = make_sparse_decode_outputs(c);
  ASSERT_NO_THROW(run_sparse_decode_cpu(c, in, again));
  EXPECT_TRUE(
      bytes_equal("out, second run", out.out.bytes(), again.out.bytes(), out.out.storage_bytes()));
  EXPECT_TRUE(
      bytes_equal("lse, second run", out.lse.bytes(), again.lse.bytes(), out.lse.storage_bytes()));
}

INSTANTIATE_TEST_SUITE_P(Cases, SparseDecode,
                         ::testing::ValuesIn(cases_for_tier(sparse_decode_cases())), CaseName());

}  // namespace
}  // namespace flashmla::test
