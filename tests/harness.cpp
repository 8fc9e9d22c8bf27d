// Per-operation harness: see harness.h.
#include "harness.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>

#include "core/decode_schedule.h"
#include "flashmla/fp8.h"

namespace flashmla::test {

TensorView host_view(const HostTensor& t) { return t.view(); }

// ---- tolerances ---------------------------------------------------------------------------------
//
// out is stored in bf16/fp16, so even an exact kernel is off by up to one rounding: u * |ref| with
// u the unit roundoff (2^-8 bf16, 2^-11 fp16). On top of that a GPU kernel multiplies P (rounded to
// the 16-bit type for the MMA) by V, which adds an absolute error of about u * |V| / sqrt(s_k)
// per element, largest at a handful of keys: with |V| ~ 0.1 (randn/10 inputs) about 5e-4 at 5
// sigma for bf16. Hence, elementwise:
//   bf16: rtol 2^-8 (one rounding) + atol 2^-10 (~1e-3, the P rounding),
//   fp16: rtol 2^-10 (two roundings) + atol 2^-12,
// and, over the whole tensor, FlashMLA's cosine difference <= 5e-6 (bf16) / 1e-6 (fp16), which an
// error hiding under atol in many elements would break. lse and max_logits are float32 sums of
// exact products (bf16 inputs): float32 accumulation leaves ~1e-7 absolute, so rtol 1e-5 with an
// atol 1e-6 for lse values near 0 (a single key: lse = its logit, ~0.01).
Tolerance out_tolerance(DType dtype) {
  if (dtype == DType::kFloat16) return {std::ldexp(1.0, -12), std::ldexp(1.0, -10)};
  return {std::ldexp(1.0, -10), std::ldexp(1.0, -8)};
}

Tolerance lse_tolerance() { return {1e-6, 1e-5}; }

double out_max_cosine_diff(DType dtype) { return dtype == DType::kFloat16 ? 1e-6 : 5e-6; }

namespace {

constexpr int kDimV = 512;

// Garbage an unused block-table entry may hold.
int32_t garbage_block(Rng& rng, int64_t num_blocks) {
  const int32_t choices[] = {-1, static_cast<int32_t>(num_blocks), INT32_MAX, INT32_MIN, -12345};
  return choices[rng.uniform_int(0, 4)];
}

// Invalid sparse index: -1, or with `wild` any value outside [0, limit).
int32_t invalid_index(Rng& rng, bool wild, int64_t limit) {
  if (!wild) return -1;
  const int32_t choices[] = {
      -1, -2, static_cast<int32_t>(limit), static_cast<int32_t>(limit + 7), INT32_MAX, INT32_MIN};
  return choices[rng.uniform_int(0, 5)];
}

// Random per-row lengths in [0, topk], one of them 0 and one topk when there are >= 2 / >= 3.
std::vector<int32_t> random_lengths(Rng& rng, int64_t n, int topk) {
  std::vector<int32_t> v(n);
  for (auto& x : v) x = static_cast<int32_t>(rng.uniform_int(0, topk));
  if (n >= 2) v[rng.uniform_int(0, n - 1)] = 0;
  if (n >= 3) v[0] = topk;
  return v;
}

HostTensor maybe_padded(DType dtype, std::vector<int64_t> shape, bool strided,
                        std::vector<int64_t> pad) {
  if (!strided) return HostTensor(dtype, std::move(shape));
  return HostTensor::padded(dtype, std::move(shape), std::move(pad));
}

HostTensor poisoned(HostTensor t) {
  t.poison();
  return t;
}

// Joins several checks into one result (all run, every failure reported).
class Checks {
 public:
  void add(const ::testing::AssertionResult& r) {
    if (!r) {
      ok_ = false;
      msg_ << "\n  " << r.message();
    }
  }
  void fail(const std::string& s) {
    ok_ = false;
    msg_ << "\n  " << s;
  }
  ::testing::AssertionResult result() const {
    if (ok_) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << msg_.str();
  }

