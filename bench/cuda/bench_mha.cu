// GPU benchmark of dense MHA prefill, forward: see bench_mha.h.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_common.cuh"
#include "bench_mha.h"
#include "cuda/common/cuda_check.h"
#include "flashmla/flashmla.h"
#include "flashmla/fp8.h"

using namespace flashmla;
using bench::Buf;
using bench::fill;
using bench::timed_calls;

namespace {

constexpr int kDimV = 128;
constexpr double kCeilingTflops = 742;  // bf16 matmul 8192^3, measured (GPU-NOTES.md)
constexpr double kCheckMaxRelL2 = 1e-2;
constexpr double kCheckMaxLseAbs = 1e-3;

// b sequences of s_q queries over s_k keys each, bf16.
struct Case {
  const char* name;
  int b, s_q, s_k, h_q, h_kv, d_qk;
  bool causal;
};

const Case kCases[] = {
    {"M1", 1, 4096, 4096, 128, 128, 192, true},   // one sequence, 128 heads
    {"M2", 4, 2048, 2048, 16, 16, 192, true},     // a TP-8 shard's heads, four sequences
    {"M3", 1, 512, 8192, 128, 128, 192, true},    // chunked prefill: 512 new tokens, 8K context
    {"M4", 2, 4096, 4096, 32, 8, 128, true},      // GQA 4, d_qk 128
    {"M5", 1, 4096, 4096, 128, 128, 192, false},  // not causal
};

int64_t key_limit(const Case& c, int64_t i) {
  return c.causal ? std::clamp<int64_t>(i + c.s_k - c.s_q + 1, 0, c.s_k) : c.s_k;
}

double attended_pairs(const Case& c) {
  double n = 0;
  for (int64_t i = 0; i < c.s_q; ++i) n += static_cast<double>(key_limit(c, i));
  return n * c.b;
}

double bf16_at(const std::vector<uint16_t>& v, int64_t i) { return fp8::bf16_to_float(v[i]); }

// Rows d elements wide, one per token, `tokens` of them from element `first` with `pitch`
// elements between tokens.
std::vector<uint16_t> download_rows(const Buf& b, int64_t first, int64_t pitch, int64_t d,
                                    int64_t tokens) {
  std::vector<uint16_t> v(d * tokens);
  FLASHMLA_CUDA_CHECK(cudaMemcpy2D(v.data(), d * 2, b.as<uint16_t>() + first, pitch * 2, d * 2,
                                   tokens, cudaMemcpyDeviceToHost));
  return v;
}

// Worst out rel-L2 and lse difference over six rows of sequence 0, recomputed in float64.
std::pair<double, double> check(const Case& c, const Buf& q, const Buf& k, const Buf& v,
                                const Buf& out, const Buf& lse, int64_t total_q) {
  const int group = c.h_q / c.h_kv;
  const double scale = 1.0 / std::sqrt(double(c.d_qk));
  double worst_l2 = 0, worst_lse = 0;
  for (int h : {0, c.h_q - 1}) {
    const int kvh = h / group;
    const std::vector<uint16_t> keys =
        download_rows(k, int64_t{kvh} * c.d_qk, int64_t{c.h_kv} * c.d_qk, c.d_qk, c.s_k);
    const std::vector<uint16_t> vals =
        download_rows(v, int64_t{kvh} * kDimV, int64_t{c.h_kv} * kDimV, kDimV, c.s_k);
    for (int64_t i : {int64_t{0}, int64_t{c.s_q / 2}, int64_t{c.s_q - 1}}) {
      const auto qr = download_rows(q, (i * c.h_q + h) * c.d_qk, c.d_qk, c.d_qk, 1);
      const auto got = download_rows(out, (i * c.h_q + h) * kDimV, kDimV, kDimV, 1);
      float got_lse = 0;
      FLASHMLA_CUDA_CHECK(cudaMemcpy(&got_lse, lse.as<float>() + h * total_q + i, 4,
                                     cudaMemcpyDeviceToHost));
      const int64_t n = key_limit(c, i);
      std::vector<double> s(n);
      double m = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int d = 0; d < c.d_qk; ++d) dot += bf16_at(qr, d) * bf16_at(keys, j * c.d_qk + d);
        s[j] = dot * scale;
        m = std::max(m, s[j]);
      }
      double sum = 0;
      std::vector<double> o(kDimV, 0.0);
      for (int64_t j = 0; j < n; ++j) {
        const double p = std::exp(s[j] - m);
        sum += p;
        for (int d = 0; d < kDimV; ++d) o[d] += p * bf16_at(vals, j * kDimV + d);
      }
      double err = 0, ref = 0;
      for (int d = 0; d < kDimV; ++d) {
        const double r = n ? o[d] / sum : 0.0;
        err += (bf16_at(got, d) - r) * (bf16_at(got, d) - r);
        ref += r * r;
      }
      worst_l2 = std::max(worst_l2, std::sqrt(err / std::max(ref, 1e-30)));
      const double want_lse = n ? m + std::log(sum) : INFINITY;
      worst_lse = std::max(worst_lse, n ? std::fabs(got_lse - want_lse)
                                        : (std::isinf(got_lse) ? 0.0 : INFINITY));
    }
  }
  return {worst_l2, worst_lse};
}

