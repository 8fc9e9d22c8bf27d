// Naive float64 references: see naive_reference.h. Parallel loops (OpenMP) only split
// independent query rows, so results do not depend on the thread count.
#include "naive_reference.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "flashmla/fp8.h"

namespace flashmla::test::naive {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// attend() with V stored apart from K.
void attend_kv(const double* q, int d_qk, const double* k, int64_t ldk, const double* v,
               int64_t ldv, int64_t n, int d_v, double scale, std::optional<double> sink,
               double* out, double* lse, double* max_logit) {
  std::fill(out, out + d_v, 0.0);
  if (n == 0) {
    *lse = kInf;
    *max_logit = -kInf;
    return;
  }
  std::vector<double> s(n);
  double m = -kInf;
  for (int64_t j = 0; j < n; ++j) {
    double dot = 0;
    for (int c = 0; c < d_qk; ++c) dot += q[c] * k[j * ldk + c];
    s[j] = scale * dot;
    m = std::max(m, s[j]);
  }
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += std::exp(s[j] - m);
  const double l = m + std::log(sum);
  for (int64_t j = 0; j < n; ++j) {
    const double p = std::exp(s[j] - l);
    for (int c = 0; c < d_v; ++c) out[c] += p * v[j * ldv + c];
  }
  if (sink) {
    const double f = 1.0 / (1.0 + std::exp(*sink - l));  // sink = +inf -> 0
    for (int c = 0; c < d_v; ++c) out[c] *= f;
  }
  *lse = l;
  *max_logit = m;
}

std::vector<double> read_row(const HostTensor& t, std::initializer_list<int64_t> prefix, int n) {
  // The row t[prefix..., 0:n] (last dimension).
  std::vector<double> row(n);
  const int64_t base = t.offset(prefix);
  const int64_t step = t.stride().back();
  for (int c = 0; c < n; ++c) row[c] = t.get_at(base + c * step);
  return row;
}

}  // namespace

void attend(const double* q, int d_qk, const double* k, int64_t n, int64_t ld, int d_v,
            double scale, std::optional<double> sink, double* out, double* lse, double* max_logit) {
  attend_kv(q, d_qk, k, ld, k, ld, n, d_v, scale, sink, out, lse, max_logit);
}

// ---- dense decode -----------------------------------------------------------------------------

Attention dense_decode(const HostTensor& q, const HostTensor& k_cache,
                       const HostTensor& block_table, const HostTensor& cache_seqlens, int d_v,
                       bool causal, double scale) {
  const int64_t b = q.size(0);
  const int s_q = static_cast<int>(q.size(1));
  const int h_q = static_cast<int>(q.size(2));
  const int d_qk = static_cast<int>(q.size(3));
  const int64_t page = k_cache.size(1);
  const int h_kv = static_cast<int>(k_cache.size(2));
  const int group = h_q / h_kv;

  Attention res;
  res.out_shape = {b, s_q, h_q, d_v};
  res.lse_shape = {b, h_q, s_q};
  res.out.assign(b * s_q * h_q * d_v, 0.0);
  res.lse.assign(b * h_q * s_q, 0.0);

  for (int64_t r = 0; r < b; ++r) {
    const int64_t s_k = cache_seqlens.i32({r});
    for (int kvh = 0; kvh < h_kv; ++kvh) {
      // The request's keys of this kv head, in logical order, through the block table.
      std::vector<double> keys(s_k * d_qk);
      for (int64_t j = 0; j < s_k; ++j) {
        const int64_t block = block_table.i32({r, j / page});
        const std::vector<double> row = read_row(k_cache, {block, j % page, kvh, 0}, d_qk);
        std::copy(row.begin(), row.end(), keys.begin() + j * d_qk);
      }
#pragma omp parallel for collapse(2) schedule(dynamic)
      for (int i = 0; i < s_q; ++i) {
        for (int g = 0; g < group; ++g) {
          const int h = kvh * group + g;
          const std::vector<double> qv = read_row(q, {r, i, h, 0}, d_qk);
          const int64_t n = causal ? std::clamp<int64_t>(s_k - s_q + i + 1, 0, s_k) : s_k;
          double m;
          attend(qv.data(), d_qk, keys.data(), n, d_qk, d_v, scale, std::nullopt,
                 &res.out[((r * s_q + i) * h_q + h) * d_v], &res.lse[(r * h_q + h) * s_q + i], &m);
        }
      }
    }
  }
  return res;
}

