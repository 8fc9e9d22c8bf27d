// GPU sparse decode (SPEC.md §3, §4) and sparse prefill (§5) against the float64 reference,
// through the public API.
//
// Each case builds fresh random host inputs with the shared harness (tests/harness.h: NaN garbage
// in every cache slot, kv row and stride gap a kernel must not read; invalid, out-of-range and
// past-topk_length indices), copies the whole storage of every input to cuda:0, so that the
// device views have the host views' shapes and strides and hold the same garbage, calls
// flashmla::sparse_decode / sparse_prefill on the default stream and checks:
//   - out, lse (and max_logits) against the float64 reference run on the dequantized cache, with
//     the harness's tolerances (SPEC.md §7); rows with nothing to attend exactly 0, lse +inf;
//   - every output element written (device outputs are 0xFF-poisoned, i.e. NaN, before each
//     call) and no byte of an output's stride gaps;
//   - the inputs unchanged on the device;
//   - bitwise determinism over two runs.
// Cases: every row of the shared tables (tests/cases.cpp, instantiation "Table") plus the
// GPU-sized ones below ("GpuShapes"): production head counts and topk 2048 at larger batches,
// page sizes 1, 2, 61, 64 and 576, head counts and topk that are not multiples of 64, extra
// scopes, two kv heads, s_q up to 256. The variant suites rerun cases with the opt-in kernels'
// switches set (the split over the keys, the producer kernel). The quick tier keeps the float64 reference (the bulk of the run time)
// under 6e10 multiply-adds in all (SparseGpuCases.QuickTierFitsReferenceBudget);
// FLASHMLA_TEST_TIER=full adds the large shapes. Skips when no CUDA device is usable.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <stdexcept>
#include <string>
#include <vector>

#include "cases.h"
#include "cuda/common/cuda_check.h"
#include "flashmla/flashmla.h"
#include "gpu/device_mirror.h"
#include "gpu/gpu_test_util.h"
#include "harness.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

constexpr int kDimV = 512;
constexpr Tier Q = Tier::kQuick;
constexpr Tier F = Tier::kFull;

// ---- GPU-sized cases -------------------------------------------------------------------------

// Multiply-adds of the float64 reference: d_qk (logits) + 512 (output) per query row and key.
double reference_work(const SparseDecodeCase& c) {
  const int topk = c.main.topk + (c.extra ? c.extra->topk : 0);
  return double(c.b) * c.s_q * c.h_q * topk * (c.d_qk + kDimV);
}
double reference_work(const SparsePrefillCase& c) {
  return double(c.s_q) * c.h_q * c.topk * (c.d_qk + kDimV);
}

template <typename Case>
std::vector<Case> numbered(std::vector<Case> v) {
  for (size_t i = 0; i < v.size(); ++i) v[i].id = static_cast<int>(i);
  return v;
}

