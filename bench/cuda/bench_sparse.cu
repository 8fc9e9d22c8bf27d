// GPU sparse decode / sparse prefill benchmark: see bench_sparse.h.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench_common.cuh"
#include "bench_sparse.h"
#include "kernel_timer.h"
#include "cuda/common/cuda_check.h"
#include "flashmla/flashmla.h"
#include "flashmla/fp8.h"

using namespace flashmla;
using bench::Buf;
using bench::fill;
using bench::fill_randn;
using bench::timed_calls;

namespace {

constexpr double kCeilTflops = 740.0;  // anchors.md: bf16 matmul 8192^3, 742-780
constexpr double kCeilGbps = 3000.0;   // anchors.md: device copy, read + written
constexpr int64_t kFlushBytes = 256ll << 20;      // ev: before each timed call
constexpr int64_t kKernelFlushBytes = 8ll << 30;  // krn: as anchors.md (8 GB memset)
constexpr int kKernelRuns = 30;                   // anchors.md: 30 calls
// ev: a ~0.5 ms single-thread spin before each call, as FlashMLA's harness and
// bench_dense_decode.cu do, so that the calls do not run back to back under the power limit.
constexpr int64_t kEvSpinCycles = 1'000'000;
constexpr int kDV = 512;
constexpr int64_t kPage = 64;
constexpr int64_t kBlockBytes = kPage * v32::kBytesPerToken;  // 41,984: a multiple of 16
// The decode cache is quantized this many page blocks at a time from a bf16 staging buffer
// (18.9 MB): the bf16 copy of S3's whole cache would be 5.6 GB.
constexpr int64_t kQuantChunkBlocks = 256;
constexpr int kCheckRows = 8;  // prefill query rows recomputed on the CPU
// The CPU check is there to catch a broken kernel, not to grade accuracy (the tests do that):
// FlashMLA's output is ~2e-3 from a float32 reference (anchors.md), so 1e-2 leaves room and still
// fails garbage. Both sides read the same FP8 bytes, so quantization error does not count.
constexpr double kCheckMaxRelL2 = 1e-2;
constexpr double kCheckMaxLseRel = 1e-3;

enum class Op { kDecode, kPrefill };

// One case of anchors.md. Decode: b requests of s_k cache tokens each (FP8 V3.2, d_qk 576);
// prefill: b = 1, s_k = s_kv, h_kv = 1.
struct Case {
  const char* name;
  Op op;
  int64_t b;
  int s_q, h_q, d_qk, topk;
  int64_t s_k;
  double fm_krn_us, fm_tflops, fm_gbps, fm_ev_us;  // anchors.md; fm_gbps 0: not given
  bool has_fm() const { return fm_krn_us > 0; }      // 0: a case of ours, no FlashMLA figure
};

const Case kCases[] = {
    {"S1", Op::kDecode, 128, 2, 128, 576, 2048, 32768, 373.2, 391, 1084, 372.4},
    {"S2", Op::kDecode, 64, 2, 128, 576, 2048, 32768, 192.9, 379, 1049, 193.1},
    {"S3", Op::kDecode, 148, 2, 128, 576, 16384, 32768, 3009.4, 449, 820, 3112.4},
    {"S4", Op::kDecode, 148, 2, 64, 576, 16384, 32768, 1932.9, 349, 1256, 1939.1},
    {"P1", Op::kPrefill, 1, 4096, 128, 576, 2048, 8192, 3449.3, 677, 0, 4235.8},
    {"P2", Op::kPrefill, 1, 4096, 128, 576, 2048, 32768, 3745.6, 624, 0, 4699.3},
    {"P3", Op::kPrefill, 1, 4096, 64, 576, 2048, 8192, 1770.3, 660, 0, 1976.7},
    {"P4", Op::kPrefill, 1, 4096, 128, 512, 2048, 8192, 3295.3, 667, 0, 4055.9},
    // Small batches, for the split over the keys (FLASHMLA_SPARSE_SPLIT; not in anchors.md):
    // 2, 32 and 16 work items of 32 or 256 key tiles on 132 SMs, and a short prefill.
    {"SL1", Op::kDecode, 1, 1, 128, 576, 2048, 32768, 0, 0, 0, 0},
    {"SL2", Op::kDecode, 16, 1, 128, 576, 2048, 32768, 0, 0, 0, 0},
    {"SL3", Op::kDecode, 8, 2, 64, 576, 16384, 32768, 0, 0, 0, 0},
    {"PL1", Op::kPrefill, 1, 16, 128, 576, 2048, 8192, 0, 0, 0, 0},
};

struct Result {
  std::string status = "ok";  // "skipped" (NotImplementedError), "error", "wrong" (check failed)
  std::string reason;         // the exception's message, or what the check found
  double ev_us = 0;           // ev: median, spin before each call
  double ev_hot_us = 0;       // the same without the spin
  double krn_us = 0;          // krn: span of a call's kernels, median (0: not measured)
  double krn_mean = 0;        // the same, mean
  double sum_us = 0;          // the kernels' durations summed (the profiler's figure), mean
  double main_us = 0;         // the first kernel's own span, median
  double ev8_us = 0;          // events around each call after the big memset, no CUPTI
  double ev8_cupti = 0;       // the same, in the CUPTI pass
  int kernels_per_call = 0;
  double flop = 0;
  double bytes = 0;           // 0: not counted (prefill: anchors.md gives no GB/s)
  int64_t unique_tokens = 0;  // decode: tokens read at least once, summed over requests
  double check_rel_l2 = -1;   // out vs the CPU backend (-1: not checked)
  double check_lse_rel = -1;  // lse, worst relative difference
};


// ---- timing (the method of bench_dense_decode.cu, for any call) ------------------------------

using Call = std::function<void()>;

struct Timing {
  int runs;             // ev calls
  KernelTimer& timer;
  void* flush;          // kFlushBytes
  void* kflush;         // kflush_bytes; null: krn not measured
  int64_t kflush_bytes;
};

// CUDA events around each of `runs` calls, each after a memset of `flush_bytes` and, when
// spin > 0, a spin of that many cycles (both outside the events): sorted µs.
std::vector<double> event_times(const Call& call, void* flush, int64_t flush_bytes, int runs,
                                int64_t spin) {
  return bench::flushed_event_times(call, flush, flush_bytes, runs, spin);
}

// anchors.md's kernel time: each call after an 8 GB memset; a call's GPU time is the span of its
// kernels' CUPTI records, first start to last end (a kernel launched early by programmatic
// dependent launch, e.g. a combine, would be counted twice by the sum of durations).
void kernel_time(const Timing& t, const Call& call, Result& r) {
  r.ev8_us = event_times(call, t.kflush, t.kflush_bytes, kKernelRuns, 0)[kKernelRuns / 2];
  // One call more than timed, its records dropped: CUPTI's start-up delays the first traced
  // call's later kernels (bench_dense_decode.cu, session 11).
  const int traced = kKernelRuns + 1;
  std::vector<KernelSpan> spans;
  t.timer.start();
  try {
    r.ev8_cupti = event_times(call, t.kflush, t.kflush_bytes, traced, 0)[traced / 2];
  } catch (...) {
    t.timer.stop();
    throw;
  }
  spans = t.timer.stop();
  // Every call launches the same kernels: consecutive groups of spans.size() / traced records,
  // in start order, are one call each.
  if (spans.empty() || spans.size() % traced != 0) {
    std::printf("     (krn: %zu kernel records for %d calls; not measured)\n", spans.size(),
                traced);
    return;
  }
  const size_t per_call = spans.size() / traced;
  spans.erase(spans.begin(), spans.begin() + static_cast<std::ptrdiff_t>(per_call));
  std::vector<double> lens(kKernelRuns), mains(kKernelRuns);
  double total = 0, span = 0;
  for (int i = 0; i < kKernelRuns; ++i) {
    const uint64_t first = spans[i * per_call].start_ns;
    uint64_t last = 0;
    for (size_t j = i * per_call; j < (i + 1) * per_call; ++j) {
      total += (spans[j].end_ns - spans[j].start_ns) * 1e-3;
      last = std::max(last, spans[j].end_ns);
    }
    lens[i] = (last - first) * 1e-3;
    mains[i] = (spans[i * per_call].end_ns - first) * 1e-3;
    span += lens[i];
  }
  std::sort(lens.begin(), lens.end());
  std::sort(mains.begin(), mains.end());
  r.krn_us = lens[kKernelRuns / 2];
  r.krn_mean = span / kKernelRuns;
  r.sum_us = total / kKernelRuns;
  r.main_us = mains[kKernelRuns / 2];
  r.kernels_per_call = static_cast<int>(per_call);
}

void measure(const Timing& t, const Call& call, Result& r) {
  r.ev_us = event_times(call, t.flush, kFlushBytes, t.runs, kEvSpinCycles)[t.runs / 2];
  r.ev_hot_us = event_times(call, t.flush, kFlushBytes, t.runs, 0)[t.runs / 2];
  if (t.timer.available() && t.kflush) kernel_time(t, call, r);
}

// ---- data ------------------------------------------------------------------------------------

// For each of `rows` queries, topk distinct positions of [0, n) in random order. A partial
// Fisher-Yates shuffle of one pool that is never reset (whatever order the pool is in, the next
// topk draws pick a uniform random ordered subset), so a row costs O(topk), not O(n).
std::vector<int32_t> random_positions(int64_t rows, int topk, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> pool(n);
  std::iota(pool.begin(), pool.end(), 0);
  std::vector<int32_t> out(rows * topk);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < topk; ++i) {
      // Modulo bias ~n / 2^64: nil.
      const int64_t j = i + static_cast<int64_t>(rng() % static_cast<uint64_t>(n - i));
      std::swap(pool[i], pool[j]);
      out[r * topk + i] = pool[i];
    }
  return out;
}