 private:
  bool ok_ = true;
  std::ostringstream msg_;
};

// Rows of `out` (rows x d_v) whose reference lse is +inf (nothing attended) must be exactly 0.
void check_lonely_rows_zero(Checks& checks, const std::vector<double>& out, int d_v,
                            const std::vector<int64_t>& out_shape,
                            const std::function<bool(int64_t)>& lonely) {
  const int64_t rows = static_cast<int64_t>(out.size()) / d_v;
  int64_t bad = 0, first = -1;
  for (int64_t row = 0; row < rows; ++row) {
    if (!lonely(row)) continue;
    for (int c = 0; c < d_v; ++c)
      if (out[row * d_v + c] != 0.0) {
        if (first < 0) first = row * d_v + c;
        ++bad;
      }
  }
  if (bad)
    checks.fail("out: " + std::to_string(bad) +
                " elements of rows with nothing to attend are not exactly 0; first at " +
                index_str(first, out_shape) + " = " + std::to_string(out[first]));
}

// Checks out (+ cosine), lse and optionally max_logits against the reference.
::testing::AssertionResult check_attention(const naive::Attention& ref,
                                           const std::vector<double>& out,
                                           const std::vector<double>& lse,
                                           const std::vector<double>* max_logits, DType dtype,
                                           const std::function<bool(int64_t)>& lonely_row) {
  Checks checks;
  checks.add(all_close("out", out, ref.out, ref.out_shape, out_tolerance(dtype)));
  checks.add(cosine_close("out", out, ref.out, out_max_cosine_diff(dtype)));
  checks.add(all_close("lse", lse, ref.lse, ref.lse_shape, lse_tolerance()));
  if (max_logits)
    checks.add(all_close("max_logits", *max_logits, ref.max_logits, ref.max_logits_shape,
                         lse_tolerance()));
  check_lonely_rows_zero(checks, out, static_cast<int>(ref.out_shape.back()), ref.out_shape,
                         lonely_row);
  return checks.result();
}

}  // namespace

// ---- dense decode -----------------------------------------------------------------------------

DenseDecodeInputs make_dense_decode_inputs(const DenseDecodeCase& c, Rng& rng) {
  DenseDecodeInputs in;
  in.softmax_scale = c.softmax_scale;
  if (!c.seqlens.empty()) {
    in.seqlens.assign(c.seqlens.begin(), c.seqlens.end());
  } else {
    in.seqlens.resize(c.b);
    for (auto& l : in.seqlens) l = static_cast<int32_t>(rng.uniform_int(0, c.max_seqlen));
    if (c.b > 1) in.seqlens[rng.uniform_int(0, c.b - 1)] = 0;
  }
  std::vector<int64_t> pages(c.b);
  int64_t used = 0, max_pages = 0;
  for (int64_t r = 0; r < c.b; ++r) {
    pages[r] = (in.seqlens[r] + c.page - 1) / c.page;
    used += pages[r];
    max_pages = std::max(max_pages, pages[r]);
  }
  const int64_t num_blocks = used + c.unused_blocks;
  const int64_t max_blocks = max_pages + 1;  // one garbage column past the longest request

  // Physical blocks in random order.
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng.engine());

  in.block_table = maybe_padded(DType::kInt32, {c.b, max_blocks}, c.strided, {3, 0});
  for (int64_t i = 0; i < in.block_table.storage_elems(); ++i)
    in.block_table.ptr<int32_t>()[i] = garbage_block(rng, num_blocks);
  in.k_cache = poisoned(
      maybe_padded(c.dtype, {num_blocks, c.page, c.h_kv, c.d_qk}, c.strided, {64, 8, 32, 0}));
  int64_t next = 0;
  for (int64_t r = 0; r < c.b; ++r) {
    for (int64_t p = 0; p < pages[r]; ++p)
      in.block_table.ptr<int32_t>()[in.block_table.offset({r, p})] = perm[next++];
    // Only the request's own tokens get data; the rest of its last page stays NaN.
    const int64_t row = int64_t{c.h_kv} * c.d_qk;
    const std::vector<double> x = random_activations(in.seqlens[r] * row, rng);
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < in.seqlens[r]; ++j) {
      const int64_t blk = in.block_table.i32({r, j / c.page});
      for (int kvh = 0; kvh < c.h_kv; ++kvh)
        for (int d = 0; d < c.d_qk; ++d)
          in.k_cache.set({blk, j % c.page, kvh, d}, x[j * row + kvh * c.d_qk + d]);
    }
  }
  in.q = poisoned(maybe_padded(c.dtype, {c.b, c.s_q, c.h_q, c.d_qk}, c.strided, {5, 7, 16, 0}));
  fill_activations(in.q, rng);
  in.cache_seqlens = int32_tensor(in.seqlens);
  return in;
}

DenseDecodeOutputs make_dense_decode_outputs(const DenseDecodeCase& c) {
  DenseDecodeOutputs out;
  out.out = poisoned(maybe_padded(c.dtype, {c.b, c.s_q, c.h_q, kDimV}, c.strided, {1, 3, 8, 0}));
  out.lse = poisoned(maybe_padded(DType::kFloat32, {c.b, c.h_q, c.s_q}, c.strided, {2, 1, 0}));
  return out;
}

DenseDecodeParams dense_decode_params(const DenseDecodeCase& c, const DenseDecodeInputs& in,
                                      const DenseDecodeOutputs& out, const ViewFn& view) {
  DenseDecodeParams p;
  p.q = view(in.q);
  p.k_cache = view(in.k_cache);
  p.block_table = view(in.block_table);
  p.cache_seqlens = view(in.cache_seqlens);
  p.head_dim_v = kDimV;
  p.softmax_scale = in.softmax_scale;
  p.causal = c.causal;
  p.out = view(out.out);
  p.lse = view(out.lse);
  return p;
}

naive::Attention dense_decode_reference(const DenseDecodeCase& c, const DenseDecodeInputs& in) {
  const double scale = in.softmax_scale ? *in.softmax_scale : 1.0 / std::sqrt(double(c.d_qk));
  return naive::dense_decode(in.q, in.k_cache, in.block_table, in.cache_seqlens, kDimV, c.causal,
                             scale);
}

