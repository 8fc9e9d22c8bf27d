// GPU dense MHA prefill, forward (SPEC.md §6) against the float64 reference, through the public
// API, with the sm_90a kernels switched on (FLASHMLA_MHA_FWD=1 or 2 -- the first version and the
// warp-specialised one --, FLASHMLA_MHA_BWD=1: opt-in until this suite has run them on a GPU).
//
// Each case builds fresh random host inputs with the shared harness (NaN in every row of q, k
// and v outside the sequences and in every stride gap), mirrors them on cuda:0 with the same
// strides, calls flashmla::mha_varlen_fwd on the default stream and checks:
//   - out and lse against the float64 reference (harness tolerances, SPEC.md §7), rows with
//     nothing to attend exactly 0 with lse +inf;
//   - the rows after the last sequence written as on the CPU (out 0, lse +inf);
//   - every output element written (outputs 0xFF-poisoned before each call), no stride-gap byte;
//   - the inputs unchanged on the device; bitwise determinism over two runs.
// The backward suite checks dq, dk and dv likewise (tests/harness.h: check_mha_varlen_bwd).
// Cases: the shared table (tests/cases.cpp, "Table") and GPU-sized ones below ("GpuShapes"; the
// backward takes their quick rows, its float64 reference costing twice the forward's).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "cases.h"
#include "flashmla/flashmla.h"
#include "gpu/device_mirror.h"
#include "gpu/gpu_test_util.h"
#include "harness.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

constexpr Tier Q = Tier::kQuick;
constexpr Tier F = Tier::kFull;
constexpr DType FP16 = DType::kFloat16;

// Production-like shapes: long causal sequences (several key tiles, the diagonal inside a
// tile), chunked prefill (s_q < s_k), GQA groups packed into one row tile, s_q > s_k (lonely
// queries), tiles cut by the sequence end, empty sequences.
const std::vector<MhaVarlenCase>& gpu_mha_cases() {
  static const std::vector<MhaVarlenCase> table = [] {
    std::vector<MhaVarlenCase> v = {
        {.tier = Q, .h_q = 16, .h_kv = 16, .d_qk = 192, .causal = true, .q_lens = {1000, 1, 0},
         .k_lens = {1000, 300, 5}, .lse_transposed = true},
        {.tier = Q, .h_q = 8, .h_kv = 1, .d_qk = 128, .dtype = FP16, .q_lens = {300, 129, 64},
         .k_lens = {2000, 129, 1}, .pad_rows = 5, .strided = true},
        {.tier = Q, .h_q = 32, .h_kv = 4, .d_qk = 192, .causal = true, .q_lens = {200, 77},
         .k_lens = {3000, 77}},
        {.tier = Q, .h_q = 4, .h_kv = 2, .d_qk = 128, .causal = true, .q_lens = {300, 2},
         .k_lens = {100, 0}, .pad_rows = 2, .softmax_scale = 0.05f},
        {.tier = Q, .h_q = 126, .h_kv = 2, .d_qk = 192, .dtype = FP16, .causal = true,
         .q_lens = {17, 64}, .k_lens = {129, 64}, .strided = true, .lse_transposed = true},
        {.tier = F, .h_q = 128, .h_kv = 128, .d_qk = 192, .causal = true, .q_lens = {2048},
         .k_lens = {2048}},
        {.tier = F, .h_q = 64, .h_kv = 8, .d_qk = 128, .causal = false, .q_lens = {512, 1024},
         .k_lens = {4096, 1024}, .lse_transposed = true},
    };
    for (size_t i = 0; i < v.size(); ++i) v[i].id = static_cast<int>(i);
    return v;
  }();
  return table;
}

// Rows after the last sequence: out exactly 0 and lse +inf, as the CPU backend writes them.
::testing::AssertionResult tail_rows_cleared(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                             const MhaVarlenOutputs& out) {
  for (int64_t t = in.cu_q.back(); t < out.out.size(0); ++t)
    for (int64_t h = 0; h < c.h_q; ++h) {
      if (!std::isinf(out.lse.get({h, t})))
        return ::testing::AssertionFailure()
               << "lse[" << h << ", " << t << "] (a row after the last sequence) is "
               << out.lse.get({h, t}) << ", expected +inf";
      for (int64_t d = 0; d < out.out.size(2); ++d)
        if (out.out.get({t, h, d}) != 0.0)
          return ::testing::AssertionFailure() << "out[" << t << ", " << h << ", " << d
                                               << "] (a row after the last sequence) is not 0";
    }
  return ::testing::AssertionSuccess();
}