// Tokens a decode call must read at least once: per request, the union of its queries'
// selections (counted exactly).
int64_t unique_tokens(const Case& c, const std::vector<int32_t>& pos) {
  const int64_t per_request = int64_t{c.s_q} * c.topk;
  std::vector<uint8_t> seen(c.s_k);
  int64_t total = 0;
  for (int64_t r = 0; r < c.b; ++r) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t i = r * per_request; i < (r + 1) * per_request; ++i)
      total += std::exchange(seen[pos[i]], 1) == 0;
  }
  return total;
}

// A V3.2 FP8 cache of `blocks` page blocks: bf16 randn/10 clamped, quantized by the library's
// own kernel, kQuantChunkBlocks blocks at a time.
void make_v32_cache(const Buf& cache, int64_t blocks, Device gpu) {
  const int64_t chunk_elems = kQuantChunkBlocks * kPage * v32::kDimQK;
  Buf staging(chunk_elems * 2);
  for (int64_t b0 = 0; b0 < blocks; b0 += kQuantChunkBlocks) {
    const int64_t nb = std::min(kQuantChunkBlocks, blocks - b0);
    fill_randn<<<1024, 256>>>(staging.as<uint16_t>(), nb * kPage * v32::kDimQK, 2,
                              b0 * kPage * v32::kDimQK, 10.0f);
    FLASHMLA_CUDA_CHECK_LAUNCH("fill_randn");
    KVQuantizeParams qp;
    qp.layout = KVCacheLayout::kV32;
    qp.k_cache =
        TensorView::contiguous(staging.p, DType::kBFloat16, gpu, {nb, kPage, 1, v32::kDimQK});
    qp.quant_cache = TensorView::contiguous(cache.as<uint8_t>() + b0 * kBlockBytes,
                                            DType::kUInt8, gpu,
                                            {nb, kPage, 1, v32::kBytesPerToken});
    kv_quantize(qp);
  }
  FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
}