// Reference cost in the comment of each quick case (multiply-adds).
const std::vector<SparseDecodeCase>& gpu_sparse_decode_cases() {
  static const std::vector<SparseDecodeCase> table = numbered([] {
    std::vector<SparseDecodeCase> v = {
        // V3.2 production shape: h_q 128, topk 2048 on 64-token pages. 5.7e8
        {.tier = Q, .b = 2, .h_q = 128, .main = {.page = 64, .tokens = 8192, .topk = 2048}},
        // MODEL1 MTP (s_q 2) with topk_length, an extra scope on page 2 with topk 100 (not a
        // multiple of 64), a finite sink. 5.6e8
        {.tier = Q, .b = 2, .s_q = 2, .h_q = 64, .d_qk = 512,
         .main = {.page = 64, .tokens = 6000, .topk = 2048, .topk_length = true},
         .extra = SparseScopeSpec{.page = 2, .tokens = 500, .topk = 100},
         .sink = Sink::kFinite},
        // Page 1 (every token its own block), out-of-range invalid entries. 4.3e8
        {.tier = Q, .b = 3, .h_q = 64, .main = {.page = 1, .tokens = 5000, .topk = 2048},
         .invalid_frac = 0.1, .wild_invalid = true},
        // Page 576 with padded blocks and topk_length; an extra scope on page 61 with its own
        // lengths; +inf sinks. 6.0e8
        {.tier = Q, .b = 2, .h_q = 128,
         .main = {.page = 576, .tokens = 4608, .topk = 2048, .topk_length = true, .block_pad = 16},
         .extra = SparseScopeSpec{.page = 61, .tokens = 1000, .topk = 100, .topk_length = true},
         .sink = Sink::kWithInf},
        // b 8 on page 2 with topk_length (one request of length 0). 1.1e9
        {.tier = Q, .b = 8, .h_q = 64,
         .main = {.page = 2, .tokens = 8192, .topk = 2048, .topk_length = true},
         .invalid_frac = 0.05},
        // MODEL1 on page 576 with padded blocks, strided q/out/lse, wild invalid entries, an
        // extra scope on page 1. 5.5e8
        {.tier = Q, .b = 2, .h_q = 128, .d_qk = 512,
         .main = {.page = 576, .tokens = 6000, .topk = 2048, .block_pad = 48},
         .extra = SparseScopeSpec{.page = 1, .tokens = 300, .topk = 64},
         .invalid_frac = 0.25, .wild_invalid = true, .strided_q = true},
        // h_q 16 (a quarter of a 64-row tile), b 8, s_q 3; MODEL1 on page 61 with padded blocks,
        // topk 100, rows with nothing valid. 3.9e7
        {.tier = Q, .b = 8, .s_q = 3, .h_q = 16, .d_qk = 512,
         .main = {.page = 61, .tokens = 2000, .topk = 100, .block_pad = 48},
         .invalid_frac = 0.2, .all_invalid_rows = true},
        // h_q 100 (a partial second tile), topk 1 in both scopes: many rows with one key or none;
        // +inf sinks, strided q. 2.6e5
        {.tier = Q, .b = 4, .s_q = 3, .h_q = 100,
         .main = {.page = 2, .tokens = 64, .topk = 1, .topk_length = true},
         .extra = SparseScopeSpec{.page = 64, .tokens = 64, .topk = 1},
         .invalid_frac = 0.3, .wild_invalid = true, .sink = Sink::kWithInf, .strided_q = true},
        // A short main scope (topk 100) before a long extra one (2048, with lengths). 6.0e8
        {.tier = Q, .b = 2, .s_q = 2, .h_q = 64,
         .main = {.page = 64, .tokens = 1000, .topk = 100},
         .extra = SparseScopeSpec{.page = 64, .tokens = 8192, .topk = 2048, .topk_length = true},
         .invalid_frac = 0.1},

        // Full tier: odd head counts and topk at the largest batch.
        {.tier = F, .b = 8, .s_q = 3, .h_q = 100, .d_qk = 512,
         .main = {.page = 61, .tokens = 8000, .topk = 2048, .topk_length = true, .block_pad = 16},
         .extra = SparseScopeSpec{.page = 576, .tokens = 1200, .topk = 100},
         .invalid_frac = 0.1, .sink = Sink::kFinite},
        {.tier = F, .b = 8, .s_q = 2, .h_q = 16,
         .main = {.page = 1, .tokens = 8192, .topk = 2048},
         .extra = SparseScopeSpec{.page = 2, .tokens = 100, .topk = 1, .topk_length = true},
         .wild_invalid = true, .all_invalid_rows = true, .sink = Sink::kWithInf},
        {.tier = F, .b = 8, .s_q = 3, .h_q = 128,
         .main = {.page = 64, .tokens = 640, .topk = 1, .topk_length = true},
         .extra = SparseScopeSpec{.page = 61, .tokens = 1000, .topk = 100, .topk_length = true},
         .invalid_frac = 0.2},
    };
    // Full tier: both layouts x page sizes 64, 2, 1, 576, 61 x h_q 64 / 128 at topk 2048, with
    // b (2..8), s_q (1..3), topk_length, an extra scope, invalid entries, empty rows, sinks,
    // block padding and strided q rotated through their values.
    const int pages[] = {64, 2, 1, 576, 61};
    int k = 0;
    for (int d_qk : {576, 512})
      for (int page : pages)
        for (int h_q : {64, 128}) {
          SparseDecodeCase c{.tier = F, .b = 2 + (3 * k) % 7, .s_q = 1 + k % 3, .h_q = h_q,
                             .d_qk = d_qk,
                             .main = {.page = page, .tokens = 3 * 2048 + 100, .topk = 2048,
                                      .topk_length = k % 2 == 0, .block_pad = 16 * (k % 4)}};
          if (k % 3 == 1)
            c.extra = SparseScopeSpec{.page = pages[(k + 1) % 5], .tokens = 1000,
                                      .topk = k % 2 == 1 ? 100 : 512, .topk_length = k % 4 == 1};
          c.invalid_frac = 0.05 * (k % 4);
          c.wild_invalid = k % 2 == 1;
          c.all_invalid_rows = k % 5 == 3;
          c.sink = static_cast<Sink>(k % 3);
          c.strided_q = k % 4 == 2;
          v.push_back(c);
          ++k;
        }
    return v;
  }());
  return table;
}