// ---- FP8 caches -------------------------------------------------------------------------------

std::vector<double> decode_fp8_token(const HostTensor& cache, KVCacheLayout layout, int64_t slot) {
  const int64_t page = cache.size(1);
  const int64_t block = slot / page, offset = slot % page;
  const uint8_t* base = cache.bytes() + block * cache.stride()[0];  // uint8: strides are bytes
  std::vector<double> x(kv_layout_dim(layout));
  uint16_t rope[64];
  if (layout == KVCacheLayout::kV32) {
    const uint8_t* tok = base + offset * v32::kBytesPerToken;
    for (int c = 0; c < v32::kDimNope; ++c) {
      float scale;
      std::memcpy(&scale, tok + v32::kScaleOffset + 4 * (c / v32::kTile), sizeof scale);
      x[c] = static_cast<double>(fp8::e4m3_to_float(tok[c])) * scale;
    }
    std::memcpy(rope, tok + v32::kRopeOffset, sizeof rope);
    for (int c = 0; c < v32::kDimRope; ++c) x[v32::kDimNope + c] = fp8::bf16_to_float(rope[c]);
  } else {
    const uint8_t* tok = base + model1::token_data_offset(offset);
    const uint8_t* scales = base + model1::token_scale_offset(page, offset);
    for (int c = 0; c < model1::kDimNope; ++c)
      x[c] = static_cast<double>(fp8::e4m3_to_float(tok[c])) *
             fp8::ue8m0_to_float(scales[c / model1::kTile]);
    std::memcpy(rope, tok + model1::kDimNope, sizeof rope);
    for (int c = 0; c < model1::kDimRope; ++c)
      x[model1::kDimNope + c] = fp8::bf16_to_float(rope[c]);
  }
  return x;
}

bool sparse_entry_valid(const SparseScope& scope, int64_t r, int64_t i, int64_t t) {
  if (scope.topk_length && t >= scope.topk_length->i32({r})) return false;
  const int64_t slot = scope.indices->i32({r, i, t});
  return slot >= 0 && slot < scope.cache->size(0) * scope.cache->size(1);
}

// ---- sparse decode ----------------------------------------------------------------------------

Attention sparse_decode(const HostTensor& q, KVCacheLayout layout, const SparseScope& main,
                        const std::optional<SparseScope>& extra, const HostTensor* attn_sink,
                        int d_v, double scale) {
  const int64_t b = q.size(0);
  const int s_q = static_cast<int>(q.size(1));
  const int h_q = static_cast<int>(q.size(2));
  const int d_qk = static_cast<int>(q.size(3));
  if (d_qk != kv_layout_dim(layout)) throw std::invalid_argument("sparse_decode: d_qk/layout");

  Attention res;
  res.out_shape = {b, s_q, h_q, d_v};
  res.lse_shape = {b, h_q, s_q};
  res.out.assign(b * s_q * h_q * d_v, 0.0);
  res.lse.assign(b * h_q * s_q, 0.0);

  for (int64_t r = 0; r < b; ++r) {
    for (int i = 0; i < s_q; ++i) {
      // Every valid entry of both scopes, each one a key (duplicates count twice).
      std::vector<double> keys;
      int64_t n = 0;
      for (const SparseScope* scope : {&main, extra ? &*extra : nullptr}) {
        if (!scope) continue;
        for (int64_t t = 0; t < scope->indices->size(2); ++t) {
          if (!sparse_entry_valid(*scope, r, i, t)) continue;
          const std::vector<double> x =
              decode_fp8_token(*scope->cache, layout, scope->indices->i32({r, i, t}));
          keys.insert(keys.end(), x.begin(), x.end());
          ++n;
        }
      }
#pragma omp parallel for schedule(dynamic)
      for (int h = 0; h < h_q; ++h) {
        const std::vector<double> qv = read_row(q, {r, i, h, 0}, d_qk);
        std::optional<double> sink;
        if (attn_sink) sink = attn_sink->get({h});
        double m;
        attend(qv.data(), d_qk, keys.data(), n, d_qk, d_v, scale, sink,
               &res.out[((r * s_q + i) * h_q + h) * d_v], &res.lse[(r * h_q + h) * s_q + i], &m);
      }
    }
  }
  return res;
}

// ---- sparse prefill ---------------------------------------------------------------------------