template <typename T>
std::vector<T> download(const void* base, int64_t first, int64_t n) {
  std::vector<T> v(n);
  FLASHMLA_CUDA_CHECK(cudaMemcpy(v.data(), static_cast<const T*>(base) + first, n * sizeof(T),
                                 cudaMemcpyDeviceToHost));
  return v;
}

// ---- the check against the CPU backend -------------------------------------------------------

struct Diff {
  double rel_l2 = 0;   // of out
  double lse_rel = 0;  // worst |lse - ref| / |ref|; inf if any is not finite
};

Diff compare(const std::vector<uint16_t>& out, const std::vector<uint16_t>& ref,
             const std::vector<float>& lse, const std::vector<float>& lse_ref) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double a = fp8::bf16_to_float(out[i]), b = fp8::bf16_to_float(ref[i]);
    err += (a - b) * (a - b);
    norm += b * b;
  }
  Diff d;
  d.rel_l2 = std::sqrt(err / std::max(norm, 1e-30));  // NaN in out stays NaN
  for (size_t i = 0; i < lse.size(); ++i) {
    const double ref = lse_ref[i];
    const double e = std::fabs(lse[i] - ref) / std::max(1e-6, std::fabs(ref));
    d.lse_rel = std::isfinite(e) ? std::max(d.lse_rel, e) : INFINITY;
  }
  return d;
}

// Keeps the worse of the checks so far (NaN wins) and marks the result wrong past the limits.
void record_check(Result& r, const Diff& d) {
  auto worse = [](double so_far, double v) {
    return so_far < 0 ? v : std::isnan(so_far) || std::isnan(v) ? NAN : std::max(so_far, v);
  };
  r.check_rel_l2 = worse(r.check_rel_l2, d.rel_l2);
  r.check_lse_rel = worse(r.check_lse_rel, d.lse_rel);
  if (!(r.check_rel_l2 <= kCheckMaxRelL2) || !(r.check_lse_rel <= kCheckMaxLseRel)) {
    r.status = "wrong";
    char b[160];
    std::snprintf(b, sizeof b, "differs from the CPU backend: out rel-L2 %.3g (limit %.0e), "
                  "lse rel %.3g (limit %.0e)", r.check_rel_l2, kCheckMaxRelL2, r.check_lse_rel,
                  kCheckMaxLseRel);
    r.reason = b;
  }
}

