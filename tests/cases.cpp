// The case tables (see cases.h). Quick cases are listed by hand, each for a reason given beside
// it; full-tier cases are generated as a sweep over the shapes SPEC.md names.
#include "cases.h"

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace flashmla::test {

Tier selected_tier() {
  const char* env = std::getenv("FLASHMLA_TEST_TIER");
  if (!env || !*env || std::strcmp(env, "quick") == 0) return Tier::kQuick;
  if (std::strcmp(env, "full") == 0) return Tier::kFull;
  throw std::invalid_argument(std::string("FLASHMLA_TEST_TIER must be quick or full, got '") +
                              env + "'");
}

const char* tier_name(Tier tier) { return tier == Tier::kQuick ? "quick" : "full"; }

const char* sink_name(Sink sink) {
  switch (sink) {
    case Sink::kNone: return "none";
    case Sink::kFinite: return "finite";
    case Sink::kWithInf: return "with_inf";
  }
  return "?";
}

namespace {

const char* short_dtype(DType d) {
  return d == DType::kFloat16 ? "fp16" : d == DType::kBFloat16 ? "bf16" : "other";
}

std::string lens_str(const std::vector<int>& v) {
  std::string s = "{";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "}";
}

std::string id_prefix(int id) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "c%03d", id);
  return buf;
}

template <typename Case>
std::vector<Case> numbered(std::vector<Case> v) {
  for (size_t i = 0; i < v.size(); ++i) v[i].id = static_cast<int>(i);
  return v;
}

// Generated sweep cases join the quick tier when they are cheap: at most this many
// multiply-adds of attention (well under a second of float64 reference on 2 cores).
constexpr double kQuickWork = 6e8;

constexpr Tier Q = Tier::kQuick;
constexpr Tier F = Tier::kFull;
constexpr DType BF16 = DType::kBFloat16;
constexpr DType FP16 = DType::kFloat16;

// (h_q, h_kv) pairs of SPEC.md §2 with h_q % h_kv == 0.
const std::vector<std::pair<int, int>>& head_pairs() {
  static const std::vector<std::pair<int, int>> pairs = [] {
    std::vector<std::pair<int, int>> p;
    for (int h_q : {1, 3, 9, 63, 64, 126, 128})
      for (int h_kv : {1, 2, 3, 8})
        if (h_q % h_kv == 0) p.emplace_back(h_q, h_kv);
    return p;
  }();
  return pairs;
}

}  // namespace

// ---- names ------------------------------------------------------------------------------------

std::string DenseDecodeCase::name() const {
  std::ostringstream os;
  os << id_prefix(id) << "_b" << b << "_sq" << s_q << "_h" << h_q << "x" << h_kv << "_d" << d_qk
     << "_p" << page << "_" << short_dtype(dtype) << (causal ? "_causal" : "")
     << (strided ? "_strided" : "") << (num_parts ? "_parts" + std::to_string(num_parts) : "");
  return os.str();
}

std::string DenseDecodeCase::describe() const {
  std::ostringstream os;
  os << "dense_decode case " << id << " [" << tier_name(tier) << "]: b=" << b << " s_q=" << s_q
     << " h_q=" << h_q << " h_kv=" << h_kv << " d_qk=" << d_qk << " page=" << page
     << " dtype=" << short_dtype(dtype) << " causal=" << causal << " seqlens="
     << (seqlens.empty() ? "random[0," + std::to_string(max_seqlen) + "]" : lens_str(seqlens))
     << " strided=" << strided << " unused_blocks=" << unused_blocks << " softmax_scale="
     << (softmax_scale ? std::to_string(*softmax_scale) : "default")
     << " num_parts=" << (num_parts ? std::to_string(num_parts) : "plan");
  return os.str();
}

namespace {
std::string scope_str(const SparseScopeSpec& s) {
  std::ostringstream os;
  os << "{page=" << s.page << " tokens=" << s.tokens << " topk=" << s.topk
     << " topk_length=" << s.topk_length << " block_pad=" << s.block_pad << "}";
  return os.str();
}
}  // namespace

