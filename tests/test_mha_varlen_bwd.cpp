// Dense MHA prefill backward (flash_attn's varlen backward) on the CPU backend: every case of the
// MHA table against the float64 reference (run on the CPU forward's own out and lse, as a
// training step would), bitwise determinism, and the reference itself against finite
// differences of the float64 forward.
#include <gtest/gtest.h>

#include <cmath>

#include "cases.h"
#include "harness.h"
#include "naive_reference.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

class MhaVarlenBwd : public ::testing::TestWithParam<MhaVarlenCase> {};

TEST_P(MhaVarlenBwd, MatchesFloat64ReferenceAndIsDeterministic) {
  const MhaVarlenCase& c = GetParam();
  Rng rng(fresh_seed());
  SCOPED_TRACE(c.describe() + (c.id % 2 ? " with dlse " : " ") + seed_note(rng.seed()));
  const MhaVarlenInputs in = make_mha_varlen_inputs(c, rng);
  const MhaVarlenOutputs fwd = make_mha_varlen_outputs(c);
  ASSERT_NO_THROW(run_mha_varlen_cpu(c, in, fwd));
  const MhaVarlenGradInputs gin = make_mha_varlen_grad_inputs(c, in, rng);
  const MhaVarlenGrads grads = make_mha_varlen_grads(c, in);
  ASSERT_NO_THROW(run_mha_varlen_bwd_cpu(c, in, fwd, gin, grads));
  EXPECT_TRUE(check_mha_varlen_bwd(c, in, mha_varlen_bwd_reference(c, in, fwd, gin), grads));

  const MhaVarlenGrads again = make_mha_varlen_grads(c, in);
  ASSERT_NO_THROW(run_mha_varlen_bwd_cpu(c, in, fwd, gin, again));
  for (auto [a, b, what] : {std::tuple{&grads.dq, &again.dq, "dq"}, {&grads.dk, &again.dk, "dk"},
                            {&grads.dv, &again.dv, "dv"}})
    EXPECT_TRUE(bytes_equal(std::string(what) + ", second run", a->bytes(), b->bytes(),
                            a->storage_bytes()));
}

INSTANTIATE_TEST_SUITE_P(Cases, MhaVarlenBwd,
                         ::testing::ValuesIn(cases_for_tier(mha_varlen_cases())), CaseName());

// The reference backward is the gradient of the reference forward's
//   L = sum(dout * out) + sum(dlse * lse)
// by central differences, on float32 inputs that are multiples of 2^-10 in [-1, 1] (so that
// x +- 2^-9 is exact), for a causal GQA problem with s_q > s_k in one sequence (lonely rows).
TEST(MhaVarlenBwdReference, IsTheGradientOfTheForward) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  const std::vector<int32_t> cu_q = {0, 3, 7}, cu_k = {0, 5, 9};  // s_q, s_k: (3, 5), (4, 4)
  const int h_q = 4, h_kv = 2, d = 128, d_v = 128;
  const int64_t total_q = cu_q.back(), total_k = cu_k.back();
  const double scale = 0.3;
  auto random = [&](std::vector<int64_t> shape) {
    HostTensor t(DType::kFloat32, std::move(shape));
    for (int64_t i = 0; i < t.numel(); ++i)
      t.set_at(i, std::round(std::clamp(rng.normal() / 4, -1.0, 1.0) * 1024) / 1024);
    return t;
  };
  HostTensor q = random({total_q, h_q, d}), k = random({total_k, h_kv, d});
  HostTensor v = random({total_k, h_kv, d_v}), dout = random({total_q, h_q, d_v});
  const HostTensor dlse = random({h_q, total_q});
  for (bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "not causal");
    auto loss = [&] {
      const naive::Attention a = naive::mha_varlen(q, k, v, cu_q, cu_k, causal, scale);
      double l = 0;
      for (int64_t t = 0; t < total_q; ++t)
        for (int h = 0; h < h_q; ++h) {
          for (int c = 0; c < d_v; ++c) l += dout.get({t, h, c}) * a.out[(t * h_q + h) * d_v + c];
          const double lse = a.lse[h * total_q + t];
          if (std::isfinite(lse)) l += dlse.get({h, t}) * lse;
        }
      return l;
    };
    const naive::Attention fwd = naive::mha_varlen(q, k, v, cu_q, cu_k, causal, scale);
    HostTensor out(DType::kFloat32, {total_q, h_q, d_v});  // float32 holds out to ~1e-8
    for (int64_t i = 0; i < out.numel(); ++i) out.set_at(i, fwd.out[i]);
    const naive::MhaGrads g =
        naive::mha_varlen_bwd(q, k, v, dout, out, &dlse, cu_q, cu_k, causal, scale);
    const double h = std::ldexp(1.0, -9);
    auto probe = [&](const char* what, HostTensor& x, const std::vector<double>& grad) {
      double max_abs = 0;
      for (double y : grad) max_abs = std::max(max_abs, std::fabs(y));
      ASSERT_GT(max_abs, 0.0) << what;
      for (int n = 0; n < 24; ++n) {
        const int64_t i = rng.uniform_int(0, x.numel() - 1);
        const double x0 = x.get_at(i);
        x.set_at(i, x0 + h);
        const double up = loss();
        x.set_at(i, x0 - h);
        const double down = loss();
        x.set_at(i, x0);
        const double fd = (up - down) / (2 * h);
        EXPECT_NEAR(grad[i], fd, 1e-4 * max_abs + 1e-3 * std::fabs(fd))
            << what << " element " << i;
      }
    };
    probe("dq", q, g.dq);
    probe("dk", k, g.dk);
    probe("dv", v, g.dv);
  }
}

}  // namespace
}  // namespace flashmla::test