// Decode request r recomputed by the CPU backend from the same FP8 bytes: its pages copied, in
// page order, into a cache of their own, where a token's position in the request is its slot.
void check_decode(const Case& c, const SparseDecodeParams& p, const std::vector<int32_t>& table,
                  const std::vector<int32_t>& pos, int64_t r, Result& res) {
  const int64_t pages = static_cast<int64_t>(table.size()) / c.b;
  std::vector<uint8_t> cache(pages * kBlockBytes);
  for (int64_t j = 0; j < pages; ++j)
    FLASHMLA_CUDA_CHECK(cudaMemcpy(cache.data() + j * kBlockBytes,
                                   p.k_cache.ptr<uint8_t>() + table[r * pages + j] * kBlockBytes,
                                   kBlockBytes, cudaMemcpyDeviceToHost));
  const int64_t q_elems = int64_t{c.s_q} * c.h_q * c.d_qk, o_elems = int64_t{c.s_q} * c.h_q * kDV;
  const int64_t l_elems = int64_t{c.h_q} * c.s_q, i_elems = int64_t{c.s_q} * c.topk;
  std::vector<uint16_t> q = download<uint16_t>(p.q.data, r * q_elems, q_elems);
  std::vector<int32_t> idx(pos.begin() + r * i_elems, pos.begin() + (r + 1) * i_elems);
  std::vector<uint16_t> out(o_elems);
  std::vector<float> lse(l_elems);
  SparseDecodeParams cp;
  cp.q = TensorView::contiguous(q.data(), DType::kBFloat16, kCPU, {1, c.s_q, c.h_q, c.d_qk});
  cp.k_cache = TensorView::contiguous(cache.data(), DType::kUInt8, kCPU,
                                      {pages, kPage, 1, v32::kBytesPerToken});
  cp.indices = TensorView::contiguous(idx.data(), DType::kInt32, kCPU, {1, c.s_q, c.topk});
  cp.out = TensorView::contiguous(out.data(), DType::kBFloat16, kCPU, {1, c.s_q, c.h_q, kDV});
  cp.lse = TensorView::contiguous(lse.data(), DType::kFloat32, kCPU, {1, c.h_q, c.s_q});
  sparse_decode(cp);
  record_check(res, compare(download<uint16_t>(p.out.data, r * o_elems, o_elems), out,
                            download<float>(p.lse.data, r * l_elems, l_elems), lse));
}

// kCheckRows query rows of a prefill, spread over s_q (first and last included), recomputed by
// the CPU backend.
void check_prefill(const Case& c, const SparsePrefillParams& p, const std::vector<int32_t>& idx,
                   Result& res) {
  const int64_t rows = std::min<int64_t>(kCheckRows, c.s_q);
  const int64_t q_row = int64_t{c.h_q} * c.d_qk, o_row = int64_t{c.h_q} * kDV;
  std::vector<uint16_t> kv = download<uint16_t>(p.kv.data, 0, c.s_k * c.d_qk);
  std::vector<uint16_t> q(rows * q_row), got(rows * o_row), out(rows * o_row);
  std::vector<int32_t> sel(rows * c.topk);
  std::vector<float> got_lse(rows * c.h_q), lse(rows * c.h_q), max_logits(rows * c.h_q);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t row = rows > 1 ? i * (c.s_q - 1) / (rows - 1) : 0;
    const auto qs = download<uint16_t>(p.q.data, row * q_row, q_row);
    const auto os = download<uint16_t>(p.out.data, row * o_row, o_row);
    const auto ls = download<float>(p.lse.data, row * c.h_q, c.h_q);
    std::copy(qs.begin(), qs.end(), q.begin() + i * q_row);
    std::copy(os.begin(), os.end(), got.begin() + i * o_row);
    std::copy(ls.begin(), ls.end(), got_lse.begin() + i * c.h_q);
    std::copy_n(idx.begin() + row * c.topk, c.topk, sel.begin() + i * c.topk);
  }
  SparsePrefillParams cp;
  cp.q = TensorView::contiguous(q.data(), DType::kBFloat16, kCPU, {rows, c.h_q, c.d_qk});
  cp.kv = TensorView::contiguous(kv.data(), DType::kBFloat16, kCPU, {c.s_k, 1, c.d_qk});
  cp.indices = TensorView::contiguous(sel.data(), DType::kInt32, kCPU, {rows, 1, c.topk});
  cp.sm_scale = p.sm_scale;
  cp.d_v = kDV;
  cp.out = TensorView::contiguous(out.data(), DType::kBFloat16, kCPU, {rows, c.h_q, kDV});
  cp.max_logits = TensorView::contiguous(max_logits.data(), DType::kFloat32, kCPU, {rows, c.h_q});
  cp.lse = TensorView::contiguous(lse.data(), DType::kFloat32, kCPU, {rows, c.h_q});
  sparse_prefill(cp);
  record_check(res, compare(got, out, got_lse, lse));
}

// ---- the cases -------------------------------------------------------------------------------