std::string SparseDecodeCase::name() const {
  std::ostringstream os;
  os << id_prefix(id) << "_b" << b << "_sq" << s_q << "_h" << h_q << "_d" << d_qk << "_p"
     << main.page << "_topk" << main.topk << (extra ? "_extra" + std::to_string(extra->topk) : "")
     << (sink != Sink::kNone ? std::string("_sink_") + sink_name(sink) : "")
     << (all_invalid_rows ? "_emptyrows" : "");
  return os.str();
}

std::string SparseDecodeCase::describe() const {
  std::ostringstream os;
  os << "sparse_decode case " << id << " [" << tier_name(tier) << "]: b=" << b << " s_q=" << s_q
     << " h_q=" << h_q << " d_qk=" << d_qk << (d_qk == 576 ? " (V3.2)" : " (MODEL1)")
     << " main=" << scope_str(main) << " extra=" << (extra ? scope_str(*extra) : "none")
     << " invalid_frac=" << invalid_frac << " wild_invalid=" << wild_invalid
     << " all_invalid_rows=" << all_invalid_rows << " sink=" << sink_name(sink)
     << " strided_q=" << strided_q << " softmax_scale="
     << (softmax_scale ? std::to_string(*softmax_scale) : "default");
  return os.str();
}

std::string SparsePrefillCase::name() const {
  std::ostringstream os;
  os << id_prefix(id) << "_sq" << s_q << "_skv" << s_kv << "_h" << h_q << "x" << h_kv << "_d"
     << d_qk << "_topk" << topk
     << (sink != Sink::kNone ? std::string("_sink_") + sink_name(sink) : "")
     << (strided ? "_strided" : "");
  return os.str();
}

std::string SparsePrefillCase::describe() const {
  std::ostringstream os;
  os << "sparse_prefill case " << id << " [" << tier_name(tier) << "]: s_q=" << s_q
     << " s_kv=" << s_kv << " h_q=" << h_q << " h_kv=" << h_kv << " d_qk=" << d_qk
     << " topk=" << topk << " invalid_frac=" << invalid_frac << " wild_invalid=" << wild_invalid
     << " all_invalid_rows=" << all_invalid_rows << " topk_length=" << topk_length
     << " sink=" << sink_name(sink) << " strided=" << strided << " sm_scale="
     << (sm_scale > 0 ? std::to_string(sm_scale) : "d_qk^-0.5");
  return os.str();
}

std::string MhaVarlenCase::name() const {
  std::ostringstream os;
  os << id_prefix(id) << "_b" << q_lens.size() << "_h" << h_q << "x" << h_kv << "_d" << d_qk
     << "_" << short_dtype(dtype) << (causal ? "_causal" : "") << (strided ? "_strided" : "");
  return os.str();
}

std::string MhaVarlenCase::describe() const {
  std::ostringstream os;
  os << "mha_varlen case " << id << " [" << tier_name(tier) << "]: h_q=" << h_q
     << " h_kv=" << h_kv << " d_qk=" << d_qk << " dtype=" << short_dtype(dtype)
     << " causal=" << causal << " q_lens=" << lens_str(q_lens) << " k_lens=" << lens_str(k_lens)
     << " pad_rows=" << pad_rows << " strided=" << strided << " lse_transposed=" << lse_transposed
     << " softmax_scale=" << (softmax_scale ? std::to_string(*softmax_scale) : "default");
  return os.str();
}

void PrintTo(const DenseDecodeCase& c, std::ostream* os) { *os << c.describe(); }
void PrintTo(const SparseDecodeCase& c, std::ostream* os) { *os << c.describe(); }
void PrintTo(const SparsePrefillCase& c, std::ostream* os) { *os << c.describe(); }
void PrintTo(const MhaVarlenCase& c, std::ostream* os) { *os << c.describe(); }

// ---- dense decode -----------------------------------------------------------------------------