// The backward on the forward's results (FLASHMLA_MHA_BWD=1): median µs, or a negative value
// when its gradients hold a NaN or infinity (the first 4096 elements of each are looked at;
// the tests grade accuracy).
double time_backward(const Case& c, const MhaVarlenFwdParams& f, int runs) {
  const int64_t total_q = f.q.shape[0], total_k = f.k.shape[0];
  const int64_t nq = total_q * c.h_q * c.d_qk, nk = total_k * c.h_kv * c.d_qk;
  const int64_t nv = total_k * c.h_kv * kDimV, nd = total_q * c.h_q * kDimV;
  Buf dout(nd * 2), dq(nq * 2), dk(nk * 2), dv(nv * 2);
  fill(dout, nd, 4, 10.0f);
  const Device gpu = cuda_device(0);
  MhaVarlenBwdParams b;
  b.dout = TensorView::contiguous(dout.p, DType::kBFloat16, gpu, {total_q, c.h_q, kDimV});
  b.q = f.q, b.k = f.k, b.v = f.v, b.out = f.out, b.lse = f.lse;
  b.cu_seqlens_q = f.cu_seqlens_q, b.cu_seqlens_k = f.cu_seqlens_k;
  b.max_seqlen_q = f.max_seqlen_q, b.max_seqlen_k = f.max_seqlen_k;
  b.causal = f.causal;
  b.dq = TensorView::contiguous(dq.p, DType::kBFloat16, gpu, {total_q, c.h_q, c.d_qk});
  b.dk = TensorView::contiguous(dk.p, DType::kBFloat16, gpu, {total_k, c.h_kv, c.d_qk});
  b.dv = TensorView::contiguous(dv.p, DType::kBFloat16, gpu, {total_k, c.h_kv, kDimV});
  mha_varlen_bwd(b);
  FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
  for (const Buf* g : {&dq, &dk, &dv}) {
    std::vector<uint16_t> h(4096);
    FLASHMLA_CUDA_CHECK(cudaMemcpy(h.data(), g->p, h.size() * 2, cudaMemcpyDeviceToHost));
    for (uint16_t x : h)
      if (!std::isfinite(fp8::bf16_to_float(x))) return -1;
  }
  const std::vector<double> t = timed_calls(runs, [](int) {}, [&] { mha_varlen_bwd(b); });
  return t[t.size() / 2];
}

