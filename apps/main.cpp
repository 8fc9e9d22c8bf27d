// flashmla_main: runs one realistic MLA decode problem (DeepSeek-V3 shape by default) on the
// best backend present, checks it against a float64 reference on sampled requests, and prints
// time, TFLOPS and GB/s (formulas from SPEC.md / anchors.md).
//
//   flashmla_main [--device auto|cpu|cuda] [--b N] [--s_q N] [--h_q N] [--h_kv N] [--s_k N]
//                 [--page N] [--d_qk 576|512] [--causal] [--iters N] [--seed N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "flashmla/flashmla.h"
#include "flashmla/fp8.h"

#if FLASHMLA_WITH_CUDA
#include <cuda_runtime.h>
#endif

using namespace flashmla;

namespace {

struct Options {
  std::string device = "auto";
  int64_t b = -1;  // default depends on the backend
  int s_q = 1, h_q = 128, h_kv = 1, s_k = 4096, page = 64, d_qk = 576, iters = 20;
  bool causal = false;
  uint64_t seed = 1234;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "%s\nusage: flashmla_main [--device auto|cpu|cuda] [--b N] [--s_q N] [--h_q N] "
               "[--h_kv N] [--s_k N] [--page N] [--d_qk 576|512] [--causal] [--iters N] "
               "[--seed N]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> long long {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return std::atoll(argv[++i]);
    };
    if (a == "--device") {
      if (i + 1 >= argc) usage("missing value for --device");
      o.device = argv[++i];
    } else if (a == "--b") o.b = next();
    else if (a == "--s_q") o.s_q = static_cast<int>(next());
    else if (a == "--h_q") o.h_q = static_cast<int>(next());
    else if (a == "--h_kv") o.h_kv = static_cast<int>(next());
    else if (a == "--s_k") o.s_k = static_cast<int>(next());
    else if (a == "--page") o.page = static_cast<int>(next());
    else if (a == "--d_qk") o.d_qk = static_cast<int>(next());
    else if (a == "--iters") o.iters = static_cast<int>(next());
    else if (a == "--seed") o.seed = static_cast<uint64_t>(next());
    else if (a == "--causal") o.causal = true;
    else if (a == "--help" || a == "-h") usage("flashmla_main: dense MLA decode, checked and timed");
    else usage(("unknown argument " + a).c_str());
  }
  return o;
}

// Host copy of one problem's inputs.
struct Problem {
  int64_t b, num_blocks, max_blocks;
  int s_q, h_q, h_kv, d_qk, d_v, page;
  std::vector<uint16_t> q, k_cache;  // bf16 bits
  std::vector<int32_t> block_table, seqlens;
};