const std::vector<SparsePrefillCase>& gpu_sparse_prefill_cases() {
  static const std::vector<SparsePrefillCase> table = numbered([] {
    std::vector<SparsePrefillCase> v = {
        // Production shape: h_q 128, topk 2048 over 4096 kv rows. 2.3e9
        {.tier = Q, .s_q = 8, .s_kv = 4096, .h_q = 128, .topk = 2048},
        // s_q 256 with topk 100 (not a multiple of 64), d_qk 512, topk_length, wild invalid
        // entries, a finite sink. 1.7e9
        {.tier = Q, .s_q = 256, .s_kv = 1000, .h_q = 64, .d_qk = 512, .topk = 100,
         .invalid_frac = 0.2, .wild_invalid = true, .topk_length = true, .sink = Sink::kFinite},
        // h_q 72 over two kv heads (36 query heads each: partial tiles), topk 2048. 1.3e9
        {.tier = Q, .s_q = 8, .s_kv = 4096, .h_q = 72, .h_kv = 2, .topk = 2048,
         .invalid_frac = 0.1},
        // h_q 16 over two kv heads, topk 1, s_q 100; empty rows, +inf sinks. 1.6e6
        {.tier = Q, .s_q = 100, .s_kv = 300, .h_q = 16, .h_kv = 2, .d_qk = 512, .topk = 1,
         .invalid_frac = 0.3, .all_invalid_rows = true, .sink = Sink::kWithInf},
        // Strided views, s_q 64, h_q 128, d_qk 512, topk 100, out-of-range entries. 8.4e8
        {.tier = Q, .s_q = 64, .s_kv = 2048, .h_q = 128, .d_qk = 512, .topk = 100,
         .invalid_frac = 0.1, .wild_invalid = true, .sink = Sink::kWithInf, .strided = true},
        // h_q 128 over two kv heads of 64, topk 2048 with topk_length. 2.0e9
        {.tier = Q, .s_q = 7, .s_kv = 4096, .h_q = 128, .h_kv = 2, .topk = 2048,
         .topk_length = true},
    };
    // Full tier: both d_qk x h_q 64, 128, 16, 72 x topk 2048, 100, 1, with s_q (1..256), s_kv
    // (129..4096), h_kv 1 / 2, invalid entries, empty rows, topk_length, sinks and strided views
    // rotated through their values.
    const int64_t s_qs[] = {256, 64, 133, 1, 17};
    const int64_t s_kvs[] = {4096, 2048, 513, 4096, 129};
    int k = 0;
    for (int d_qk : {576, 512})
      for (int h_q : {64, 128, 16, 72})
        for (int topk : {2048, 100, 1}) {
          SparsePrefillCase c{.tier = F, .s_q = s_qs[k % 5], .s_kv = s_kvs[k / 5 % 5], .h_q = h_q,
                              .h_kv = 1 + k % 2, .d_qk = d_qk, .topk = topk};
          c.invalid_frac = 0.1 * (k % 3);
          c.wild_invalid = k % 2 == 0;
          c.all_invalid_rows = k % 4 == 1;
          c.topk_length = k % 4 == 2;
          c.sink = static_cast<Sink>(k / 3 % 3);
          c.strided = k % 5 == 3;
          v.push_back(c);
          ++k;
        }
    return v;
  }());
  return table;
}

// ---- sparse decode ---------------------------------------------------------------------------