::testing::AssertionResult check_dense_decode(const DenseDecodeCase& c, const naive::Attention& ref,
                                              const DenseDecodeOutputs& out) {
  const int64_t h_q = c.h_q, s_q = c.s_q;
  // out row (r, i, h) -> lse [r, h, i]
  auto lonely = [&](int64_t row) {
    const int64_t h = row % h_q, i = row / h_q % s_q, r = row / h_q / s_q;
    return std::isinf(ref.lse[(r * h_q + h) * s_q + i]);
  };
  return check_attention(ref, out.out.to_doubles(), out.lse.to_doubles(), nullptr, c.dtype, lonely);
}

DecodePlan with_num_parts(DecodePlan plan, int num_parts) {
  const int64_t factor = (num_parts + plan.num_parts - 1) / plan.num_parts;
  plan.workspace_bytes *= std::max<int64_t>(factor, 1);
  plan.num_parts = num_parts;
  plan.sched_meta_elems = sched::meta_elems(plan.b, num_parts);
  return plan;
}

// Schedule and workspace start as garbage (0xFF bytes are NaN floats), so a partial result read
// before it is written shows up.
void run_dense_decode_cpu(const DenseDecodeCase& c, const DenseDecodeInputs& in,
                          const DenseDecodeOutputs& out) {
  DecodePlan plan = dense_decode_plan_info(c.b, c.s_q, c.h_q, c.h_kv, kDimV, c.causal, kCPU);
  if (c.num_parts > 0) plan = with_num_parts(plan, c.num_parts);
  HostTensor sched_meta(DType::kInt32, {plan.sched_meta_elems});
  sched_meta.poison();
  HostTensor workspace(DType::kUInt8, {plan.workspace_bytes});
  workspace.poison();
  dense_decode_plan({plan, in.cache_seqlens.view(), sched_meta.view()});
  DenseDecodeParams p = dense_decode_params(c, in, out, host_view);
  p.plan = plan;
  p.sched_meta = sched_meta.view();
  p.workspace = workspace.view();
  dense_decode(p);
}

// ---- sparse decode ----------------------------------------------------------------------------