Result run_decode(const Case& c, const Timing& t) {
  const Device gpu = cuda_device(0);
  const int64_t pages = (c.s_k + kPage - 1) / kPage, blocks = c.b * pages;
  const int64_t rows = c.b * c.s_q, n_idx = rows * c.topk;
  // Request r's page j lives in block table[r * pages + j]: a random permutation of the cache.
  std::vector<int32_t> table(blocks);
  std::iota(table.begin(), table.end(), 0);
  std::mt19937_64 rng(7);
  std::shuffle(table.begin(), table.end(), rng);
  // Each query's tokens by position in its request, then as cache slots.
  const std::vector<int32_t> pos = random_positions(rows, c.topk, c.s_k, 11);
  std::vector<int32_t> slots(n_idx);
  for (int64_t i = 0; i < n_idx; ++i) {
    const int64_t r = i / (int64_t{c.s_q} * c.topk);
    slots[i] = static_cast<int32_t>(int64_t{table[r * pages + pos[i] / kPage]} * kPage +
                                    pos[i] % kPage);
  }
  Result res;
  res.unique_tokens = unique_tokens(c, pos);

  Buf cache(blocks * kBlockBytes), q(rows * c.h_q * c.d_qk * 2), idx(n_idx * 4),
      out(rows * c.h_q * kDV * 2), lse(rows * c.h_q * 4);
  fill(q, rows * c.h_q * c.d_qk, 1, 1.0f);  // anchors.md: sparse decode q = randn clamped
  make_v32_cache(cache, blocks, gpu);
  FLASHMLA_CUDA_CHECK(cudaMemcpy(idx.p, slots.data(), n_idx * 4, cudaMemcpyHostToDevice));

  SparseDecodeParams p;
  p.q = TensorView::contiguous(q.p, DType::kBFloat16, gpu, {c.b, c.s_q, c.h_q, c.d_qk});
  p.k_cache = TensorView::contiguous(cache.p, DType::kUInt8, gpu,
                                     {blocks, kPage, 1, v32::kBytesPerToken});
  p.indices = TensorView::contiguous(idx.p, DType::kInt32, gpu, {c.b, c.s_q, c.topk});
  p.head_dim_v = kDV;
  p.out = TensorView::contiguous(out.p, DType::kBFloat16, gpu, {c.b, c.s_q, c.h_q, kDV});
  p.lse = TensorView::contiguous(lse.p, DType::kFloat32, gpu, {c.b, c.h_q, c.s_q});
  const Call call = [&] { sparse_decode(p); };
  call();  // warm-up; throws NotImplementedError where this build has no kernel
  FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
  check_decode(c, p, table, pos, 0, res);
  check_decode(c, p, table, pos, c.b - 1, res);
  measure(t, call, res);
  // anchors.md: FLOP over the attended tokens (all topk are valid);
  // bytes = unique tokens * 656 + Q + O.
  res.flop = 2.0 * c.h_q * double(rows) * c.topk * (c.d_qk + kDV);
  res.bytes = double(res.unique_tokens) * v32::kBytesPerToken +
              double(rows) * c.h_q * (c.d_qk + kDV) * 2.0;
  return res;
}

Result run_prefill(const Case& c, const Timing& t) {
  const Device gpu = cuda_device(0);
  const int64_t s_q = c.s_q, s_kv = c.s_k, n_idx = s_q * c.topk;
  const std::vector<int32_t> sel = random_positions(s_q, c.topk, s_kv, 13);  // [s_q, 1, topk]
  Buf q(s_q * c.h_q * c.d_qk * 2), kv(s_kv * c.d_qk * 2), idx(n_idx * 4),
      out(s_q * c.h_q * kDV * 2), max_logits(s_q * c.h_q * 4), lse(s_q * c.h_q * 4);
  fill(q, s_q * c.h_q * c.d_qk, 3, 10.0f);
  fill(kv, s_kv * c.d_qk, 4, 10.0f);
  FLASHMLA_CUDA_CHECK(cudaMemcpy(idx.p, sel.data(), n_idx * 4, cudaMemcpyHostToDevice));

  SparsePrefillParams p;
  p.q = TensorView::contiguous(q.p, DType::kBFloat16, gpu, {s_q, c.h_q, c.d_qk});
  p.kv = TensorView::contiguous(kv.p, DType::kBFloat16, gpu, {s_kv, 1, c.d_qk});
  p.indices = TensorView::contiguous(idx.p, DType::kInt32, gpu, {s_q, 1, c.topk});
  p.sm_scale = 1.0f / std::sqrt(static_cast<float>(c.d_qk));
  p.d_v = kDV;
  p.out = TensorView::contiguous(out.p, DType::kBFloat16, gpu, {s_q, c.h_q, kDV});
  p.max_logits = TensorView::contiguous(max_logits.p, DType::kFloat32, gpu, {s_q, c.h_q});
  p.lse = TensorView::contiguous(lse.p, DType::kFloat32, gpu, {s_q, c.h_q});
  const Call call = [&] { sparse_prefill(p); };
  call();  // warm-up; throws NotImplementedError where this build has no kernel
  FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
  Result res;
  check_prefill(c, p, sel, res);
  measure(t, call, res);
  res.flop = 2.0 * c.h_q * double(s_q) * c.topk * (c.d_qk + kDV);
  return res;
}