// One case end to end (see the file header).
void check_decode_case(const SparseDecodeCase& c) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(c.describe() + " " + seed_note(rng.seed()));
  const SparseDecodeInputs in = make_sparse_decode_inputs(c, rng);
  const SparseDecodeOutputs out = make_sparse_decode_outputs(c);
  DeviceMirror dev;
  const SparseDecodeParams p = sparse_decode_params(c, in, out, dev.view_fn());

  // One call into freshly poisoned device outputs, brought back into `into`.
  auto run = [&](const SparseDecodeOutputs& into) {
    dev.poison(out.out);
    dev.poison(out.lse);
    sparse_decode(p);
    sync_device();
    dev.download(out.out, into.out);
    dev.download(out.lse, into.lse);
  };
  ASSERT_NO_THROW(run(out));
  EXPECT_TRUE(check_sparse_decode(c, sparse_decode_reference(c, in), out));
  EXPECT_TRUE(gaps_untouched("out", out.out));
  EXPECT_TRUE(gaps_untouched("lse", out.lse));

  const SparseDecodeOutputs again = make_sparse_decode_outputs(c);
  ASSERT_NO_THROW(run(again));
  EXPECT_TRUE(
      bytes_equal("out, second run", out.out.bytes(), again.out.bytes(), out.out.storage_bytes()));
  EXPECT_TRUE(
      bytes_equal("lse, second run", out.lse.bytes(), again.lse.bytes(), out.lse.storage_bytes()));
  EXPECT_TRUE(dev.inputs_unchanged({&out.out, &out.lse}));
}

class SparseDecodeGpu : public ::testing::TestWithParam<SparseDecodeCase> {};

TEST_P(SparseDecodeGpu, MatchesFloat64ReferenceAndIsDeterministic) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  check_decode_case(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Table, SparseDecodeGpu,
                         ::testing::ValuesIn(cases_for_tier(sparse_decode_cases())), CaseName());
INSTANTIATE_TEST_SUITE_P(GpuShapes, SparseDecodeGpu,
                         ::testing::ValuesIn(cases_for_tier(gpu_sparse_decode_cases())),
                         CaseName());

// ---- sparse prefill --------------------------------------------------------------------------

void check_prefill_case(const SparsePrefillCase& c) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(c.describe() + " " + seed_note(rng.seed()));
  const SparsePrefillInputs in = make_sparse_prefill_inputs(c, rng);
  const SparsePrefillOutputs out = make_sparse_prefill_outputs(c);
  DeviceMirror dev;
  const SparsePrefillParams p = sparse_prefill_params(c, in, out, dev.view_fn());

  auto run = [&](const SparsePrefillOutputs& into) {
    dev.poison(out.out);
    dev.poison(out.max_logits);
    dev.poison(out.lse);
    sparse_prefill(p);
    sync_device();
    dev.download(out.out, into.out);
    dev.download(out.max_logits, into.max_logits);
    dev.download(out.lse, into.lse);
  };
  ASSERT_NO_THROW(run(out));
  EXPECT_TRUE(check_sparse_prefill(c, sparse_prefill_reference(c, in), out));
  EXPECT_TRUE(gaps_untouched("out", out.out));
  EXPECT_TRUE(gaps_untouched("max_logits", out.max_logits));
  EXPECT_TRUE(gaps_untouched("lse", out.lse));

  const SparsePrefillOutputs again = make_sparse_prefill_outputs(c);
  ASSERT_NO_THROW(run(again));
  EXPECT_TRUE(
      bytes_equal("out, second run", out.out.bytes(), again.out.bytes(), out.out.storage_bytes()));
  EXPECT_TRUE(bytes_equal("max_logits, second run", out.max_logits.bytes(),
                          again.max_logits.bytes(), out.max_logits.storage_bytes()));
  EXPECT_TRUE(
      bytes_equal("lse, second run", out.lse.bytes(), again.lse.bytes(), out.lse.storage_bytes()));
  EXPECT_TRUE(dev.inputs_unchanged({&out.out, &out.max_logits, &out.lse}));
}

class SparsePrefillGpu : public ::testing::TestWithParam<SparsePrefillCase> {};

TEST_P(SparsePrefillGpu, MatchesFloat64ReferenceAndIsDeterministic) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  check_prefill_case(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Table, SparsePrefillGpu,
                         ::testing::ValuesIn(cases_for_tier(sparse_prefill_cases())), CaseName());
INSTANTIATE_TEST_SUITE_P(GpuShapes, SparsePrefillGpu,
                         ::testing::ValuesIn(cases_for_tier(gpu_sparse_prefill_cases())),
                         CaseName());