namespace {

// Writes NaN garbage over every token of an FP8 cache (and every gap): e4m3 NaN bytes, NaN
// scales (float32 NaN for V3.2, UE8M0 0xFF for MODEL1) and bf16 NaN RoPE values.
void poison_fp8_cache(HostTensor& cache, KVCacheLayout layout) {
  cache.fill_bytes(0x7F);
  const int64_t num_blocks = cache.size(0), page = cache.size(1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const uint16_t bf16_nan = 0x7FC0;
  for (int64_t blk = 0; blk < num_blocks; ++blk) {
    uint8_t* base = cache.bytes() + blk * cache.stride()[0];
    for (int64_t t = 0; t < page; ++t) {
      if (layout == KVCacheLayout::kV32) {
        uint8_t* tok = base + t * v32::kBytesPerToken;
        for (int s = 0; s < v32::kNumTiles; ++s)
          std::memcpy(tok + v32::kScaleOffset + 4 * s, &nan, 4);
        for (int k = 0; k < v32::kDimRope; ++k)
          std::memcpy(tok + v32::kRopeOffset + 2 * k, &bf16_nan, 2);
      } else {
        uint8_t* tok = base + model1::token_data_offset(t);
        for (int k = 0; k < model1::kDimRope; ++k)
          std::memcpy(tok + model1::kDimNope + 2 * k, &bf16_nan, 2);
        std::memset(base + model1::token_scale_offset(page, t), 0xFF, model1::kNumTiles);
      }
    }
  }
}

// Writes the activations x[d], quantized by the independent quantizer, into `slot`.
void write_token(HostTensor& cache, KVCacheLayout layout, int64_t slot, const double* values) {
  const int d = kv_layout_dim(layout);
  std::vector<uint16_t> x(d);
  for (int c = 0; c < d; ++c) x[c] = double_to_bf16(values[c]);
  const int64_t page = cache.size(1);
  uint8_t* base = cache.bytes() + (slot / page) * cache.stride()[0];
  const int64_t t = slot % page;
  if (layout == KVCacheLayout::kV32) {
    naive::quantize_token(layout, x.data(), base + t * v32::kBytesPerToken, nullptr);
  } else {
    naive::quantize_token(layout, x.data(), base + model1::token_data_offset(t),
                          base + model1::token_scale_offset(page, t));
  }
}

HostTensor make_fp8_cache(const SparseScopeSpec& s, KVCacheLayout layout) {
  const int64_t num_blocks = (s.tokens + s.page - 1) / s.page;
  const int64_t bytes = kv_layout_token_bytes(layout);
  const int64_t min_block = layout == KVCacheLayout::kV32 ? s.page * int64_t{v32::kBytesPerToken}
                                                          : model1::min_block_bytes(s.page);
  return HostTensor(DType::kUInt8, {num_blocks, s.page, 1, bytes},
                    {min_block + s.block_pad, bytes, bytes, 1});
}

SparseScopeInputs make_scope(const SparseDecodeCase& c, const SparseScopeSpec& s,
                             KVCacheLayout layout, const std::vector<char>& lonely_rows, Rng& rng) {
  SparseScopeInputs sc;
  sc.cache = make_fp8_cache(s, layout);
  const int64_t slots = sc.cache.size(0) * sc.cache.size(1);
  sc.indices = HostTensor(DType::kInt32, {c.b, c.s_q, s.topk});
  for (int64_t r = 0; r < c.b; ++r)
    for (int i = 0; i < c.s_q; ++i)
      for (int t = 0; t < s.topk; ++t) {
        const bool invalid = lonely_rows[r * c.s_q + i] || rng.bernoulli(c.invalid_frac);
        sc.indices.ptr<int32_t>()[sc.indices.offset({r, i, t})] =
            invalid ? invalid_index(rng, c.wild_invalid, slots)
                    : static_cast<int32_t>(rng.uniform_int(0, slots - 1));
      }
  if (s.topk_length) sc.topk_length = int32_tensor(random_lengths(rng, c.b, s.topk));

  // Only slots some valid entry points to get data; everything else stays NaN garbage.
  poison_fp8_cache(sc.cache, layout);
  naive::SparseScope view{&sc.cache, &sc.indices, s.topk_length ? &sc.topk_length : nullptr};
  std::set<int64_t> referenced;
  for (int64_t r = 0; r < c.b; ++r)
    for (int i = 0; i < c.s_q; ++i)
      for (int t = 0; t < s.topk; ++t)
        if (naive::sparse_entry_valid(view, r, i, t)) referenced.insert(sc.indices.i32({r, i, t}));
  const int d = kv_layout_dim(layout);
  const std::vector<int64_t> used(referenced.begin(), referenced.end());
  const std::vector<double> x = random_activations(static_cast<int64_t>(used.size()) * d, rng);
#pragma omp parallel for schedule(static)
  for (size_t n = 0; n < used.size(); ++n) write_token(sc.cache, layout, used[n], &x[n * d]);
  return sc;
}

HostTensor make_sink(Sink sink, int h_q, Rng& rng) {
  if (sink == Sink::kNone) return HostTensor();
  std::vector<float> v(h_q);
  // Around typical lse values (log of a few hundred keys), so out is scaled by 0.05..0.95.
  for (auto& x : v) x = static_cast<float>(rng.uniform(0.0, 8.0));
  if (sink == Sink::kWithInf) {
    for (int h = 0; h < h_q; h += 3) v[h] = std::numeric_limits<float>::infinity();
    if (h_q > 1) v[1] = -std::numeric_limits<float>::infinity();  // factor 1: no sink
  }
  return float32_tensor(v);
}

}  // namespace

SparseDecodeInputs make_sparse_decode_inputs(const SparseDecodeCase& c, Rng& rng) {
  SparseDecodeInputs in;
  in.layout = c.d_qk == v32::kDimQK ? KVCacheLayout::kV32 : KVCacheLayout::kModel1;
  std::vector<char> lonely(c.b * c.s_q, 0);
  if (c.all_invalid_rows) {
    for (auto& x : lonely) x = rng.bernoulli(0.3);
    lonely[rng.uniform_int(0, c.b * c.s_q - 1)] = 1;
  }
  in.main = make_scope(c, c.main, in.layout, lonely, rng);
  if (c.extra) in.extra = make_scope(c, *c.extra, in.layout, lonely, rng);
  in.attn_sink = make_sink(c.sink, c.h_q, rng);
  in.q = poisoned(
      maybe_padded(DType::kBFloat16, {c.b, c.s_q, c.h_q, c.d_qk}, c.strided_q, {3, 9, 16, 0}));
  fill_activations(in.q, rng);
  return in;
}

SparseDecodeOutputs make_sparse_decode_outputs(const SparseDecodeCase& c) {
  SparseDecodeOutputs out;
  out.out = poisoned(
      maybe_padded(DType::kBFloat16, {c.b, c.s_q, c.h_q, kDimV}, c.strided_q, {1, 2, 8, 0}));
  out.lse = poisoned(maybe_padded(DType::kFloat32, {c.b, c.h_q, c.s_q}, c.strided_q, {1, 1, 0}));
  return out;
}

SparseDecodeParams sparse_decode_params(const SparseDecodeCase& c, const SparseDecodeInputs& in,
                                        const SparseDecodeOutputs& out, const ViewFn& view) {
  SparseDecodeParams p;
  p.q = view(in.q);
  p.k_cache = view(in.main.cache);
  p.indices = view(in.main.indices);
  if (in.main.topk_length.defined()) p.topk_length = view(in.main.topk_length);
  if (in.attn_sink.defined()) p.attn_sink = view(in.attn_sink);
  if (in.extra) {
    p.extra_k_cache = view(in.extra->cache);
    p.extra_indices = view(in.extra->indices);
    if (in.extra->topk_length.defined()) p.extra_topk_length = view(in.extra->topk_length);
  }
  p.head_dim_v = kDimV;
  p.softmax_scale = c.softmax_scale;
  p.out = view(out.out);
  p.lse = view(out.lse);
  return p;
}

naive::Attention sparse_decode_reference(const SparseDecodeCase& c, const SparseDecodeInputs& in) {
  auto scope = [](const SparseScopeInputs& s) {
    return naive::SparseScope{&s.cache, &s.indices,
                              s.topk_length.defined() ? &s.topk_length : nullptr};
  };
  std::optional<naive::SparseScope> extra;
  if (in.extra) extra = scope(*in.extra);
  const double scale = c.softmax_scale ? *c.softmax_scale : 1.0 / std::sqrt(double(c.d_qk));
  return naive::sparse_decode(in.q, in.layout, scope(in.main), extra,
                              in.attn_sink.defined() ? &in.attn_sink : nullptr, kDimV, scale);
}

::testing::AssertionResult check_sparse_decode(const SparseDecodeCase& c,
                                               const naive::Attention& ref,
                                               const SparseDecodeOutputs& out) {
  const int64_t h_q = c.h_q, s_q = c.s_q;
  auto lonely = [&](int64_t row) {
    const int64_t h = row % h_q, i = row / h_q % s_q, r = row / h_q / s_q;
    return std::isinf(ref.lse[(r * h_q + h) * s_q + i]);
  };
  return check_attention(ref, out.out.to_doubles(), out.lse.to_doubles(), nullptr, DType::kBFloat16,
                         lonely);
}

void run_sparse_decode_cpu(const SparseDecodeCase& c, const SparseDecodeInputs& in,
                           const SparseDecodeOutputs& out) {
  sparse_decode(sparse_decode_params(c, in, out, host_view));
}

// ---- sparse prefill ---------------------------------------------------------------------------

SparsePrefillInputs make_sparse_prefill_inputs(const SparsePrefillCase& c, Rng& rng) {
  SparsePrefillInputs in;
  in.sm_scale = c.sm_scale > 0 ? c.sm_scale : 1.0f / std::sqrt(static_cast<float>(c.d_qk));
  std::vector<char> lonely(c.s_q, 0);
  if (c.all_invalid_rows) {
    for (auto& x : lonely) x = rng.bernoulli(0.3);
    lonely[rng.uniform_int(0, c.s_q - 1)] = 1;
  }
  in.indices = HostTensor(DType::kInt32, {c.s_q, c.h_kv, c.topk});
  for (int64_t s = 0; s < c.s_q; ++s)
    for (int kvh = 0; kvh < c.h_kv; ++kvh)
      for (int t = 0; t < c.topk; ++t) {
        const bool invalid = lonely[s] || rng.bernoulli(c.invalid_frac);
        in.indices.ptr<int32_t>()[in.indices.offset({s, kvh, t})] =
            invalid ? invalid_index(rng, c.wild_invalid, c.s_kv)
                    : static_cast<int32_t>(rng.uniform_int(0, c.s_kv - 1));
      }
  if (c.topk_length) in.topk_length = int32_tensor(random_lengths(rng, c.s_q, c.topk));
  in.attn_sink = make_sink(c.sink, c.h_q, rng);

  // kv rows no valid index points to stay NaN.
  in.kv = poisoned(maybe_padded(DType::kBFloat16, {c.s_kv, c.h_kv, c.d_qk}, c.strided, {16, 8, 0}));
  std::set<std::pair<int64_t, int>> referenced;
  for (int64_t s = 0; s < c.s_q; ++s) {
    const int64_t len = c.topk_length ? in.topk_length.i32({s}) : c.topk;
    for (int kvh = 0; kvh < c.h_kv; ++kvh)
      for (int t = 0; t < std::min<int64_t>(len, c.topk); ++t) {
        const int64_t idx = in.indices.i32({s, kvh, t});
        if (idx >= 0 && idx < c.s_kv) referenced.insert({idx, kvh});
      }
  }
  const std::vector<double> x = random_activations(referenced.size() * c.d_qk, rng);
  int64_t n = 0;
  for (auto [idx, kvh] : referenced) {
    for (int d = 0; d < c.d_qk; ++d) in.kv.set({idx, kvh, d}, x[n * c.d_qk + d]);
    ++n;
  }
  in.q = poisoned(maybe_padded(DType::kBFloat16, {c.s_q, c.h_q, c.d_qk}, c.strided, {4, 16, 0}));
  fill_activations(in.q, rng);
  return in;
}

SparsePrefillOutputs make_sparse_prefill_outputs(const SparsePrefillCase& c) {
  SparsePrefillOutputs out;
  out.out = poisoned(maybe_padded(DType::kBFloat16, {c.s_q, c.h_q, kDimV}, c.strided, {2, 8, 0}));
  out.max_logits = poisoned(maybe_padded(DType::kFloat32, {c.s_q, c.h_q}, c.strided, {3, 0}));
  out.lse = poisoned(maybe_padded(DType::kFloat32, {c.s_q, c.h_q}, c.strided, {1, 0}));
  return out;
}

SparsePrefillParams sparse_prefill_params(const SparsePrefillCase&, const SparsePrefillInputs& in,
                                          const SparsePrefillOutputs& out, const ViewFn& view) {
  SparsePrefillParams p;
  p.q = view(in.q);
  p.kv = view(in.kv);
  p.indices = view(in.indices);
  p.sm_scale = in.sm_scale;
  p.d_v = kDimV;
  if (in.attn_sink.defined()) p.attn_sink = view(in.attn_sink);
  if (in.topk_length.defined()) p.topk_length = view(in.topk_length);
  p.out = view(out.out);
  p.max_logits = view(out.max_logits);
  p.lse = view(out.lse);
  return p;
}

naive::Attention sparse_prefill_reference(const SparsePrefillCase&, const SparsePrefillInputs& in) {
  return naive::sparse_prefill(
      in.q, in.kv, in.indices, in.topk_length.defined() ? &in.topk_length : nullptr,
      in.attn_sink.defined() ? &in.attn_sink : nullptr, kDimV, in.sm_scale);
}

::testing::AssertionResult check_sparse_prefill(const SparsePrefillCase&,
                                                const naive::Attention& ref,
                                                const SparsePrefillOutputs& out) {
  auto lonely = [&](int64_t row) { return std::isinf(ref.lse[row]); };  // row = s * h_q + h
  const std::vector<double> max_logits = out.max_logits.to_doubles();
  return check_attention(ref, out.out.to_doubles(), out.lse.to_doubles(), &max_logits,
                         DType::kBFloat16, lonely);
}

void run_sparse_prefill_cpu(const SparsePrefillCase& c, const SparsePrefillInputs& in,
                            const SparsePrefillOutputs& out) {
  sparse_prefill(sparse_prefill_params(c, in, out, host_view));
}

// ---- dense MHA prefill --------------------------------------------------------------------------

namespace {
constexpr int kMhaDimV = 128;
}

namespace {

// Random activations in rows [0, rows) of a [total, heads, d] tensor; later rows keep their NaN.
void fill_rows(HostTensor& t, int64_t rows, Rng& rng) {
  const int64_t heads = t.size(1), d = t.size(2);
  const std::vector<double> x = random_activations(rows * heads * d, rng);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t e = 0; e < d; ++e) t.set({row, h, e}, x[(row * heads + h) * d + e]);
}

}  // namespace