const std::vector<DenseDecodeCase>& dense_decode_cases() {
  static const std::vector<DenseDecodeCase> table = numbered([] {
    std::vector<DenseDecodeCase> v = {
        // The smallest problem: one token.
        {.tier = Q, .b = 1, .h_q = 1, .page = 64, .seqlens = {1}},
        // Page size 1 (every token its own block) and a zero-length request.
        {.tier = Q, .b = 3, .h_q = 3, .page = 1, .seqlens = {0, 5, 17}},
        // GQA 9/3, page 2, causal with s_q > s_k on the first request (query 0 lonely).
        {.tier = Q, .b = 2, .s_q = 2, .h_q = 9, .h_kv = 3, .page = 2, .causal = true,
         .seqlens = {1, 7}},
        // d_qk 512, fp16, page 61 (does not divide the 64-token tile), causal MTP s_q = 4.
        {.tier = Q, .b = 4, .s_q = 4, .h_q = 64, .d_qk = 512, .page = 61, .dtype = FP16,
         .causal = true, .max_seqlen = 200},
        // DeepSeek-V3 head count, strided views, one empty request.
        {.tier = Q, .b = 2, .h_q = 128, .page = 64, .seqlens = {0, 300}, .strided = true},
        // Odd head count, page 69, fp16, non-causal s_q = 3.
        {.tier = Q, .b = 3, .s_q = 3, .h_q = 63, .page = 69, .dtype = FP16,
         .seqlens = {70, 138, 3}},
        // A page larger than a tile (576), GQA 126/2, causal.
        {.tier = Q, .b = 2, .s_q = 2, .h_q = 126, .h_kv = 2, .d_qk = 512, .page = 576,
         .causal = true, .seqlens = {600, 2}},
        // h_kv = 8 and an explicit softmax scale.
        {.tier = Q, .b = 2, .h_q = 64, .h_kv = 8, .page = 64, .seqlens = {129, 64},
         .softmax_scale = 0.2f},
        // Every request empty: every row lonely.
        {.tier = Q, .b = 5, .s_q = 2, .h_q = 3, .h_kv = 3, .d_qk = 512, .causal = true,
         .seqlens = {0, 0, 0, 0, 0}},
        // Many requests of random length: the schedule cuts requests across parts.
        {.tier = Q, .b = 16, .h_q = 1, .page = 64, .max_seqlen = 2000},
        // One long request split over every part, then combined.
        {.tier = Q, .b = 1, .s_q = 2, .h_q = 3, .page = 64, .dtype = FP16, .seqlens = {5000}},
        // Causal lonely-row sweep: s_k = 0..5 against s_q = 4, strided.
        {.tier = Q, .b = 6, .s_q = 4, .h_q = 9, .h_kv = 3, .page = 2, .causal = true,
         .seqlens = {0, 1, 2, 3, 4, 5}, .strided = true},
        // Forced split counts: 132 parts (H100 SMs) for three requests, 7, and 1.
        {.tier = Q, .b = 3, .h_q = 64, .page = 64, .seqlens = {700, 0, 64}, .num_parts = 132},
        {.tier = Q, .b = 4, .s_q = 2, .h_q = 3, .page = 61, .causal = true, .max_seqlen = 500,
         .num_parts = 7},
        {.tier = Q, .b = 3, .h_q = 9, .page = 69, .max_seqlen = 300, .num_parts = 1},
        // s_q up to 8 (MTP depths past 4), causal: 8 x 16 heads on page 64; s_q 7 with GQA 9/3
        // on page 61, lengths shorter than s_q among them.
        {.tier = Q, .b = 3, .s_q = 8, .h_q = 16, .page = 64, .causal = true,
         .seqlens = {300, 8, 1000}},
        {.tier = Q, .b = 4, .s_q = 7, .h_q = 9, .h_kv = 3, .page = 61, .causal = true,
         .seqlens = {3, 7, 130, 0}},
        // fp16, h_kv = 8, d_qk 512, page 69, causal s_q = 3, strided.
        {.tier = Q, .b = 2, .s_q = 3, .h_q = 128, .h_kv = 8, .d_qk = 512, .page = 69,
         .dtype = FP16, .causal = true, .seqlens = {130, 2}, .strided = true},
        // Exactly one tile and one token more.
        {.tier = Q, .b = 2, .s_q = 1, .h_q = 126, .h_kv = 3, .page = 64, .seqlens = {64, 65}},
    };
    // Full tier: every (h_q, h_kv) pair at every page size, the other knobs cycling.
    const int pages[] = {1, 2, 61, 64, 69, 576};
    int k = 0;
    for (auto [h_q, h_kv] : head_pairs()) {
      for (int page : pages) {
        DenseDecodeCase c;
        c.tier = F;
        c.h_q = h_q;
        c.h_kv = h_kv;
        c.page = page;
        c.s_q = 1 + k % 4;
        c.causal = k % 2 == 1;
        c.d_qk = k % 3 == 2 ? 512 : 576;
        c.dtype = k % 5 == 4 ? FP16 : BF16;
        c.b = 2 + k % 7;
        c.strided = k % 4 == 3;
        if (k % 3 == 0) {
          c.seqlens.assign(c.b, 1024 + k);  // fixed length
        } else {
          c.max_seqlen = page == 1 ? 700 : 2048;
        }
        const double avg_len = c.seqlens.empty() ? c.max_seqlen / 2.0 : c.seqlens[0];
        const double work = double(c.b) * c.s_q * c.h_q * avg_len * (c.d_qk + 512);
        c.tier = work <= kQuickWork ? Q : F;
        v.push_back(c);
        ++k;
      }
    }
    // Production shapes: compute-bound (s_q = 2) and a long context.
    v.push_back({.tier = F, .b = 8, .s_q = 2, .h_q = 128, .page = 64, .causal = true,
                 .max_seqlen = 4096});
    v.push_back({.tier = F, .b = 2, .s_q = 1, .h_q = 64, .page = 64, .seqlens = {32768, 17}});
    return v;
  }());
  return table;
}