// ---- opt-in kernel variants (environment switches) --------------------------------------------

// Kernels that are opt-in until measured run through the same cases with their switches set for
// the calls: the split over the keys (FLASHMLA_SPARSE_SPLIT: a cluster of 2-8 CTAs per work
// item, folded through distributed shared memory; a forced split larger than an item's key tiles
// is clamped, and items with fewer entries leave some CTAs of a cluster empty) and the producer
// kernel (FLASHMLA_SPARSE_PRODUCER=1, sparse decode: a third warpgroup gathers and dequantizes),
// also with the integer dequantization, and the seesaw kernel (FLASHMLA_SPARSE_SEESAW=1, sparse
// prefill and V3.2 sparse decode: the dense pair kernel's two-block step with a gather or
// dequantizing producer; MODEL1 cases take the plain kernel under the switch). The table rows take
// every variant, the quick GPU-sized rows a few (prefill's split only below
// kQuickPrefillVariantWork).
struct Variant {
  std::string tag;
  std::vector<std::pair<std::string, std::string>> env;
};

template <typename Case>
struct VariantCase {
  Case c;
  Variant v;
  std::string name() const { return c.name() + "_" + v.tag; }
};

// Every case with every variant; cases whose float64 reference costs more than `max_work`
// multiply-adds left out (the quick tier's budget).
template <typename Case>
std::vector<VariantCase<Case>> with_variants(const std::vector<Case>& cases,
                                             const std::vector<Variant>& variants,
                                             double max_work = 1e300) {
  std::vector<VariantCase<Case>> out;
  for (const Case& c : cases)
    if (reference_work(c) <= max_work)
      for (const Variant& v : variants) out.push_back({c, v});
  return out;
}
// The prefill GPU-sized rows the variants take in the quick tier (the cheaper half).
constexpr double kQuickPrefillVariantWork = 1.5e9;

const Variant kSplit2{"split_2", {{"FLASHMLA_SPARSE_SPLIT", "2"}}};
const Variant kSplit8{"split_8", {{"FLASHMLA_SPARSE_SPLIT", "8"}}};
const Variant kSplitAuto{"split_auto", {{"FLASHMLA_SPARSE_SPLIT", "auto"}}};
const Variant kProducer{"producer", {{"FLASHMLA_SPARSE_PRODUCER", "1"}}};
const Variant kProducerBits{"producer_bits",
                            {{"FLASHMLA_SPARSE_PRODUCER", "1"}, {"FLASHMLA_SPARSE_DEQUANT", "bits"}}};
const Variant kBadSplit{"bad_split", {{"FLASHMLA_SPARSE_SPLIT", "3"}}};
const Variant kSeesaw{"seesaw", {{"FLASHMLA_SPARSE_SEESAW", "1"}}};
const std::vector<Variant> kDecodeTableVariants = {kSplit2, kSplit8, kSplitAuto, kProducer,
                                                   kProducerBits, kSeesaw};
const std::vector<Variant> kDecodeShapeVariants = {kSplit8, kProducer, kSeesaw};
const std::vector<Variant> kPrefillTableVariants = {kSplit2, kSplit8, kSplitAuto, kSeesaw};
const std::vector<Variant> kPrefillShapeVariants = {kSplit8};  // the cheaper rows only
const std::vector<Variant> kPrefillShapeVariantsAll = {kSeesaw};  // every quick row

class SparseDecodeVariantGpu : public ::testing::TestWithParam<VariantCase<SparseDecodeCase>> {};

TEST_P(SparseDecodeVariantGpu, MatchesFloat64ReferenceAndIsDeterministic) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const ScopedEnv env(GetParam().v.env);
  check_decode_case(GetParam().c);
}

INSTANTIATE_TEST_SUITE_P(Table, SparseDecodeVariantGpu,
                         ::testing::ValuesIn(with_variants(cases_for_tier(sparse_decode_cases()),
                                                           kDecodeTableVariants)),
                         CaseName());
INSTANTIATE_TEST_SUITE_P(
    GpuShapes, SparseDecodeVariantGpu,
    ::testing::ValuesIn(with_variants(cases_for_tier(gpu_sparse_decode_cases(), Tier::kQuick),
                                      kDecodeShapeVariants)),
    CaseName());