MhaVarlenInputs make_mha_varlen_inputs(const MhaVarlenCase& c, Rng& rng) {
  MhaVarlenInputs in;
  const int64_t b = static_cast<int64_t>(c.q_lens.size());
  in.cu_q.assign(1, 0);
  in.cu_k.assign(1, 0);
  for (int64_t r = 0; r < b; ++r) {
    in.cu_q.push_back(in.cu_q.back() + c.q_lens[r]);
    in.cu_k.push_back(in.cu_k.back() + c.k_lens[r]);
    in.max_seqlen_q = std::max(in.max_seqlen_q, c.q_lens[r]);
    in.max_seqlen_k = std::max(in.max_seqlen_k, c.k_lens[r]);
  }
  const int64_t total_q = in.cu_q.back() + c.pad_rows, total_k = in.cu_k.back() + c.pad_rows;
  // Pads of 8 elements keep rows 16-byte aligned, as the CUDA kernels' 16-byte copies need (a
  // misaligned stride is refused with NotImplementedError: tests/gpu/test_mha_gpu.cpp).
  in.q = poisoned(maybe_padded(c.dtype, {total_q, c.h_q, c.d_qk}, c.strided, {8, 16, 0}));
  in.k = poisoned(maybe_padded(c.dtype, {total_k, c.h_kv, c.d_qk}, c.strided, {8, 8, 0}));
  in.v = poisoned(maybe_padded(c.dtype, {total_k, c.h_kv, kMhaDimV}, c.strided, {8, 24, 0}));
  // Pad rows stay NaN: only rows of some sequence get data.
  fill_rows(in.q, in.cu_q.back(), rng);
  fill_rows(in.k, in.cu_k.back(), rng);
  fill_rows(in.v, in.cu_k.back(), rng);
  in.cu_seqlens_q = int32_tensor(in.cu_q);
  in.cu_seqlens_k = int32_tensor(in.cu_k);
  return in;
}