Problem make_problem(const Options& o, int64_t b) {
  Problem p{};
  p.b = b;
  p.s_q = o.s_q;
  p.h_q = o.h_q;
  p.h_kv = o.h_kv;
  p.d_qk = o.d_qk;
  p.d_v = 512;
  p.page = o.page;
  p.max_blocks = (o.s_k + o.page - 1) / o.page;
  p.num_blocks = b * p.max_blocks;
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto act = [&]() {  // randn / 10 clamped to [-1, 1] (SPEC.md §7)
    return fp8::float_to_bf16(std::clamp(normal(rng) / 10.0f, -1.0f, 1.0f));
  };
  p.q.resize(static_cast<size_t>(b) * p.s_q * p.h_q * p.d_qk);
  for (auto& v : p.q) v = act();
  p.k_cache.resize(static_cast<size_t>(p.num_blocks) * p.page * p.h_kv * p.d_qk);
  for (auto& v : p.k_cache) v = act();
  // A random page permutation, as in production caches.
  std::vector<int32_t> perm(static_cast<size_t>(p.num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  p.block_table = perm;
  p.seqlens.assign(static_cast<size_t>(b), o.s_k);
  return p;
}

// float64 reference for one (request, query, head) row.
void reference_row(const Problem& p, float scale, bool causal, int64_t r, int i, int h,
                   std::vector<double>& out, double& lse) {
  const int kvh = h / (p.h_q / p.h_kv);
  const int s_k = p.seqlens[r];
  const int limit = causal ? s_k - p.s_q + i + 1 : s_k;
  const uint16_t* q = &p.q[((r * p.s_q + i) * p.h_q + h) * static_cast<size_t>(p.d_qk)];
  std::vector<double> logits(std::max(limit, 0));
  double mx = -INFINITY;
  auto krow = [&](int j) {
    const int64_t blk = p.block_table[r * p.max_blocks + j / p.page];
    return &p.k_cache[((blk * p.page + j % p.page) * p.h_kv + kvh) * static_cast<size_t>(p.d_qk)];
  };
  for (int j = 0; j < limit; ++j) {
    const uint16_t* k = krow(j);
    double dot = 0;
    for (int d = 0; d < p.d_qk; ++d) dot += double(fp8::bf16_to_float(q[d])) * fp8::bf16_to_float(k[d]);
    logits[j] = dot * scale;
    mx = std::max(mx, logits[j]);
  }
  out.assign(p.d_v, 0.0);
  if (limit <= 0) {
    lse = INFINITY;
    return;
  }
  double sum = 0;
  for (int j = 0; j < limit; ++j) {
    const double w = std::exp(logits[j] - mx);
    sum += w;
    const uint16_t* k = krow(j);
    for (int d = 0; d < p.d_v; ++d) out[d] += w * fp8::bf16_to_float(k[d]);
  }
  for (auto& v : out) v /= sum;
  lse = mx + std::log(sum);
}

struct Timing {
  double median_us = 0;
  std::string method;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs plan + decode on `device`; returns outputs (host) and the timing of the run step.
Timing run(const Problem& p, const Options& o, Device device, std::vector<uint16_t>& out,
           std::vector<float>& lse) {
  const DecodePlan plan =
      dense_decode_plan_info(p.b, p.s_q, p.h_q, p.h_kv, p.d_v, o.causal, device);
  const size_t out_elems = static_cast<size_t>(p.b) * p.s_q * p.h_q * p.d_v;
  const size_t lse_elems = static_cast<size_t>(p.b) * p.h_q * p.s_q;
  out.assign(out_elems, 0xFFFF);  // NaN poison
  lse.assign(lse_elems, NAN);
  std::vector<int32_t> sched(static_cast<size_t>(plan.sched_meta_elems));
  std::vector<uint8_t> workspace(device.is_cpu() ? static_cast<size_t>(plan.workspace_bytes) : 0);

  // Device buffers (or host ones for the CPU).
  void *d_q = (void*)p.q.data(), *d_k = (void*)p.k_cache.data();
  void *d_bt = (void*)p.block_table.data(), *d_sl = (void*)p.seqlens.data();
  void *d_out = out.data(), *d_lse = lse.data(), *d_sched = sched.data(), *d_ws = workspace.data();
#if FLASHMLA_WITH_CUDA
  auto check = [](cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
      std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(e));
      std::exit(1);
    }
  };
  auto upload = [&](const void* src, size_t bytes) {
    void* d = nullptr;
    check(cudaMalloc(&d, bytes ? bytes : 16), "cudaMalloc");
    if (src && bytes) check(cudaMemcpy(d, src, bytes, cudaMemcpyHostToDevice), "upload");
    return d;
  };
  if (device.is_cuda()) {
    d_q = upload(p.q.data(), p.q.size() * 2);
    d_k = upload(p.k_cache.data(), p.k_cache.size() * 2);
    d_bt = upload(p.block_table.data(), p.block_table.size() * 4);
    d_sl = upload(p.seqlens.data(), p.seqlens.size() * 4);
    d_out = upload(out.data(), out_elems * 2);
    d_lse = upload(lse.data(), lse_elems * 4);
    d_sched = upload(nullptr, sched.size() * 4);
    d_ws = upload(nullptr, static_cast<size_t>(plan.workspace_bytes));
  }
#endif
  DensePlanParams pp;
  pp.plan = plan;
  pp.cache_seqlens = TensorView::contiguous(d_sl, DType::kInt32, device, {p.b});
  pp.sched_meta = TensorView::contiguous(d_sched, DType::kInt32, device, {plan.sched_meta_elems});
  dense_decode_plan(pp);

  DenseDecodeParams dp;
  dp.q = TensorView::contiguous(d_q, DType::kBFloat16, device, {p.b, p.s_q, p.h_q, p.d_qk});
  dp.k_cache = TensorView::contiguous(d_k, DType::kBFloat16, device,
                                      {p.num_blocks, p.page, p.h_kv, p.d_qk});
  dp.block_table = TensorView::contiguous(d_bt, DType::kInt32, device, {p.b, p.max_blocks});
  dp.cache_seqlens = pp.cache_seqlens;
  dp.head_dim_v = p.d_v;
  dp.causal = o.causal;
  dp.plan = plan;
  dp.sched_meta = pp.sched_meta;
  dp.workspace = TensorView::contiguous(d_ws, DType::kUInt8, device, {plan.workspace_bytes});
  dp.out = TensorView::contiguous(d_out, DType::kBFloat16, device, {p.b, p.s_q, p.h_q, p.d_v});
  dp.lse = TensorView::contiguous(d_lse, DType::kFloat32, device, {p.b, p.h_q, p.s_q});

  Timing t;
  std::vector<double> samples;
  if (device.is_cpu()) {
    dense_decode(dp);  // the checked run
    std::vector<uint16_t> keep = out;
    for (int it = 0; it < o.iters; ++it) {
      const auto t0 = std::chrono::steady_clock::now();
      dense_decode(dp);
      samples.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    if (keep != out) std::printf("WARNING: repeated CPU runs differ bitwise\n");
    t.method = "wall clock, median of " + std::to_string(o.iters) + " runs";
  }
#if FLASHMLA_WITH_CUDA
  else {
    dense_decode(dp);
    check(cudaDeviceSynchronize(), "first run");
    cudaEvent_t e0, e1;
    check(cudaEventCreate(&e0), "event");
    check(cudaEventCreate(&e1), "event");
    void* flush = upload(nullptr, 256u << 20);  // cold L2 before each call (anchors.md)
    for (int it = 0; it < o.iters; ++it) {
      check(cudaMemsetAsync(flush, it & 0xFF, 256u << 20), "flush");
      check(cudaEventRecord(e0), "record");
      dense_decode(dp);
      check(cudaEventRecord(e1), "record");
      check(cudaEventSynchronize(e1), "sync");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
      samples.push_back(ms * 1000.0);
    }
    check(cudaMemcpy(out.data(), d_out, out_elems * 2, cudaMemcpyDeviceToHost), "download");
    check(cudaMemcpy(lse.data(), d_lse, lse_elems * 4, cudaMemcpyDeviceToHost), "download");
    for (void* ptr : {d_q, d_k, d_bt, d_sl, d_out, d_lse, d_sched, d_ws, flush}) cudaFree(ptr);
    t.method = "CUDA events after a 256 MB L2 flush, median of " + std::to_string(o.iters);
  }
#endif
  t.median_us = median(samples);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  std::printf("%s", describe_backends().c_str());

  Device device = kCPU;
  bool has_gpu = false;
#if FLASHMLA_WITH_CUDA
  int count = 0;
  has_gpu = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#endif
  if (o.device == "cuda" && !has_gpu) usage("--device cuda: no CUDA device available");
  if (o.device == "cuda" || (o.device == "auto" && has_gpu)) device = cuda_device(0);
  // A 2-core CPU runs the full b=128 batch in seconds per call; keep its default smaller.
  const int64_t b = o.b > 0 ? o.b : (device.is_cpu() ? 4 : 128);
  const Problem p = make_problem(o, b);
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.d_qk));

  std::vector<uint16_t> out;
  std::vector<float> lse;
  Timing t;
  try {
    t = run(p, o, device, out, lse);
  } catch (const NotImplementedError& e) {
    if (o.device != "auto") throw;
    std::printf("note: %s\n      -> running on the CPU backend instead\n", e.what());
    device = kCPU;
    t = run(p, o, device, out, lse);
  }

  // Check sampled requests (all heads and queries) against the float64 reference.
  std::mt19937_64 rng(o.seed + 1);
  const int64_t samples = std::min<int64_t>(b, 4);
  double max_err = 0, sum_sq = 0, sum_ref = 0, max_lse_rel = 0;
  int64_t bad = 0, checked = 0;
  std::vector<double> ref;
  for (int64_t s = 0; s < samples; ++s) {
    const int64_t r = s == 0 ? 0 : static_cast<int64_t>(rng() % b);
    for (int i = 0; i < p.s_q; ++i)
      for (int h = 0; h < p.h_q; ++h) {
        double ref_lse;
        reference_row(p, scale, o.causal, r, i, h, ref, ref_lse);
        const size_t base = ((r * p.s_q + i) * p.h_q + h) * static_cast<size_t>(p.d_v);
        for (int d = 0; d < p.d_v; ++d) {
          const double got = fp8::bf16_to_float(out[base + d]);
          const double err = std::fabs(got - ref[d]);
          max_err = std::max(max_err, err);
          sum_sq += err * err;
          sum_ref += ref[d] * ref[d];
          if (!(err <= 8e-4 + (2.0 / 128) * std::fabs(ref[d]))) ++bad;  // SPEC.md §7
          ++checked;
        }
        const double got_lse = lse[(r * p.h_q + h) * p.s_q + i];
        max_lse_rel = std::max(max_lse_rel, std::fabs(got_lse - ref_lse) / std::fabs(ref_lse));
      }
  }
  const double rel_l2 = std::sqrt(sum_sq / std::max(sum_ref, 1e-30));
  const bool ok = bad == 0 && max_lse_rel <= 8.0 / 65536;

  const double flops = 2.0 * p.h_q * p.s_q * static_cast<double>(b) * o.s_k * (p.d_qk + p.d_v);
  const double bytes = static_cast<double>(b) * (p.s_q * p.h_q * (p.d_qk + p.d_v) * 2.0 +
                                                 o.s_k * static_cast<double>(p.d_qk) * 2 * p.h_kv);
  std::printf("\ndense decode b=%lld s_q=%d h_q=%d h_kv=%d s_k=%d d_qk=%d page=%d causal=%d on %s\n",
              static_cast<long long>(b), p.s_q, p.h_q, p.h_kv, o.s_k, p.d_qk, p.page, o.causal,
              device_name(device).c_str());
  std::printf("  check vs float64 reference (%lld sampled requests): %s  rel-L2 %.2e  max abs "
              "%.2e  lse max rel %.2e  (%lld/%lld outside tolerance)\n",
              static_cast<long long>(samples), ok ? "PASS" : "FAIL", rel_l2, max_err, max_lse_rel,
              static_cast<long long>(bad), static_cast<long long>(checked));
  std::printf("  time %.1f us (%s)  %.2f TFLOPS  %.1f GB/s\n", t.median_us, t.method.c_str(),
              flops / t.median_us * 1e-6, bytes / t.median_us * 1e-3);
  return ok ? 0 : 1;
}