class SparsePrefillVariantGpu : public ::testing::TestWithParam<VariantCase<SparsePrefillCase>> {};

TEST_P(SparsePrefillVariantGpu, MatchesFloat64ReferenceAndIsDeterministic) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const ScopedEnv env(GetParam().v.env);
  check_prefill_case(GetParam().c);
}

INSTANTIATE_TEST_SUITE_P(Table, SparsePrefillVariantGpu,
                         ::testing::ValuesIn(with_variants(cases_for_tier(sparse_prefill_cases()),
                                                           kPrefillTableVariants)),
                         CaseName());
INSTANTIATE_TEST_SUITE_P(
    GpuShapes, SparsePrefillVariantGpu,
    ::testing::ValuesIn(with_variants(cases_for_tier(gpu_sparse_prefill_cases(), Tier::kQuick),
                                      kPrefillShapeVariants, kQuickPrefillVariantWork)),
    CaseName());
INSTANTIATE_TEST_SUITE_P(
    GpuShapesAll, SparsePrefillVariantGpu,
    ::testing::ValuesIn(with_variants(cases_for_tier(gpu_sparse_prefill_cases(), Tier::kQuick),
                                      kPrefillShapeVariantsAll)),
    CaseName());

// A bad FLASHMLA_SPARSE_SPLIT is a clear error naming the variable, not a silent default. The
// CUDA backend's launcher reads it, so this needs a device too.
TEST(SparseSplitEnvGpu, BadValueIsAClearError) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const SparseDecodeCase c = cases_for_tier(gpu_sparse_decode_cases(), Tier::kQuick).front();
  Rng rng(fresh_seed());
  const SparseDecodeInputs in = make_sparse_decode_inputs(c, rng);
  const SparseDecodeOutputs out = make_sparse_decode_outputs(c);
  DeviceMirror dev;
  const SparseDecodeParams p = sparse_decode_params(c, in, out, dev.view_fn());
  const ScopedEnv split(kBadSplit.env);
  try {
    sparse_decode(p);
    ADD_FAILURE() << "FLASHMLA_SPARSE_SPLIT=3 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("FLASHMLA_SPARSE_SPLIT='3'"), std::string::npos)
        << e.what();
  }
}

// ---- budget ----------------------------------------------------------------------------------

// The quick tier's float64 reference work, the bulk of its run time, stays under 6e10
// multiply-adds (the table rows and the GPU-sized ones, with the variant suites' repeats), so that
// the quick GPU run takes a minute or two on 16 cores (the variant suites are most of it: drop
// the variants that lose their A/B once measured). Runs without a GPU.
TEST(SparseGpuCases, QuickTierFitsReferenceBudget) {
  double decode = 0, prefill = 0;
  for (const auto* cases : {&sparse_decode_cases(), &gpu_sparse_decode_cases()})
    for (const SparseDecodeCase& c : cases_for_tier(*cases, Tier::kQuick))
      decode += reference_work(c);
  for (const auto* cases : {&sparse_prefill_cases(), &gpu_sparse_prefill_cases()})
    for (const SparsePrefillCase& c : cases_for_tier(*cases, Tier::kQuick))
      prefill += reference_work(c);
  // The variant suites run the rows again, once per variant.
  for (const SparseDecodeCase& c : cases_for_tier(sparse_decode_cases(), Tier::kQuick))
    decode += kDecodeTableVariants.size() * reference_work(c);
  for (const SparseDecodeCase& c : cases_for_tier(gpu_sparse_decode_cases(), Tier::kQuick))
    decode += kDecodeShapeVariants.size() * reference_work(c);
  for (const SparsePrefillCase& c : cases_for_tier(sparse_prefill_cases(), Tier::kQuick))
    prefill += kPrefillTableVariants.size() * reference_work(c);
  for (const SparsePrefillCase& c : cases_for_tier(gpu_sparse_prefill_cases(), Tier::kQuick))
    prefill += (reference_work(c) <= kQuickPrefillVariantWork ? kPrefillShapeVariants.size() : 0) *
                   reference_work(c) +
               kPrefillShapeVariantsAll.size() * reference_work(c);
  EXPECT_LE(decode + prefill, 6e10) << "quick-tier reference multiply-adds: decode " << decode
                                    << ", prefill " << prefill << "; move cases to the full tier";
}

}  // namespace
}  // namespace flashmla::test