MhaVarlenOutputs make_mha_varlen_outputs(const MhaVarlenCase& c) {
  int64_t total_q = c.pad_rows;
  for (int l : c.q_lens) total_q += l;
  MhaVarlenOutputs out;
  out.out = poisoned(maybe_padded(c.dtype, {total_q, c.h_q, kMhaDimV}, c.strided, {8, 8, 0}));
  out.lse = c.lse_transposed
                ? HostTensor(DType::kFloat32, {c.h_q, total_q}, {1, c.h_q})  // [total_q, h_q].T
                : HostTensor(DType::kFloat32, {c.h_q, total_q});
  out.lse.poison();
  return out;
}

MhaVarlenFwdParams mha_varlen_params(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                     const MhaVarlenOutputs& out, const ViewFn& view) {
  MhaVarlenFwdParams p;
  p.q = view(in.q);
  p.k = view(in.k);
  p.v = view(in.v);
  p.cu_seqlens_q = view(in.cu_seqlens_q);
  p.cu_seqlens_k = view(in.cu_seqlens_k);
  p.max_seqlen_q = in.max_seqlen_q;
  p.max_seqlen_k = in.max_seqlen_k;
  p.softmax_scale = c.softmax_scale;
  p.causal = c.causal;
  p.out = view(out.out);
  p.lse = view(out.lse);
  return p;
}