Attention sparse_prefill(const HostTensor& q, const HostTensor& kv, const HostTensor& indices,
                         const HostTensor* topk_length, const HostTensor* attn_sink, int d_v,
                         double scale) {
  const int64_t s_q = q.size(0);
  const int h_q = static_cast<int>(q.size(1));
  const int d_qk = static_cast<int>(q.size(2));
  const int64_t s_kv = kv.size(0);
  const int h_kv = static_cast<int>(kv.size(1));
  const int group = h_q / h_kv;
  const int64_t topk = indices.size(2);

  Attention res;
  res.out_shape = {s_q, h_q, d_v};
  res.lse_shape = {s_q, h_q};
  res.max_logits_shape = {s_q, h_q};
  res.out.assign(s_q * h_q * d_v, 0.0);
  res.lse.assign(s_q * h_q, 0.0);
  res.max_logits.assign(s_q * h_q, 0.0);

  for (int64_t s = 0; s < s_q; ++s) {
    const int64_t len = topk_length ? topk_length->i32({s}) : topk;
    for (int kvh = 0; kvh < h_kv; ++kvh) {
      std::vector<double> keys;
      int64_t n = 0;
      for (int64_t t = 0; t < topk; ++t) {
        const int64_t idx = indices.i32({s, kvh, t});
        if (t >= len || idx < 0 || idx >= s_kv) continue;
        const std::vector<double> x = read_row(kv, {idx, kvh, 0}, d_qk);
        keys.insert(keys.end(), x.begin(), x.end());
        ++n;
      }
#pragma omp parallel for schedule(dynamic)
      for (int g = 0; g < group; ++g) {
        const int h = kvh * group + g;
        const std::vector<double> qv = read_row(q, {s, h, 0}, d_qk);
        std::optional<double> sink;
        if (attn_sink) sink = attn_sink->get({h});
        attend(qv.data(), d_qk, keys.data(), n, d_qk, d_v, scale, sink,
               &res.out[(s * h_q + h) * d_v], &res.lse[s * h_q + h], &res.max_logits[s * h_q + h]);
      }
    }
  }
  return res;
}

// ---- dense MHA prefill --------------------------------------------------------------------------

namespace {

// Rows [k0, k0 + n) of kv head kvh of k [total_k, h_kv, d_qk] and v [.., d_v], row-major.
void read_kv_rows(const HostTensor& k, const HostTensor& v, int64_t k0, int64_t n, int kvh,
                  std::vector<double>& keys, std::vector<double>& values) {
  const int d_qk = static_cast<int>(k.size(2)), d_v = static_cast<int>(v.size(2));
  keys.resize(n * d_qk);
  values.resize(n * d_v);
  for (int64_t j = 0; j < n; ++j) {
    const std::vector<double> kr = read_row(k, {k0 + j, kvh, 0}, d_qk);
    const std::vector<double> vr = read_row(v, {k0 + j, kvh, 0}, d_v);
    std::copy(kr.begin(), kr.end(), keys.begin() + j * d_qk);
    std::copy(vr.begin(), vr.end(), values.begin() + j * d_v);
  }
}

}  // namespace

Attention mha_varlen(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                     const std::vector<int32_t>& cu_q, const std::vector<int32_t>& cu_k,
                     bool causal, double scale) {
  const int64_t total_q = q.size(0);
  const int h_q = static_cast<int>(q.size(1));
  const int d_qk = static_cast<int>(q.size(2));
  const int h_kv = static_cast<int>(k.size(1));
  const int d_v = static_cast<int>(v.size(2));
  const int group = h_q / h_kv;
  const int64_t b = static_cast<int64_t>(cu_q.size()) - 1;

  Attention res;
  res.out_shape = {total_q, h_q, d_v};
  res.lse_shape = {h_q, total_q};
  res.out.assign(total_q * h_q * d_v, kNaN);
  res.lse.assign(h_q * total_q, kNaN);

  for (int64_t r = 0; r < b; ++r) {
    const int64_t q0 = cu_q[r], sq = cu_q[r + 1] - cu_q[r];
    const int64_t k0 = cu_k[r], sk = cu_k[r + 1] - cu_k[r];
    for (int kvh = 0; kvh < h_kv; ++kvh) {
      std::vector<double> keys, values;
      read_kv_rows(k, v, k0, sk, kvh, keys, values);
#pragma omp parallel for collapse(2) schedule(dynamic)
      for (int64_t i = 0; i < sq; ++i) {
        for (int g = 0; g < group; ++g) {
          const int h = kvh * group + g;
          const std::vector<double> qv = read_row(q, {q0 + i, h, 0}, d_qk);
          const int64_t n = causal ? std::clamp<int64_t>(i + sk - sq + 1, 0, sk) : sk;
          double m;
          attend_kv(qv.data(), d_qk, keys.data(), d_qk, values.data(), d_v, n, d_v, scale,
                    std::nullopt, &res.out[((q0 + i) * h_q + h) * d_v],
                    &res.lse[h * total_q + q0 + i], &m);
        }
      }
    }
  }
  return res;
}