// ---- output ----------------------------------------------------------------------------------

std::string shape_of(const Case& c) {
  char s[96];
  if (c.op == Op::kDecode)
    std::snprintf(s, sizeof s, "b=%lld s_q=%d h_q=%d topk=%d s_k=%lld", (long long)c.b, c.s_q,
                  c.h_q, c.topk, (long long)c.s_k);
  else
    std::snprintf(s, sizeof s, "s_q=%d s_kv=%lld topk=%d h_q=%d d_qk=%d", c.s_q,
                  (long long)c.s_k, c.topk, c.h_q, c.d_qk);
  return s;
}

const char* op_name(const Case& c) {
  return c.op == Op::kDecode ? "sparse_decode" : "sparse_prefill";
}

// A JSON object written field by field; a figure that is not known is null.
class Json {
 public:
  Json& num(const char* key, double v, bool known = true) {
    char b[32] = "null";
    if (known && std::isfinite(v)) std::snprintf(b, sizeof b, "%.6g", v);
    return raw(key, b);
  }
  Json& str(const char* key, const std::string& v, bool known = true) {
    if (!known) return raw(key, "null");
    std::string q = "\"";
    for (const char ch : v) {
      if (ch == '"' || ch == '\\') q += '\\';
      if (static_cast<unsigned char>(ch) < 0x20) q += ' ';
      else q += ch;
    }
    return raw(key, q + "\"");
  }
  std::string done() const { return s_ + "}"; }

 private:
  Json& raw(const char* key, const std::string& v) {
    s_ += (s_.size() > 1 ? ", \"" : "\"") + std::string(key) + "\": " + v;
    return *this;
  }
  std::string s_ = "{";
};

std::string json_case(const Case& c, const Result& r) {
  const bool ran = r.status == "ok" || r.status == "wrong";
  const bool krn = ran && r.krn_us > 0, decode = c.op == Op::kDecode;
  const double us = krn ? r.krn_us : r.ev_us;
  Json j;
  j.str("case", c.name).str("op", op_name(c));
  if (decode) j.num("b", double(c.b)).num("s_k", double(c.s_k)).num("page", double(kPage));
  else j.num("s_kv", double(c.s_k)).num("h_kv", 1);
  j.num("s_q", c.s_q).num("h_q", c.h_q).num("d_qk", c.d_qk).num("d_v", kDV).num("topk", c.topk);
  j.str("status", r.status).str("reason", r.reason, !r.reason.empty());
  j.num("krn_us", r.krn_us, krn).num("main_kernel_us", r.main_us, krn)
      .num("kernel_sum_us", r.sum_us, krn).num("kernels_per_call", r.kernels_per_call, krn)
      .num("ev_us", r.ev_us, ran).num("ev_hot_us", r.ev_hot_us, ran)
      .num("ev8_us", r.ev8_us, krn);
  j.str("timed_by", krn ? "krn" : "ev", ran);
  j.num("flop", r.flop, ran).num("bytes", r.bytes, ran && decode)
      .num("unique_tokens", double(r.unique_tokens), ran && decode);
  j.num("tflops", r.flop / us * 1e-6, ran).num("gbps", r.bytes / us * 1e-3, ran && decode)
      .num("frac_tflops", r.flop / us * 1e-6 / kCeilTflops, ran)
      .num("frac_gbps", r.bytes / us * 1e-3 / kCeilGbps, ran && decode);
  const bool fm = c.has_fm();
  j.num("flashmla_krn_us", c.fm_krn_us, fm).num("flashmla_ev_us", c.fm_ev_us, fm)
      .num("flashmla_tflops", c.fm_tflops, fm).num("flashmla_gbps", c.fm_gbps, c.fm_gbps > 0);
  j.num("ratio_krn", r.krn_us / c.fm_krn_us, krn && fm)
      .num("ratio_ev", r.ev_us / c.fm_ev_us, ran && fm);
  j.num("check_rel_l2", r.check_rel_l2, ran && r.check_rel_l2 >= 0)
      .num("check_lse_rel", r.check_lse_rel, ran && r.check_lse_rel >= 0);
  return j.done();
}