naive::Attention mha_varlen_reference(const MhaVarlenCase& c, const MhaVarlenInputs& in) {
  const double scale = c.softmax_scale ? *c.softmax_scale : 1.0 / std::sqrt(double(c.d_qk));
  return naive::mha_varlen(in.q, in.k, in.v, in.cu_q, in.cu_k, c.causal, scale);
}

::testing::AssertionResult check_mha_varlen(const MhaVarlenCase& c, const naive::Attention& ref,
                                            const MhaVarlenOutputs& out) {
  // Only rows of some sequence are defined; pad rows after the last one are not compared.
  const int64_t rows = ref.lse_shape[1] - c.pad_rows;  // rows of q that belong to a sequence
  const int64_t h_q = c.h_q;
  naive::Attention r = ref;
  r.out.resize(rows * h_q * kMhaDimV);
  r.out_shape[0] = rows;
  std::vector<double> got_out = out.out.to_doubles();
  got_out.resize(rows * h_q * kMhaDimV);
  const std::vector<double> all_lse = out.lse.to_doubles();
  std::vector<double> got_lse, ref_lse;
  for (int64_t h = 0; h < h_q; ++h)
    for (int64_t i = 0; i < rows; ++i) {
      got_lse.push_back(all_lse[h * ref.lse_shape[1] + i]);
      ref_lse.push_back(ref.lse[h * ref.lse_shape[1] + i]);
    }
  r.lse = ref_lse;
  r.lse_shape = {h_q, rows};
  auto lonely = [&](int64_t row) {  // row = t * h_q + h
    return std::isinf(r.lse[(row % h_q) * rows + row / h_q]);
  };
  return check_attention(r, got_out, got_lse, nullptr, c.dtype, lonely);
}

void run_mha_varlen_cpu(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                        const MhaVarlenOutputs& out) {
  mha_varlen_fwd(mha_varlen_params(c, in, out, host_view));
}

// ---- dense MHA prefill, backward --------------------------------------------------------------

MhaVarlenGradInputs make_mha_varlen_grad_inputs(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                                Rng& rng) {
  MhaVarlenGradInputs g;
  const int64_t total_q = in.q.size(0);
  g.dout = poisoned(maybe_padded(c.dtype, {total_q, c.h_q, kMhaDimV}, c.strided, {8, 8, 0}));
  fill_rows(g.dout, in.cu_q.back(), rng);
  if (c.id % 2 == 1) {
    g.dlse = c.lse_transposed ? HostTensor(DType::kFloat32, {c.h_q, total_q}, {1, c.h_q})
                              : HostTensor(DType::kFloat32, {c.h_q, total_q});
    g.dlse.poison();
    const std::vector<double> x = random_activations(c.h_q * in.cu_q.back(), rng);
    for (int64_t h = 0; h < c.h_q; ++h)
      for (int64_t t = 0; t < in.cu_q.back(); ++t) g.dlse.set({h, t}, x[h * in.cu_q.back() + t]);
  }
  return g;
}

MhaVarlenGrads make_mha_varlen_grads(const MhaVarlenCase& c, const MhaVarlenInputs& in) {
  const int64_t total_q = in.q.size(0), total_k = in.k.size(0);
  MhaVarlenGrads g;
  g.dq = poisoned(maybe_padded(c.dtype, {total_q, c.h_q, c.d_qk}, c.strided, {2, 8, 0}));
  g.dk = poisoned(maybe_padded(c.dtype, {total_k, c.h_kv, c.d_qk}, c.strided, {6, 16, 0}));
  g.dv = poisoned(maybe_padded(c.dtype, {total_k, c.h_kv, kMhaDimV}, c.strided, {2, 8, 0}));
  return g;
}

MhaVarlenBwdParams mha_varlen_bwd_params(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                         const MhaVarlenOutputs& fwd,
                                         const MhaVarlenGradInputs& gin,
                                         const MhaVarlenGrads& grads, const ViewFn& view) {
  MhaVarlenBwdParams p;
  p.dout = view(gin.dout);
  p.q = view(in.q);
  p.k = view(in.k);
  p.v = view(in.v);
  p.out = view(fwd.out);
  p.lse = view(fwd.lse);
  if (gin.dlse.defined()) p.dlse = view(gin.dlse);
  p.cu_seqlens_q = view(in.cu_seqlens_q);
  p.cu_seqlens_k = view(in.cu_seqlens_k);
  p.max_seqlen_q = in.max_seqlen_q;
  p.max_seqlen_k = in.max_seqlen_k;
  p.softmax_scale = c.softmax_scale;
  p.causal = c.causal;
  p.dq = view(grads.dq);
  p.dk = view(grads.dk);
  p.dv = view(grads.dv);
  return p;
}