// 0: ran and matched; 1: wrong or failed.
int run_case(const Case& c, int runs, FILE* csv) {
  const int64_t total_q = int64_t{c.b} * c.s_q, total_k = int64_t{c.b} * c.s_k;
  Buf q(total_q * c.h_q * c.d_qk * 2), k(total_k * c.h_kv * c.d_qk * 2);
  Buf v(total_k * c.h_kv * kDimV * 2), out(total_q * c.h_q * kDimV * 2);
  Buf lse(total_q * c.h_q * 4), cu_q(4 * (c.b + 1)), cu_k(4 * (c.b + 1));
  fill(q, total_q * c.h_q * c.d_qk, 1, 10.0f);
  fill(k, total_k * c.h_kv * c.d_qk, 2, 10.0f);
  fill(v, total_k * c.h_kv * kDimV, 3, 10.0f);
  std::vector<int32_t> cq(c.b + 1), ck(c.b + 1);
  for (int r = 0; r <= c.b; ++r) cq[r] = r * c.s_q, ck[r] = r * c.s_k;
  FLASHMLA_CUDA_CHECK(cudaMemcpy(cu_q.p, cq.data(), cq.size() * 4, cudaMemcpyHostToDevice));
  FLASHMLA_CUDA_CHECK(cudaMemcpy(cu_k.p, ck.data(), ck.size() * 4, cudaMemcpyHostToDevice));

  const Device gpu = cuda_device(0);
  MhaVarlenFwdParams p;
  p.q = TensorView::contiguous(q.p, DType::kBFloat16, gpu, {total_q, c.h_q, c.d_qk});
  p.k = TensorView::contiguous(k.p, DType::kBFloat16, gpu, {total_k, c.h_kv, c.d_qk});
  p.v = TensorView::contiguous(v.p, DType::kBFloat16, gpu, {total_k, c.h_kv, kDimV});
  p.cu_seqlens_q = TensorView::contiguous(cu_q.p, DType::kInt32, gpu, {c.b + 1});
  p.cu_seqlens_k = TensorView::contiguous(cu_k.p, DType::kInt32, gpu, {c.b + 1});
  p.max_seqlen_q = c.s_q;
  p.max_seqlen_k = c.s_k;
  p.causal = c.causal;
  p.out = TensorView::contiguous(out.p, DType::kBFloat16, gpu, {total_q, c.h_q, kDimV});
  p.lse = TensorView::contiguous(lse.p, DType::kFloat32, gpu, {c.h_q, total_q});

  char shape[160];
  std::snprintf(shape, sizeof shape, "b=%d s_q=%d s_k=%d h_q=%d h_kv=%d d_qk=%d %s", c.b, c.s_q,
                c.s_k, c.h_q, c.h_kv, c.d_qk, c.causal ? "causal" : "full");
  try {
    FLASHMLA_CUDA_CHECK(cudaMemset(out.p, 0xFF, total_q * c.h_q * kDimV * 2));
    mha_varlen_fwd(p);
    mha_varlen_fwd(p);
    FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
    const auto [l2, lse_diff] = check(c, q, k, v, out, lse, total_q);
    const bool ok = l2 <= kCheckMaxRelL2 && lse_diff <= kCheckMaxLseAbs;

    const std::vector<double> t = timed_calls(runs, [](int) {}, [&] { mha_varlen_fwd(p); });
    const double us = t[t.size() / 2];
    const double tflops = 2.0 * (c.d_qk + kDimV) * c.h_q * attended_pairs(c) / us * 1e-6;
    std::printf("%-3s %-52s %10.1f %8.1f %6.1f%%  rel-L2 %.1e lse %.1e%s\n", c.name, shape, us,
                tflops, 100 * tflops / kCeilingTflops, l2, lse_diff, ok ? "" : "  WRONG");
    if (csv)
      std::fprintf(csv, "gpu mha_varlen_fwd %s,%s,%.3f,%.4f,0,%.3g\n", c.name, shape, us,
                   tflops, l2);
    // The backward: 2.5x the forward's FLOPs by the usual count (five products; these kernels
    // run seven, recomputing S and dP in both passes).
    const double bwd_us = time_backward(c, p, runs);
    const double bwd_tflops = 2.5 * tflops * us / bwd_us;
    if (bwd_us < 0) std::printf("%-3s %-52s backward: NaN or inf in the gradients  WRONG\n",
                                c.name, "");
    else std::printf("%-3s %-52s %10.1f %8.1f %6.1f%%  (backward)\n", c.name, "", bwd_us,
                     bwd_tflops, 100 * bwd_tflops / kCeilingTflops);
    if (csv && bwd_us > 0)
      std::fprintf(csv, "gpu mha_varlen_bwd %s,%s,%.3f,%.4f,0,0\n", c.name, shape, bwd_us,
                   bwd_tflops);
    return ok && bwd_us > 0 ? 0 : 1;
  } catch (const NotImplementedError& e) {
    std::printf("%-3s %-52s skipped: %s\n", c.name, shape, e.what());
    return 0;
  } catch (const std::exception& e) {
    std::printf("%-3s %-52s error: %s\n", c.name, shape, e.what());
    return 1;
  }
}

}  // namespace

int bench_mha(int argc, char** argv) {
  int runs = 20;
  std::string csv, pick;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::max(5, std::atoi(argv[++i]));
    else if (a == "--csv" && i + 1 < argc) csv = argv[++i];
    else if (a == "--case" && i + 1 < argc) pick = argv[++i];
    else if (a == "--json" && i + 1 < argc) ++i;  // not written by this benchmark
    else {
      std::fprintf(stderr, "usage: bench_mha [--runs R] [--case M1,M3] [--csv FILE]\n");
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    std::printf("bench_mha: skipped, no CUDA device\n");
    return 0;
  }
  // The opt-in kernels are what this benchmark times (FLASHMLA_MHA_FWD=2 given: the
  // warp-specialised forward).
  setenv("FLASHMLA_MHA_FWD", "1", 0);
  setenv("FLASHMLA_MHA_BWD", "1", 1);
  cudaDeviceProp prop{};
  FLASHMLA_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("GPU dense MHA prefill (bf16, d_v 128, forward kernel FLASHMLA_MHA_FWD=%s) on %s "
              "(%d SMs): CUDA events, median of %d calls after 2 warm-up calls; TFLOPS over "
              "attended pairs, %% of %.0f\n",
              std::getenv("FLASHMLA_MHA_FWD"), prop.name, prop.multiProcessorCount, runs,
              kCeilingTflops);
  std::printf("%-3s %-52s %10s %8s %7s\n", "", "shape", "us", "TFLOPS", "ceil");
  FILE* f = csv.empty() ? nullptr : std::fopen(csv.c_str(), "a");
  const std::string list = "," + pick + ",";
  int status = 0;
  for (const Case& c : kCases)
    if (pick.empty() || list.find(std::string(",") + c.name + ",") != std::string::npos)
      status |= run_case(c, runs, f);
  if (f) std::fclose(f);
  return status;
}