void print_case(const Case& c, const Result& r, FILE* csv) {
  const std::string shape = shape_of(c);
  if (r.status == "skipped" || r.status == "error") {
    std::printf("%-4s %-42s %s: %s\n", c.name, shape.c_str(),
                r.status == "skipped" ? "skipped" : "ERROR", r.reason.c_str());
    return;
  }
  const bool krn = r.krn_us > 0, decode = c.op == Op::kDecode;
  const double us = krn ? r.krn_us : r.ev_us;
  const double tflops = r.flop / us * 1e-6, gbps = r.bytes / us * 1e-3;
  const bool fm = c.has_fm();
  char krn_us[16] = "-", gb[16] = "-", gb_frac[16] = "-", krn_ratio[16] = "-", fm_krn[16] = "-",
       ev_ratio[16] = "-";
  if (krn) std::snprintf(krn_us, sizeof krn_us, "%.1f", r.krn_us);
  if (krn && fm) std::snprintf(krn_ratio, sizeof krn_ratio, "%.3fx", r.krn_us / c.fm_krn_us);
  if (fm) std::snprintf(fm_krn, sizeof fm_krn, "%.1f", c.fm_krn_us);
  if (fm) std::snprintf(ev_ratio, sizeof ev_ratio, "%.3fx", r.ev_us / c.fm_ev_us);
  if (decode) std::snprintf(gb, sizeof gb, "%.0f", gbps);
  if (decode) std::snprintf(gb_frac, sizeof gb_frac, "%.0f%%", 100 * gbps / kCeilGbps);
  std::printf("%-4s %-42s %8.1f %8s %7.1f %5.0f%% %6s %5s %8s %9s %9s  %s\n", c.name,
              shape.c_str(), r.ev_us, krn_us, tflops, 100 * tflops / kCeilTflops, gb, gb_frac,
              fm_krn, krn_ratio, ev_ratio, r.status == "ok" ? "ok" : "WRONG");
  if (fm) {
    std::printf("     (FlashMLA: %.0f TFLOPS", c.fm_tflops);
    if (c.fm_gbps > 0) std::printf(", %.0f GB/s", c.fm_gbps);
    std::printf(", ev %.1f us; ev hot %.1f", c.fm_ev_us, r.ev_hot_us);
  } else {
    std::printf("     (no FlashMLA figure; ev hot %.1f", r.ev_hot_us);
  }
  if (krn)
    std::printf("; krn mean %.1f; first kernel alone %.1f; %d kernel(s) a call, durations "
                "summed %.1f; events after the big memset %.1f, with CUPTI on %.1f",
                r.krn_mean, r.main_us, r.kernels_per_call, r.sum_us, r.ev8_us, r.ev8_cupti);
  if (decode)
    std::printf("; unique tokens %lld (%.0f a request)", (long long)r.unique_tokens,
                double(r.unique_tokens) / c.b);
  std::printf("; vs CPU: out rel-L2 %.2e, lse rel %.2e)\n", r.check_rel_l2, r.check_lse_rel);
  if (r.status == "wrong") std::printf("     WRONG: %s\n", r.reason.c_str());
  // Columns as bench_dense_decode.cu's rows: ev us, TFLOPS and GB/s from ev, ev ratio, krn us,
  // krn mean, kernels summed, krn ratio, ev hot; then the check's rel-L2.
  if (csv)
    std::fprintf(csv, "gpu %s %s,%s,%.3f,%.4f,%.3f,%.4f,%.3f,%.3f,%.3f,%.4f,%.3f,%.3g\n",
                 op_name(c), c.name, shape.c_str(), r.ev_us, r.flop / r.ev_us * 1e-6,
                 r.bytes / r.ev_us * 1e-3, fm ? r.ev_us / c.fm_ev_us : 0.0, r.krn_us, r.krn_mean,
                 r.sum_us, krn && fm ? r.krn_us / c.fm_krn_us : 0.0, r.ev_hot_us,
                 r.check_rel_l2);
}

}  // namespace