MhaGrads mha_varlen_bwd(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                        const HostTensor& dout, const HostTensor& out, const HostTensor* dlse,
                        const std::vector<int32_t>& cu_q, const std::vector<int32_t>& cu_k,
                        bool causal, double scale) {
  const int64_t total_q = q.size(0), total_k = k.size(0);
  const int h_q = static_cast<int>(q.size(1));
  const int d_qk = static_cast<int>(q.size(2));
  const int h_kv = static_cast<int>(k.size(1));
  const int d_v = static_cast<int>(v.size(2));
  const int group = h_q / h_kv;
  const int64_t b = static_cast<int64_t>(cu_q.size()) - 1;

  MhaGrads g;
  g.dq.assign(total_q * h_q * d_qk, kNaN);
  g.dk.assign(total_k * h_kv * d_qk, kNaN);
  g.dv.assign(total_k * h_kv * d_v, kNaN);
  g.dq_noise.assign(g.dq.size(), 0.0);
  g.dk_noise.assign(g.dk.size(), 0.0);
  g.dv_noise.assign(g.dv.size(), 0.0);

  for (int64_t r = 0; r < b; ++r) {
    const int64_t q0 = cu_q[r], sq = cu_q[r + 1] - cu_q[r];
    const int64_t k0 = cu_k[r], sk = cu_k[r + 1] - cu_k[r];
    auto limit = [&](int64_t i) { return causal ? std::clamp<int64_t>(i + sk - sq + 1, 0, sk) : sk; };
    for (int kvh = 0; kvh < h_kv; ++kvh) {
      const int64_t rows = sq * group;  // row i * group + gi: query i, head kvh * group + gi
      std::vector<double> keys, values, qs(rows * d_qk), dos(rows * d_v);
      read_kv_rows(k, v, k0, sk, kvh, keys, values);
      // Per row: its lse (recomputed) and delta = dout . out - dlse.
      std::vector<double> lse(rows), delta(rows), delta_abs(rows);
#pragma omp parallel for schedule(dynamic)
      for (int64_t row = 0; row < rows; ++row) {
        const int64_t i = row / group, t = q0 + i;
        const int h = kvh * group + static_cast<int>(row % group);
        const std::vector<double> qv = read_row(q, {t, h, 0}, d_qk);
        const std::vector<double> dv = read_row(dout, {t, h, 0}, d_v);
        const std::vector<double> ov = read_row(out, {t, h, 0}, d_v);
        std::copy(qv.begin(), qv.end(), qs.begin() + row * d_qk);
        std::copy(dv.begin(), dv.end(), dos.begin() + row * d_v);
        double m = -kInf;
        std::vector<double> s(limit(i));
        for (int64_t j = 0; j < limit(i); ++j) {
          double dot = 0;
          for (int c = 0; c < d_qk; ++c) dot += qv[c] * keys[j * d_qk + c];
          s[j] = scale * dot;
          m = std::max(m, s[j]);
        }
        double sum = 0;
        for (double x : s) sum += std::exp(x - m);
        lse[row] = s.empty() ? kInf : m + std::log(sum);
        double d = 0, d_abs = 0;
        for (int c = 0; c < d_v; ++c) {
          d += dv[c] * ov[c];
          d_abs += std::fabs(dv[c] * ov[c]);
        }
        const double dl = dlse ? dlse->get({h, t}) : 0.0;
        delta[row] = d - dl;
        delta_abs[row] = d_abs + std::fabs(dl);
      }
      // dS of (row, key j), or 0 where the row does not see the key; also P, and the error
      // scale of dP - delta in float32: P 2^-9 (|dP| + |delta|) summed term by term. It matters
      // where they cancel (a row seeing one key has out = v and dS = 0 in exact arithmetic).
      auto ds_of = [&](int64_t row, int64_t j, double* p, double* cancel) {
        *cancel = 0.0;
        if (j >= limit(row / group)) return *p = 0.0;
        double s = 0, dp = 0, dp_abs = 0;
        for (int c = 0; c < d_qk; ++c) s += qs[row * d_qk + c] * keys[j * d_qk + c];
        for (int c = 0; c < d_v; ++c) {
          const double x = dos[row * d_v + c] * values[j * d_v + c];
          dp += x;
          dp_abs += std::fabs(x);
        }
        *p = std::exp(scale * s - lse[row]);
        *cancel = *p * std::ldexp(dp_abs + delta_abs[row], -9);
        return *p * (dp - delta[row]);
      };
      // sum += w x and noise += (w x)^2 + (e x)^2 over n elements (w: the term's weight, e: its
      // error scale beyond the 16-bit rounding of w).
      auto add_terms = [](double* sum, double* noise, double w, double e, const double* x, int n) {
        for (int c = 0; c < n; ++c) {
          const double term = w * x[c], err = e * x[c];
          sum[c] += term;
          noise[c] += term * term + err * err;
        }
      };
#pragma omp parallel for schedule(dynamic)
      for (int64_t row = 0; row < rows; ++row) {
        const int64_t t = q0 + row / group;
        const int h = kvh * group + static_cast<int>(row % group);
        double* dq = &g.dq[(t * h_q + h) * d_qk];
        double* nq = &g.dq_noise[(t * h_q + h) * d_qk];
        std::fill(dq, dq + d_qk, 0.0);
        for (int64_t j = 0; j < sk; ++j) {
          double p, cancel;
          const double ds = ds_of(row, j, &p, &cancel);
          add_terms(dq, nq, scale * ds, scale * cancel, &keys[j * d_qk], d_qk);
        }
        for (int c = 0; c < d_qk; ++c) nq[c] = std::sqrt(nq[c]);
      }
#pragma omp parallel for schedule(dynamic)
      for (int64_t j = 0; j < sk; ++j) {
        double* dk = &g.dk[((k0 + j) * h_kv + kvh) * d_qk];
        double* dv = &g.dv[((k0 + j) * h_kv + kvh) * d_v];
        double* nk = &g.dk_noise[((k0 + j) * h_kv + kvh) * d_qk];
        double* nv = &g.dv_noise[((k0 + j) * h_kv + kvh) * d_v];
        std::fill(dk, dk + d_qk, 0.0);
        std::fill(dv, dv + d_v, 0.0);
        for (int64_t row = 0; row < rows; ++row) {
          double p, cancel;
          const double ds = ds_of(row, j, &p, &cancel);
          add_terms(dk, nk, scale * ds, scale * cancel, &qs[row * d_qk], d_qk);
          add_terms(dv, nv, p, 0.0, &dos[row * d_v], d_v);
        }
        for (int c = 0; c < d_qk; ++c) nk[c] = std::sqrt(nk[c]);
        for (int c = 0; c < d_v; ++c) nv[c] = std::sqrt(nv[c]);
      }
    }
  }
  return g;
}

