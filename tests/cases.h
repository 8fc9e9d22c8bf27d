// The test-case tables: one table per operation, shared by the CPU suite (tests/*.cpp) and the
// GPU suites (tests/gpu/). Corner cases are data: awkward head counts, page sizes that do not
// divide 64, zero-length requests, lonely causal rows, all-invalid index rows, sinks, strided
// views, NaN garbage wherever the kernels must not look.
//
// Tiers: kQuick runs in CI on 2 CPU cores in a few minutes in all; kFull adds the large shapes a
// GPU run can afford (production head counts at long contexts). FLASHMLA_TEST_TIER=quick|full
// selects (default quick); `full` runs both tiers.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "flashmla/tensor.h"

namespace flashmla::test {

enum class Tier { kQuick, kFull };
// FLASHMLA_TEST_TIER: "full" -> kFull; unset or "quick" -> kQuick; anything else is an error
// (std::invalid_argument), so a typo does not silently run the small tier.
Tier selected_tier();
const char* tier_name(Tier tier);

// How attn_sink is given (sparse operations).
enum class Sink {
  kNone,
  kFinite,   // random values around typical lse values, so the factor is far from 0 and 1
  kWithInf,  // finite values, with +inf on some heads (those heads output 0)
};
const char* sink_name(Sink sink);

// ---- dense decode (SPEC.md §2) ----
struct DenseDecodeCase {
  Tier tier = Tier::kQuick;
  int64_t b = 1;
  int s_q = 1;
  int h_q = 1;
  int h_kv = 1;
  int d_qk = 576;
  int page = 64;
  DType dtype = DType::kBFloat16;
  bool causal = false;
  std::vector<int> seqlens;  // explicit per-request lengths (size b); empty: random lengths
  int max_seqlen = 0;        // random lengths are uniform in [0, max_seqlen], one of them 0
  bool strided = false;      // q, k_cache (token and block strides), block_table, out, lse padded
  int unused_blocks = 2;     // pages no request uses (NaN-filled)
  std::optional<float> softmax_scale;  // default d_qk^-0.5
  int num_parts = 0;  // 0: the plan's choice; > 0 forces the split count (CPU tests)
  int id = 0;         // position in the table (set by the table)

  std::string name() const;      // unique gtest name
  std::string describe() const;  // one line, every field
};

// ---- sparse decode over FP8 caches (SPEC.md §3, §4) ----
struct SparseScopeSpec {
  int page = 64;
  int64_t tokens = 256;  // cache capacity in tokens (rounded up to whole pages)
  int topk = 64;
  bool topk_length = false;  // random topk_length[r] in [0, topk], one request at 0 when b > 1
  int block_pad = 0;         // extra bytes per page block beyond the minimum (multiple of 16)
};

struct SparseDecodeCase {
  Tier tier = Tier::kQuick;
  int64_t b = 1;
  int s_q = 1;
  int h_q = 64;
  int d_qk = 576;  // 576: V3.2 layout; 512: MODEL1
  SparseScopeSpec main;
  std::optional<SparseScopeSpec> extra;  // second scope under the same softmax
  double invalid_frac = 0.0;             // fraction of entries that are invalid
  bool wild_invalid = false;      // invalid entries also take out-of-range values, not only -1
  bool all_invalid_rows = false;  // some (r, i) rows have no valid entry in any scope
  Sink sink = Sink::kNone;
  bool strided_q = false;
  std::optional<float> softmax_scale;
  int id = 0;

  std::string name() const;
  std::string describe() const;
};

// ---- sparse prefill (SPEC.md §5) ----
struct SparsePrefillCase {
  Tier tier = Tier::kQuick;
  int64_t s_q = 1;
  int64_t s_kv = 64;
  int h_q = 64;
  int h_kv = 1;
  int d_qk = 576;
  int topk = 64;
  double invalid_frac = 0.0;
  bool wild_invalid = false;  // invalid entries are also >= s_kv or < -1, not only -1
  bool all_invalid_rows = false;
  bool topk_length = false;
  Sink sink = Sink::kNone;
  bool strided = false;   // q, kv, out, max_logits, lse padded
  float sm_scale = 0.0f;  // 0: d_qk^-0.5
  int id = 0;

  std::string name() const;
  std::string describe() const;
};

// ---- dense MHA prefill, varlen (SPEC.md §6) ----
struct MhaVarlenCase {
  Tier tier = Tier::kQuick;
  int h_q = 1;
  int h_kv = 1;
  int d_qk = 128;
  DType dtype = DType::kBFloat16;
  bool causal = false;
  std::vector<int> q_lens;  // per sequence; sizes of q_lens and k_lens agree
  std::vector<int> k_lens;
  int pad_rows = 0;             // rows of q/k/v/out after the last sequence (NaN, not part of any)
  bool strided = false;         // q, k, v, out padded
  bool lse_transposed = false;  // lse as the transposed view of a [total_q, h_q] buffer
  std::optional<float> softmax_scale;
  int id = 0;

  std::string name() const;
  std::string describe() const;
};

// gtest prints a failing parameter through these (the one-line description).
void PrintTo(const DenseDecodeCase& c, std::ostream* os);
void PrintTo(const SparseDecodeCase& c, std::ostream* os);
void PrintTo(const SparsePrefillCase& c, std::ostream* os);
void PrintTo(const MhaVarlenCase& c, std::ostream* os);

// The whole tables (every tier).
const std::vector<DenseDecodeCase>& dense_decode_cases();
const std::vector<SparseDecodeCase>& sparse_decode_cases();
const std::vector<SparsePrefillCase>& sparse_prefill_cases();
const std::vector<MhaVarlenCase>& mha_varlen_cases();

// The cases that run at `tier`: kQuick -> the quick ones, kFull -> all.
template <typename Case>
std::vector<Case> cases_for_tier(const std::vector<Case>& all, Tier tier = selected_tier()) {
  std::vector<Case> out;
  for (const Case& c : all)
    if (tier == Tier::kFull || c.tier == Tier::kQuick) out.push_back(c);
  return out;
}

// gtest's name generator for INSTANTIATE_TEST_SUITE_P.
struct CaseName {
  template <typename Info>
  std::string operator()(const Info& info) const {
    return info.param.name();
  }
};

}  // namespace flashmla::test