naive::MhaGrads mha_varlen_bwd_reference(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                         const MhaVarlenOutputs& fwd,
                                         const MhaVarlenGradInputs& gin) {
  const double scale = c.softmax_scale ? *c.softmax_scale : 1.0 / std::sqrt(double(c.d_qk));
  return naive::mha_varlen_bwd(in.q, in.k, in.v, gin.dout, fwd.out,
                               gin.dlse.defined() ? &gin.dlse : nullptr, in.cu_q, in.cu_k,
                               c.causal, scale);
}

// A gradient element is a sum of many products with both signs (dq = scale sum_j dS_j k_j, ...),
// so its error scales with its terms rather than with the element: a kernel that rounds P and dS
// to 16 bits before its products (as a GPU kernel does, unit roundoff u = 2^-8 bf16 / 2^-11
// fp16) makes an error of at most about u / sqrt(3) times the root sum of squares of the terms
// (the reference's *_noise), 4u of it being 7 or more of those standard deviations (2^-7 for
// bf16, 3.5 of them, let 7 of 2.7 million dv elements through on the H100, session 31);
// plus the rounding of the 16-bit result (rtol = 2^-8 / 2^-10, as out's; fp16 gradients can be
// subnormal, hence an absolute floor of its smallest step, 2^-24). Elementwise:
//   |got - ref| <= noise_factor * noise + rtol * |ref| + floor,
// then FlashMLA's cosine bound over the tensor, and exact zeros where the reference has
// structural ones (0 with noise 0).
// The CPU backend, float32 throughout and rounding nothing before its products, sits far inside.
GradTolerance grad_tolerance(DType dtype) {
  if (dtype == DType::kFloat16)
    return {std::ldexp(1.0, -9), std::ldexp(1.0, -10), std::ldexp(1.0, -24)};
  return {std::ldexp(1.0, -6), std::ldexp(1.0, -8), 0.0};
}

namespace {

::testing::AssertionResult grads_close(const std::string& what, const std::vector<double>& got,
                                       const std::vector<double>& ref,
                                       const std::vector<double>& noise,
                                       const std::vector<int64_t>& shape, GradTolerance tol) {
  int64_t failures = 0, worst = -1;
  double worst_excess = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double allowed =
        tol.noise_factor * noise[i] + tol.rtol * std::fabs(ref[i]) + tol.floor;
    const double diff = std::fabs(got[i] - ref[i]);
    const double excess = std::isnan(diff) ? INFINITY : diff - allowed;
    if (excess > 0 && failures++ >= 0 && excess > worst_excess) {
      worst_excess = excess;
      worst = static_cast<int64_t>(i);
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << " " << shape_str(shape) << ": " << failures << " of " << got.size()
         << " elements outside |got - ref| <= " << tol.noise_factor << " * noise + " << tol.rtol
         << " * |ref| + " << tol.floor << "; worst at " << index_str(worst, shape) << ": got " << got[worst]
         << ", expected " << ref[worst] << " (noise " << noise[worst] << ")";
}

}  // namespace

::testing::AssertionResult check_mha_varlen_bwd(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                                const naive::MhaGrads& ref,
                                                const MhaVarlenGrads& grads) {
  Checks checks;
  // Rows [0, rows) belong to sequences and are compared; the pad rows after them must be 0.
  auto check = [&](const char* what, const HostTensor& t, const std::vector<double>& r,
                   const std::vector<double>& noise, int64_t rows) {
    const int64_t n = rows * t.size(1) * t.size(2);
    const std::vector<double> all = t.to_doubles();
    const std::vector<double> got(all.begin(), all.begin() + n);
    const std::vector<double> want(r.begin(), r.begin() + n);
    const std::vector<double> scale(noise.begin(), noise.begin() + n);
    const std::vector<int64_t> shape = {rows, t.size(1), t.size(2)};
    checks.add(grads_close(what, got, want, scale, shape, grad_tolerance(c.dtype)));
    checks.add(cosine_close(what, got, want, out_max_cosine_diff(c.dtype)));
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < static_cast<int64_t>(all.size()); ++i) {
      const bool must_be_zero = i >= n || (want[i] == 0.0 && scale[i] == 0.0);
      if (must_be_zero && all[i] != 0.0 && bad++ == 0) first = i;
    }
    if (bad)
      checks.fail(std::string(what) + ": " + std::to_string(bad) +
                  " elements that must be exactly 0 (nothing attended, no query sees the key, "
                  "or a row outside every sequence) are not; first at " +
                  index_str(first, t.shape()) + " = " + std::to_string(all[first]));
  };
  check("dq", grads.dq, ref.dq, ref.dq_noise, in.cu_q.back());
  check("dk", grads.dk, ref.dk, ref.dk_noise, in.cu_k.back());
  check("dv", grads.dv, ref.dv, ref.dv_noise, in.cu_k.back());
  return checks.result();
}

void run_mha_varlen_bwd_cpu(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                            const MhaVarlenOutputs& fwd, const MhaVarlenGradInputs& gin,
                            const MhaVarlenGrads& grads) {
  mha_varlen_bwd(mha_varlen_bwd_params(c, in, fwd, gin, grads, host_view));
}

}  // namespace flashmla::test