// ---- FP8 quantizer ------------------------------------------------------------------------------

double e4m3_value(int code) {
  const double sign = (code & 0x80) ? -1.0 : 1.0;
  const int e = (code >> 3) & 0xF, m = code & 0x7;
  if (e == 0xF && m == 0x7) return std::numeric_limits<double>::quiet_NaN();
  if (e == 0) return sign * std::ldexp(m, -9);
  return sign * std::ldexp(8 + m, e - 10);
}

namespace {

constexpr int kMaxFiniteCode = 0x7E;  // 448

const std::array<double, kMaxFiniteCode + 1>& positive_values() {
  static const auto table = [] {
    std::array<double, kMaxFiniteCode + 1> t{};
    for (int c = 0; c <= kMaxFiniteCode; ++c) t[c] = e4m3_value(c);
    return t;
  }();
  return table;
}

}  // namespace

uint8_t e4m3_nearest(double y) {
  const uint8_t sign = std::signbit(y) ? 0x80 : 0x00;
  if (std::isnan(y)) return sign | 0x7F;
  const double a = std::fabs(y);
  if (a >= 448.0) return sign | kMaxFiniteCode;
  // The positive codes 0x00..0x7E increase with their value: bracket a and take the nearer.
  const auto& v = positive_values();
  const int hi = static_cast<int>(std::lower_bound(v.begin(), v.end(), a) - v.begin());
  if (v[hi] == a) return sign | hi;
  const int lo = hi - 1;
  const double dlo = a - v[lo], dhi = v[hi] - a;
  const int code = dlo < dhi ? lo : dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi);
  return static_cast<uint8_t>(sign | code);
}