// ---- sparse decode ----------------------------------------------------------------------------

const std::vector<SparseDecodeCase>& sparse_decode_cases() {
  static const std::vector<SparseDecodeCase> table = numbered([] {
    std::vector<SparseDecodeCase> v = {
        // Plain V3.2 decode, every index valid.
        {.tier = Q, .b = 1, .h_q = 64, .main = {.page = 64, .tokens = 256, .topk = 64}},
        // Page 2, topk_length, 30% invalid, finite sink, h_q 128, MTP s_q = 2.
        {.tier = Q, .b = 2, .s_q = 2, .h_q = 128,
         .main = {.page = 2, .tokens = 400, .topk = 100, .topk_length = true},
         .invalid_frac = 0.3, .sink = Sink::kFinite},
        // MODEL1 with an odd head count, page 61 and a padded block stride, plus an extra scope
        // with page 576 and its own topk_length.
        {.tier = Q, .b = 3, .h_q = 3, .d_qk = 512,
         .main = {.page = 61, .tokens = 500, .topk = 37, .block_pad = 48},
         .extra = SparseScopeSpec{.page = 576, .tokens = 600, .topk = 50, .topk_length = true}},
        // MODEL1 page 1, rows with nothing valid, sinks with +inf heads.
        {.tier = Q, .b = 2, .s_q = 3, .h_q = 64, .d_qk = 512,
         .main = {.page = 1, .tokens = 64, .topk = 16}, .invalid_frac = 0.2,
         .all_invalid_rows = true, .sink = Sink::kWithInf},
        // Page 576 with a padded block stride, strided q, out-of-range invalid indices.
        {.tier = Q, .b = 2, .h_q = 128,
         .main = {.page = 576, .tokens = 1152, .topk = 300, .block_pad = 32},
         .invalid_frac = 0.25, .wild_invalid = true, .strided_q = true},
        // Page 69, topk_length, an extra scope, an explicit softmax scale.
        {.tier = Q, .b = 1, .s_q = 4, .h_q = 9,
         .main = {.page = 69, .tokens = 300, .topk = 128, .topk_length = true},
         .extra = SparseScopeSpec{.page = 64, .tokens = 128, .topk = 20},
         .softmax_scale = 0.05f},
        // MODEL1, both scopes with topk_length and padding, empty rows, wild invalid entries.
        {.tier = Q, .b = 4, .s_q = 2, .h_q = 63, .d_qk = 512,
         .main = {.page = 64, .tokens = 1000, .topk = 200, .topk_length = true, .block_pad = 16},
         .extra = SparseScopeSpec{.page = 2, .tokens = 50, .topk = 8, .topk_length = true,
                                  .block_pad = 16},
         .invalid_frac = 0.4, .wild_invalid = true, .all_invalid_rows = true,
         .sink = Sink::kFinite},
        // topk larger than the cache: every slot chosen several times.
        {.tier = Q, .b = 2, .h_q = 1, .main = {.page = 64, .tokens = 128, .topk = 512}},
        // V3.2, h_q 128, s_q 3, extra scope on page 1.
        {.tier = Q, .b = 1, .s_q = 3, .h_q = 128,
         .main = {.page = 64, .tokens = 640, .topk = 128, .topk_length = true},
         .extra = SparseScopeSpec{.page = 1, .tokens = 40, .topk = 16}, .invalid_frac = 0.1,
         .sink = Sink::kWithInf},
    };
    // Full tier: production shapes over page sizes and both layouts.
    const int pages[] = {2, 61, 64, 69, 576};
    const int topks[] = {64, 512, 2048};
    int k = 0;
    for (int d_qk : {576, 512}) {
      for (int h_q : {64, 128}) {
        for (int topk : topks) {
          SparseDecodeCase c;
          c.tier = F;
          c.d_qk = d_qk;
          c.h_q = h_q;
          c.b = 2 + k % 3;
          c.s_q = 1 + k % 3;
          c.main = {.page = pages[k % 5], .tokens = 3 * topk + 100, .topk = topk,
                    .topk_length = k % 2 == 0, .block_pad = 16 * (k % 3)};
          if (k % 3 == 1)
            c.extra = SparseScopeSpec{.page = pages[(k + 2) % 5], .tokens = 300, .topk = 64,
                                      .topk_length = k % 4 == 1};
          c.invalid_frac = 0.1 * (k % 4);
          c.wild_invalid = k % 2 == 1;
          c.all_invalid_rows = k % 5 == 2;
          c.sink = static_cast<Sink>(k % 3);
          c.strided_q = k % 4 == 3;
          const double work = double(c.b) * c.s_q * c.h_q *
                              (c.main.topk + (c.extra ? c.extra->topk : 0)) * (c.d_qk + 512);
          c.tier = work <= kQuickWork ? Q : F;
          v.push_back(c);
          ++k;
        }
      }
    }
    v.push_back({.tier = F, .b = 2, .s_q = 2, .h_q = 128,
                 .main = {.page = 64, .tokens = 40000, .topk = 16384, .topk_length = true}});
    return v;
  }());
  return table;
}