// One case with the forward kernel `kernel` (FLASHMLA_MHA_FWD: 1 the first version, 2 the
// warp-specialised one).
void check_fwd_case(const MhaVarlenCase& c, const char* kernel) {
  const ScopedEnv fwd("FLASHMLA_MHA_FWD", kernel);
  Rng rng(fresh_seed());
  SCOPED_TRACE(c.describe() + " kernel " + kernel + " " + seed_note(rng.seed()));
  const MhaVarlenInputs in = make_mha_varlen_inputs(c, rng);
  const MhaVarlenOutputs out = make_mha_varlen_outputs(c);
  DeviceMirror dev;
  const MhaVarlenFwdParams p = mha_varlen_params(c, in, out, dev.view_fn());

  auto run = [&](const MhaVarlenOutputs& into) {
    dev.poison(out.out);
    dev.poison(out.lse);
    mha_varlen_fwd(p);
    sync_device();
    dev.download(out.out, into.out);
    dev.download(out.lse, into.lse);
  };
  ASSERT_NO_THROW(run(out));
  EXPECT_TRUE(check_mha_varlen(c, mha_varlen_reference(c, in), out));
  EXPECT_TRUE(tail_rows_cleared(c, in, out));
  EXPECT_TRUE(gaps_untouched("out", out.out));
  EXPECT_TRUE(gaps_untouched("lse", out.lse));

  const MhaVarlenOutputs again = make_mha_varlen_outputs(c);
  ASSERT_NO_THROW(run(again));
  EXPECT_TRUE(
      bytes_equal("out, second run", out.out.bytes(), again.out.bytes(), out.out.storage_bytes()));
  EXPECT_TRUE(
      bytes_equal("lse, second run", out.lse.bytes(), again.lse.bytes(), out.lse.storage_bytes()));
  EXPECT_TRUE(dev.inputs_unchanged({&out.out, &out.lse}));
}

class MhaVarlenGpu : public ::testing::TestWithParam<MhaVarlenCase> {};

TEST_P(MhaVarlenGpu, MatchesFloat64ReferenceAndIsDeterministic) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  check_fwd_case(GetParam(), "1");
}

// The warp-specialised forward kernel (kernel_ws.cuh) on the same cases.
class MhaVarlenWsGpu : public ::testing::TestWithParam<MhaVarlenCase> {};

TEST_P(MhaVarlenWsGpu, MatchesFloat64ReferenceAndIsDeterministic) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  check_fwd_case(GetParam(), "2");
}

INSTANTIATE_TEST_SUITE_P(Table, MhaVarlenGpu,
                         ::testing::ValuesIn(cases_for_tier(mha_varlen_cases())), CaseName());
INSTANTIATE_TEST_SUITE_P(GpuShapes, MhaVarlenGpu,
                         ::testing::ValuesIn(cases_for_tier(gpu_mha_cases())), CaseName());
INSTANTIATE_TEST_SUITE_P(Table, MhaVarlenWsGpu,
                         ::testing::ValuesIn(cases_for_tier(mha_varlen_cases())), CaseName());
INSTANTIATE_TEST_SUITE_P(GpuShapes, MhaVarlenWsGpu,
                         ::testing::ValuesIn(cases_for_tier(gpu_mha_cases())), CaseName());

// ---- backward (FLASHMLA_MHA_BWD=1) ----
// The forward's out and lse come from the CPU backend (what a training step would hand over);
// dout, dlse (odd case ids), the inputs and the poisoned gradients are mirrored on the device.
class MhaVarlenBwdGpu : public ::testing::TestWithParam<MhaVarlenCase> {};

TEST_P(MhaVarlenBwdGpu, MatchesFloat64ReferenceAndIsDeterministic) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const ScopedEnv kernel("FLASHMLA_MHA_BWD", "1");
  const MhaVarlenCase& c = GetParam();
  Rng rng(fresh_seed());
  SCOPED_TRACE(c.describe() + (c.id % 2 ? " with dlse " : " ") + seed_note(rng.seed()));
  const MhaVarlenInputs in = make_mha_varlen_inputs(c, rng);
  const MhaVarlenOutputs fwd = make_mha_varlen_outputs(c);
  ASSERT_NO_THROW(run_mha_varlen_cpu(c, in, fwd));
  const MhaVarlenGradInputs gin = make_mha_varlen_grad_inputs(c, in, rng);
  const MhaVarlenGrads grads = make_mha_varlen_grads(c, in);
  DeviceMirror dev;
  const MhaVarlenBwdParams p = mha_varlen_bwd_params(c, in, fwd, gin, grads, dev.view_fn());

  auto run = [&](const MhaVarlenGrads& into) {
    for (const HostTensor* g : {&grads.dq, &grads.dk, &grads.dv}) dev.poison(*g);
    mha_varlen_bwd(p);
    sync_device();
    dev.download(grads.dq, into.dq);
    dev.download(grads.dk, into.dk);
    dev.download(grads.dv, into.dv);
  };
  ASSERT_NO_THROW(run(grads));
  EXPECT_TRUE(check_mha_varlen_bwd(c, in, mha_varlen_bwd_reference(c, in, fwd, gin), grads));
  EXPECT_TRUE(gaps_untouched("dq", grads.dq));
  EXPECT_TRUE(gaps_untouched("dk", grads.dk));
  EXPECT_TRUE(gaps_untouched("dv", grads.dv));

  const MhaVarlenGrads again = make_mha_varlen_grads(c, in);
  ASSERT_NO_THROW(run(again));
  for (auto [a, b, what] : {std::tuple{&grads.dq, &again.dq, "dq"}, {&grads.dk, &again.dk, "dk"},
                            {&grads.dv, &again.dv, "dv"}})
    EXPECT_TRUE(bytes_equal(std::string(what) + ", second run", a->bytes(), b->bytes(),
                            a->storage_bytes()));
  EXPECT_TRUE(dev.inputs_unchanged({&grads.dq, &grads.dk, &grads.dv}));
}