uint8_t e4m3_nearest_exhaustive(double y) {
  if (std::isnan(y)) return (std::signbit(y) ? 0x80 : 0x00) | 0x7F;
  if (std::fabs(y) > 448.0) return (y < 0 ? 0x80 : 0x00) | kMaxFiniteCode;
  int best = -1;
  double best_dist = kInf;
  for (int c = 0; c < 256; ++c) {
    const double v = e4m3_value(c);
    if (std::isnan(v)) continue;
    const double dist = std::fabs(v - y);
    bool better = dist < best_dist;
    if (dist == best_dist) {
      if (v == 0) {
        // +0 and -0 tie: keep y's sign.
        better = ((c & 0x80) != 0) == static_cast<bool>(std::signbit(y));
      } else {
        better = c % 2 == 0 && best % 2 != 0;  // ties to the even code
      }
    }
    if (better) {
      best = c;
      best_dist = dist;
    }
  }
  return static_cast<uint8_t>(best);
}

int scale_exponent(double amax) {
  // "float(amax / 448)": the quotient rounded to float32 (rounding the exact double quotient
  // once more to float gives the correctly rounded float32 quotient: 53 >= 2 * 24 + 2).
  const double s =
      std::max(static_cast<double>(static_cast<float>(amax / 448.0)), static_cast<double>(1e-4f));
  int e;
  const double f = std::frexp(s, &e);  // s = f * 2^e, f in [0.5, 1)
  return f == 0.5 ? e - 1 : e;         // s exactly a power of two: 2^(e-1) itself
}

void quantize_token(KVCacheLayout layout, const uint16_t* x_bf16, uint8_t* data, uint8_t* scales) {
  const bool v32l = layout == KVCacheLayout::kV32;
  const int d_nope = v32l ? v32::kDimNope : model1::kDimNope;
  const int tile = v32l ? v32::kTile : model1::kTile;
  for (int t = 0; t < d_nope / tile; ++t) {
    double amax = 0;
    for (int c = t * tile; c < (t + 1) * tile; ++c)
      amax = std::max(amax, std::fabs(bf16_to_double(x_bf16[c])));
    const int e = scale_exponent(amax);
    for (int c = t * tile; c < (t + 1) * tile; ++c)
      data[c] = e4m3_nearest(std::ldexp(bf16_to_double(x_bf16[c]), -e));
    if (v32l) {
      const float scale = static_cast<float>(std::ldexp(1.0, e));
      std::memcpy(data + v32::kScaleOffset + 4 * t, &scale, sizeof scale);
    } else {
      scales[t] = static_cast<uint8_t>(e + 127);  // UE8M0: the biased exponent
    }
  }
  // RoPE: the 64 bf16 values verbatim.
  std::memcpy(data + (v32l ? v32::kRopeOffset : model1::kDimNope), x_bf16 + d_nope,
              64 * sizeof(uint16_t));
}

void quantize_cache(const HostTensor& k_cache, KVCacheLayout layout, HostTensor& quant) {
  const int64_t num_blocks = k_cache.size(0), page = k_cache.size(1);
  const int d = kv_layout_dim(layout);
  std::vector<uint16_t> x(d);
  for (int64_t blk = 0; blk < num_blocks; ++blk) {
    uint8_t* base = quant.bytes() + blk * quant.stride()[0];
    for (int64_t t = 0; t < page; ++t) {
      for (int c = 0; c < d; ++c) x[c] = k_cache.ptr<uint16_t>()[k_cache.offset({blk, t, 0, c})];
      if (layout == KVCacheLayout::kV32) {
        quantize_token(layout, x.data(), base + t * v32::kBytesPerToken, nullptr);
      } else {
        quantize_token(layout, x.data(), base + model1::token_data_offset(t),
                       base + model1::token_scale_offset(page, t));
      }
    }
  }
}

}  // namespace flashmla::test::naive