// ---- sparse prefill ---------------------------------------------------------------------------

const std::vector<SparsePrefillCase>& sparse_prefill_cases() {
  static const std::vector<SparsePrefillCase> table = numbered([] {
    std::vector<SparsePrefillCase> v = {
        // Plain, every index valid.
        {.tier = Q, .s_q = 5, .s_kv = 100, .h_q = 64, .topk = 64},
        // d_qk 512, h_q 128, half invalid, topk_length, finite sink.
        {.tier = Q, .s_q = 3, .s_kv = 1000, .h_q = 128, .d_qk = 512, .topk = 256,
         .invalid_frac = 0.5, .topk_length = true, .sink = Sink::kFinite},
        // Tiny kv: out-of-range and negative indices, empty rows, +inf sinks.
        {.tier = Q, .s_q = 4, .s_kv = 7, .h_q = 64, .topk = 16, .invalid_frac = 0.3,
         .wild_invalid = true, .all_invalid_rows = true, .sink = Sink::kWithInf},
        // Odd head count, strided views, explicit sm_scale.
        {.tier = Q, .s_q = 6, .s_kv = 300, .h_q = 3, .topk = 40, .strided = true,
         .sm_scale = 0.1f},
        // Two kv heads.
        {.tier = Q, .s_q = 2, .s_kv = 64, .h_q = 64, .h_kv = 2, .d_qk = 512, .topk = 48,
         .invalid_frac = 0.1, .topk_length = true},
        // topk > s_kv: every row chosen several times.
        {.tier = Q, .s_q = 2, .s_kv = 33, .h_q = 128, .topk = 128, .sink = Sink::kFinite},
    };
    int k = 0;
    for (int d_qk : {576, 512}) {
      for (int h_q : {64, 128}) {
        for (int topk : {128, 512, 2048}) {
          SparsePrefillCase c;
          c.tier = F;
          c.d_qk = d_qk;
          c.h_q = h_q;
          c.topk = topk;
          c.s_q = 8 + k % 5;
          c.s_kv = topk * 2 + 37 * k;
          c.invalid_frac = 0.1 * (k % 3);
          c.wild_invalid = k % 2 == 0;
          c.all_invalid_rows = k % 4 == 1;
          c.topk_length = k % 3 == 2;
          c.sink = static_cast<Sink>(k % 3);
          c.strided = k % 5 == 4;
          const double work = double(c.s_q) * c.h_q * c.topk * (c.d_qk + 512);
          c.tier = work <= kQuickWork ? Q : F;
          v.push_back(c);
          ++k;
        }
      }
    }
    return v;
  }());
  return table;
}