int bench_sparse(int argc, char** argv) {
  int runs = 50;
  std::string csv, json, pick;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::max(30, std::atoi(argv[++i]));
    else if (a == "--csv" && i + 1 < argc) csv = argv[++i];
    else if (a == "--json" && i + 1 < argc) json = argv[++i];
    else if (a == "--case" && i + 1 < argc) pick = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_sparse [--runs R] [--case S1,P2] [--csv FILE] "
                           "[--json FILE]\n");
      return 2;
    }
  }
  if (const char* env = std::getenv("FLASHMLA_BENCH_CASES"); pick.empty() && env) pick = env;
  const std::string list = "," + pick + ",";
  std::vector<const Case*> cases;
  for (const Case& c : kCases)
    if (pick.empty() || list.find(std::string(",") + c.name + ",") != std::string::npos)
      cases.push_back(&c);
  if (cases.empty()) {  // e.g. FLASHMLA_BENCH_CASES naming dense cases only
    std::printf("bench_sparse: no case selected by '%s'\n", pick.c_str());
    return 0;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    std::printf("bench_sparse: skipped, no CUDA device\n");
    return 0;
  }
  FILE* j = json.empty() ? nullptr : std::fopen(json.c_str(), "w");  // checked before the runs
  if (!json.empty() && !j) {
    std::fprintf(stderr, "bench_sparse: cannot write --json file %s\n", json.c_str());
    return 1;
  }
  FILE* f = csv.empty() ? nullptr : std::fopen(csv.c_str(), "a");
  void* kflush = nullptr;
  void* flush = nullptr;
  int status = 0;
  try {
    cudaDeviceProp prop{};
    FLASHMLA_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    // FLASHMLA_BENCH_NO_CUPTI=1 (e.g. under ncu, itself a CUPTI client): events only.
    const bool no_cupti = std::getenv("FLASHMLA_BENCH_NO_CUPTI") != nullptr;
    KernelTimer timer(!no_cupti);
    // The krn flush: 8 GB as in anchors.md, less on a smaller card (S3 needs 3.2 GB beside it).
    size_t free_bytes = 0, total_bytes = 0;
    FLASHMLA_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const int64_t kflush_bytes =
        std::min<int64_t>(kKernelFlushBytes, static_cast<int64_t>(free_bytes) / 4);
    if (timer.available() && cudaMalloc(&kflush, kflush_bytes) != cudaSuccess) {
      cudaGetLastError();
      kflush = nullptr;
    }
    FLASHMLA_CUDA_CHECK(cudaMalloc(&flush, kFlushBytes));
    const Timing timing{runs, timer, flush, kflush, kflush_bytes};
    std::printf("GPU sparse decode (FP8 V3.2 cache, page %lld, d_qk 576) and sparse prefill "
                "(bf16, h_kv 1) on %s (%d SMs); d_v 512; all indices valid and distinct\n"
                "  ev: CUDA events, median of %d calls, 256 MB memset and a ~0.5 ms spin before "
                "each; ev hot: the same without the spin\n",
                (long long)kPage, prop.name, prop.multiProcessorCount, runs);
    if (kflush)
      std::printf("  krn: GPU time of a call from its kernels' CUPTI records (first start to last "
                  "end), median of %d calls, %.1f GB memset before each; TFLOPS and GB/s from "
                  "krn\n",
                  kKernelRuns, kflush_bytes / 1e9);
    else
      std::printf("  krn: not measured (%s); TFLOPS and GB/s from ev\n",
                  no_cupti ? "FLASHMLA_BENCH_NO_CUPTI"
                  : timer.available() ? "no memory for the flush" : timer.reason().c_str());
    std::printf("  FM: FlashMLA on an H100 (anchors.md); ratios ours / FlashMLA, > 1 = slower; "
                "GB/s: unique tokens * 656 + Q + O (decode only)\n");
    std::printf("%-4s %-42s %8s %8s %7s %6s %6s %5s %8s %9s %9s  %s\n", "case", "shape",
                "ev us", "krn us", "TFLOPS", "/740", "GB/s", "/3000", "FM krn", "krn vs FM",
                "ev vs FM", "check");
    std::vector<std::string> json_cases;
    for (const Case* cp : cases) {
      const Case& c = *cp;
      Result r;
      try {
        r = c.op == Op::kDecode ? run_decode(c, timing) : run_prefill(c, timing);
      } catch (const flashmla::Error& e) {
        cudaGetLastError();  // a failed launch or allocation must not fail the next case
        r = Result{};
        const bool missing = e.kind() == ErrorKind::kNotImplemented;
        r.status = missing ? "skipped" : "error";
        r.reason = std::string(missing ? "NotImplementedError: " : "") + e.what();
      }
      if (r.status == "error" || r.status == "wrong") status = 1;
      print_case(c, r, f);
      json_cases.push_back(json_case(c, r));
    }
    if (j) {
      std::fprintf(j, "{\"benchmark\": \"sparse\", \"gpu\": \"%s\", \"sms\": %d, "
                   "\"decode_cache\": \"fp8 V3.2\", \"page\": %lld, \"d_v\": %d, "
                   "\"ceil_tflops\": %.0f, \"ceil_gbps\": %.0f, \"ev_runs\": %d, "
                   "\"krn_runs\": %s,\n \"cases\": [",
                   prop.name, prop.multiProcessorCount, (long long)kPage, kDV, kCeilTflops,
                   kCeilGbps, runs, kflush ? std::to_string(kKernelRuns).c_str() : "null");
      for (size_t i = 0; i < json_cases.size(); ++i)
        std::fprintf(j, "%s\n  %s", i ? "," : "", json_cases[i].c_str());
      std::fprintf(j, "\n]}\n");
      std::fclose(j);
      j = nullptr;
    }
  } catch (const flashmla::Error& e) {
    std::fprintf(stderr, "bench_sparse: %s\n", e.what());
    status = 1;
  }
  if (j) std::fclose(j);  // left empty on a setup failure: no partial JSON
  if (f) std::fclose(f);
  if (kflush) cudaFree(kflush);
  if (flush) cudaFree(flush);
  return status;
}