INSTANTIATE_TEST_SUITE_P(Table, MhaVarlenBwdGpu,
                         ::testing::ValuesIn(cases_for_tier(mha_varlen_cases())), CaseName());
INSTANTIATE_TEST_SUITE_P(GpuShapes, MhaVarlenBwdGpu,
                         ::testing::ValuesIn(cases_for_tier(gpu_mha_cases(), Tier::kQuick)),
                         CaseName());

// `call` raises NotImplementedError whose message contains `op` and `text`.
template <class Call>
void expect_not_implemented(const char* op, const char* text, const Call& call) {
  try {
    call();
    ADD_FAILURE() << op << ": expected NotImplementedError";
  } catch (const NotImplementedError& e) {
    EXPECT_NE(std::string(e.what()).find(op), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

// Without the switch a CUDA call still raises NotImplementedError naming the operation.
TEST(MhaVarlenGpuSwitch, OffByDefault) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const ScopedEnv fwd_off("FLASHMLA_MHA_FWD", "0");
  const ScopedEnv bwd_off("FLASHMLA_MHA_BWD", "0");
  const MhaVarlenCase c{.h_q = 2, .h_kv = 1, .q_lens = {3}, .k_lens = {4}, .id = 1};
  Rng rng(fresh_seed());
  const MhaVarlenInputs in = make_mha_varlen_inputs(c, rng);
  const MhaVarlenOutputs out = make_mha_varlen_outputs(c);
  const MhaVarlenGradInputs gin = make_mha_varlen_grad_inputs(c, in, rng);
  const MhaVarlenGrads grads = make_mha_varlen_grads(c, in);
  DeviceMirror dev;
  expect_not_implemented("mha_varlen_fwd", "mha_varlen_fwd",
                         [&] { mha_varlen_fwd(mha_varlen_params(c, in, out, dev.view_fn())); });
  expect_not_implemented("mha_varlen_bwd", "mha_varlen_bwd", [&] {
    mha_varlen_bwd(mha_varlen_bwd_params(c, in, out, gin, grads, dev.view_fn()));
  });
}

// The kernels copy q, k, v (and, backward, out and dout) 16 bytes at a time: rows whose stride
// is not a multiple of 16 bytes are refused with an error naming the tensor, not read askew.
TEST(MhaVarlenGpuSwitch, MisalignedRowsRaiseNotImplemented) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const ScopedEnv fwd_on("FLASHMLA_MHA_FWD", "1");
  const ScopedEnv bwd_on("FLASHMLA_MHA_BWD", "1");
  const MhaVarlenCase c{.h_q = 4, .h_kv = 2, .q_lens = {3}, .k_lens = {4}, .id = 1};
  Rng rng(fresh_seed());
  MhaVarlenInputs in = make_mha_varlen_inputs(c, rng);
  // [tokens, h_kv, d_qk] with strides [2 * (d_qk + 8) + 4, d_qk + 8, 1]: 8-byte aligned rows.
  in.k = HostTensor::padded(c.dtype, {in.k.size(0), c.h_kv, c.d_qk}, {4, 8, 0});
  in.k.poison();
  const MhaVarlenOutputs out = make_mha_varlen_outputs(c);
  const MhaVarlenGradInputs gin = make_mha_varlen_grad_inputs(c, in, rng);
  const MhaVarlenGrads grads = make_mha_varlen_grads(c, in);
  DeviceMirror dev;
  const char* why = "needs k rows aligned to 16 bytes";
  expect_not_implemented("mha_varlen_fwd", why,
                         [&] { mha_varlen_fwd(mha_varlen_params(c, in, out, dev.view_fn())); });
  expect_not_implemented("mha_varlen_bwd", why, [&] {
    mha_varlen_bwd(mha_varlen_bwd_params(c, in, out, gin, grads, dev.view_fn()));
  });
}

}  // namespace
}  // namespace flashmla::test