// ---- dense MHA prefill ------------------------------------------------------------------------

const std::vector<MhaVarlenCase>& mha_varlen_cases() {
  static const std::vector<MhaVarlenCase> table = numbered([] {
    std::vector<MhaVarlenCase> v = {
        // d 192 causal with an empty query sequence and s_q < s_k.
        {.tier = Q, .h_q = 3, .h_kv = 1, .d_qk = 192, .causal = true, .q_lens = {1, 17, 0},
         .k_lens = {5, 17, 3}},
        // fp16, GQA 9/3, non-causal, padding rows after the last sequence, strided.
        {.tier = Q, .h_q = 9, .h_kv = 3, .d_qk = 128, .dtype = FP16, .q_lens = {64, 33},
         .k_lens = {64, 100}, .pad_rows = 3, .strided = true},
        // s_q > s_k causal: the first queries are lonely.
        {.tier = Q, .h_q = 1, .h_kv = 1, .causal = true, .q_lens = {5}, .k_lens = {2}},
        // 64/8 heads, an empty k sequence, transposed lse view.
        {.tier = Q, .h_q = 64, .h_kv = 8, .d_qk = 192, .causal = true, .q_lens = {40, 1, 0, 20},
         .k_lens = {40, 300, 0, 20}, .lse_transposed = true},
        // fp16 126/2 causal with s_q > s_k, padding rows.
        {.tier = Q, .h_q = 126, .h_kv = 2, .dtype = FP16, .causal = true, .q_lens = {8, 3},
         .k_lens = {3, 8}, .pad_rows = 1},
        // 128/8 non-causal, strided, transposed lse, explicit scale.
        {.tier = Q, .h_q = 128, .h_kv = 8, .d_qk = 192, .q_lens = {16}, .k_lens = {16},
         .strided = true, .lse_transposed = true, .softmax_scale = 0.3f},
        // 63/3 with a zero-length k on a non-empty q (every row lonely) next to a normal one.
        {.tier = Q, .h_q = 63, .h_kv = 3, .causal = false, .q_lens = {4, 9}, .k_lens = {0, 70}},
    };
    int k = 0;
    for (auto [h_q, h_kv] : head_pairs()) {
      MhaVarlenCase c;
      c.tier = F;
      c.h_q = h_q;
      c.h_kv = h_kv;
      c.d_qk = k % 2 ? 128 : 192;
      c.dtype = k % 3 == 2 ? FP16 : BF16;
      c.causal = k % 2 == 0;
      // Longer sequences where there are few heads.
      const int len = h_q <= 9 ? 1024 : 256;
      c.q_lens = {1 + 61 * k % 200, 129, 0, len};
      c.k_lens = {1 + 61 * k % 200 + k, 129, 17, len + 3 * k};
      c.pad_rows = k % 3;
      c.strided = k % 4 == 1;
      c.lse_transposed = k % 3 == 0;
      double work = 0;
      for (size_t r = 0; r < c.q_lens.size(); ++r) work += double(c.q_lens[r]) * c.k_lens[r];
      work *= double(c.h_q) * (c.d_qk + 128);
      c.tier = work <= kQuickWork ? Q : F;
      v.push_back(c);
      ++k;
    }
    return v;
  }());
  return table;
}

}  // namespace flashmla::test
