// Naive float64 reference implementations of every flashmla operation, written from SPEC.md
// (not from the library): plain loops, clarity over speed, O(work) and never worse.
//
// Inputs are HostTensors (read element by element through their strides, so a reference never
// depends on how a test laid its memory out). Results are row-major double vectors in the
// layout of the matching flashmla output, with "nothing attended" encoded as SPEC.md says:
// out = 0, lse = +inf, max_logits = -inf.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "flashmla/kv_layout.h"
#include "test_util.h"

namespace flashmla::test::naive {

struct Attention {
  std::vector<double> out;
  std::vector<int64_t> out_shape;
  std::vector<double> lse;
  std::vector<int64_t> lse_shape;
  std::vector<double> max_logits;  // sparse prefill only
  std::vector<int64_t> max_logits_shape;
};

// Softmax attention of one query over n keys (rows of K, leading dimension ld; V = the first d_v
// columns of the same rows). Writes out[d_v], and the natural-log lse and the max logit of the
// scaled logits. With a sink, out *= 1 / (1 + exp(sink - lse)) (lse itself unchanged). n == 0
// gives out = 0, lse = +inf, max = -inf.
void attend(const double* q, int d_qk, const double* k, int64_t n, int64_t ld, int d_v,
            double scale, std::optional<double> sink, double* out, double* lse, double* max_logit);

// ---- dense decode (SPEC.md §2) ----
// q [b, s_q, h_q, d_qk]; k_cache [num_blocks, page, h_kv, d_qk]; block_table [b, max_blocks];
// cache_seqlens [b]. V = K[..., :d_v]. Query head h reads kv head h / (h_q / h_kv). Causal:
// query i sees keys j <= s_k - s_q + i. Result: out [b, s_q, h_q, d_v], lse [b, h_q, s_q].
Attention dense_decode(const HostTensor& q, const HostTensor& k_cache,
                       const HostTensor& block_table, const HostTensor& cache_seqlens, int d_v,
                       bool causal, double scale);

// ---- FP8 caches (SPEC.md §3) ----
// The dequantized token at `slot` (= block * page + offset) of an FP8 cache view
// [num_blocks, page, 1, bytes] (block stride = stride[0] bytes), decoded with fp8.h's scalar
// codecs per kv_layout.h: d_qk = 576 (V3.2) or 512 (MODEL1) values.
std::vector<double> decode_fp8_token(const HostTensor& cache, KVCacheLayout layout, int64_t slot);

// One scope of sparse decode: an FP8 cache, indices [b, s_q, topk] and optional topk_length [b].
struct SparseScope {
  const HostTensor* cache = nullptr;
  const HostTensor* indices = nullptr;
  const HostTensor* topk_length = nullptr;  // may be null
};

// Whether entry t of indices[r, i, :] attends: t < topk_length[r] (when given), the slot is
// >= 0 and inside the cache (< num_blocks * page).
bool sparse_entry_valid(const SparseScope& scope, int64_t r, int64_t i, int64_t t);

// ---- sparse decode (SPEC.md §4) ----
// q [b, s_q, h_q, d_qk] with d_qk picking the layout; the extra scope (if any) joins the same
// softmax. attn_sink [h_q] may be null. Result: out [b, s_q, h_q, d_v], lse [b, h_q, s_q].
Attention sparse_decode(const HostTensor& q, KVCacheLayout layout, const SparseScope& main,
                        const std::optional<SparseScope>& extra, const HostTensor* attn_sink,
                        int d_v, double scale);

// ---- sparse prefill (SPEC.md §5) ----
// q [s_q, h_q, d_qk]; kv [s_kv, h_kv, d_qk]; indices [s_q, h_kv, topk] (invalid: < 0, >= s_kv,
// or position >= topk_length[s]); topk_length [s_q] and attn_sink [h_q] may be null.
// Result: out [s_q, h_q, d_v], max_logits [s_q, h_q], lse [s_q, h_q].
Attention sparse_prefill(const HostTensor& q, const HostTensor& kv, const HostTensor& indices,
                         const HostTensor* topk_length, const HostTensor* attn_sink, int d_v,
                         double scale);

// ---- dense MHA prefill, variable length (SPEC.md §6) ----
// q [total_q, h_q, d_qk]; k [total_k, h_kv, d_qk]; v [total_k, h_kv, d_v]; sequence r owns
// rows [cu_q[r], cu_q[r + 1]) of q and [cu_k[r], cu_k[r + 1]) of k/v. Causal is bottom-right:
// query i sees keys j <= i + s_k - s_q. Result: out [total_q, h_q, d_v], lse [h_q, total_q];
// rows not in any sequence are NaN ("not compared").
Attention mha_varlen(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                     const std::vector<int32_t>& cu_q, const std::vector<int32_t>& cu_k,
                     bool causal, double scale);

// Gradients of mha_varlen's out and lse: dq [total_q, h_q, d_qk], dk [total_k, h_kv, d_qk],
// dv [total_k, h_kv, d_v], from dout [total_q, h_q, d_v] and, optionally, dlse [h_q, total_q]
// (null: zero). delta = dout . out uses the given `out` (what a backward kernel gets from the
// forward), while P is recomputed in float64. Rows outside every sequence are NaN ("not
// compared"); keys no query sees get 0. The *_noise vectors hold, per element, the root sum of
// squares of the terms summed into it (scale dS k for dq, ...): the scale of the error a kernel
// that rounds P and dS to 16 bits before its products may make there (harness.cpp); dq's and
// dk's also count the float32 error of dP - delta where the two cancel. A structural zero
// (nothing attended, a key no query sees) has noise 0.
struct MhaGrads {
  std::vector<double> dq, dk, dv;
  std::vector<double> dq_noise, dk_noise, dv_noise;
};
MhaGrads mha_varlen_bwd(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                        const HostTensor& dout, const HostTensor& out, const HostTensor* dlse,
                        const std::vector<int32_t>& cu_q, const std::vector<int32_t>& cu_k,
                        bool causal, double scale);

// ---- FP8 quantizer, written independently from SPEC.md §3 ----
// Value of an e4m3 ("fn") code from the format's definition: 1 sign, 4 exponent bits (bias 7),
// 3 mantissa bits, subnormals at exponent 0 (m * 2^-9), S.1111.111 is NaN, no infinities.
double e4m3_value(int code);
// e4m3 code nearest to y among all finite codes (ties to the even code; |y| > 448 saturates to
// +-448; NaN -> 0x7F with y's sign; the sign of zero and of values rounding to zero is kept).
uint8_t e4m3_nearest(double y);
// The same by exhaustive search over all 256 codes (slow; the definition the test checks the
// fast search against).
uint8_t e4m3_nearest_exhaustive(double y);
// Exponent e of the tile scale 2^e: the smallest power of two >= max(float(amax / 448), 1e-4f).
int scale_exponent(double amax);

// Quantizes every token of a bf16 cache [num_blocks, page, 1, d] into `quant` (an FP8 view of
// the same blocks and page size), writing exactly the bytes the layout defines for each token
// (for MODEL1 the per-token pad byte is left as it was).
void quantize_cache(const HostTensor& k_cache, KVCacheLayout layout, HostTensor& quant);
// Quantizes one token x[d] into the layout's token bytes and scale bytes. V3.2: `data` gets 656
// bytes (scales included), `scales` is unused. MODEL1: `data` gets 576 bytes, `scales` 7 bytes.
void quantize_token(KVCacheLayout layout, const uint16_t* x_bf16, uint8_t* data, uint8_t* scales);

}  // namespace flashmla::test::naive
