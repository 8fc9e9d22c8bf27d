// flashmla_bench: benchmarks every backend present and prints one table.
//   CPU: each operation at a small realistic shape (wall clock, median of N runs).
//   CUDA (when built and a GPU is present): the FP8 KV codec kernels against the measured
//   device copy bandwidth, and dense decode (bench/cuda/); with --sparse, instead of all that,
//   sparse decode and sparse prefill (bench_sparse.h); with --mha, instead, dense MHA prefill
//   (bench_mha.h).
// Usage: flashmla_bench [--csv FILE] [--json FILE] [--cpu-only] [--gpu-only] [--iters N]
//                       [--sparse | --mha] [--case NAMES]
// --json: the GPU dense decode cases (bench_dense_decode.h), or the sparse cases with --sparse.
// --case D1,L5 (or S1,P2 with --sparse): only those cases (as FLASHMLA_BENCH_CASES).
// The sparse cases are not part of --gpu-only, so that the scripts timing dense decode through
// it (compare-flashmla, ab-bench, h100-checks) keep their run time and output.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "flashmla/flashmla.h"
#include "flashmla/fp8.h"

#if FLASHMLA_WITH_CUDA
#include "cuda/bench_dense_decode.h"
#include "cuda/bench_kv_codec.h"
#include "cuda/bench_mha.h"
#include "cuda/bench_sparse.h"
#endif

using namespace flashmla;

namespace {

struct Row {
  std::string op, shape;
  double us, tflops, gbps;
};

std::vector<uint16_t> random_bf16(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = fp8::float_to_bf16(std::clamp(normal(rng) / 10.0f, -1.0f, 1.0f));
  return v;
}

double time_median_us(int iters, const std::function<void()>& fn) {
  fn();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                    .count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Dense decode on the CPU: b requests of s_k tokens, page 64, h_kv = 1, d_qk 576.
Row bench_cpu_dense(int64_t b, int s_q, int h_q, int s_k, int iters, std::mt19937_64& rng) {
  const int d_qk = 576, d_v = 512, page = 64;
  const int64_t max_blocks = (s_k + page - 1) / page, num_blocks = b * max_blocks;
  auto q = random_bf16(static_cast<size_t>(b) * s_q * h_q * d_qk, rng);
  auto k = random_bf16(static_cast<size_t>(num_blocks) * page * d_qk, rng);
  std::vector<int32_t> table(static_cast<size_t>(num_blocks));
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(i);
  std::shuffle(table.begin(), table.end(), rng);
  std::vector<int32_t> lens(static_cast<size_t>(b), s_k);
  std::vector<uint16_t> out(static_cast<size_t>(b) * s_q * h_q * d_v);
  std::vector<float> lse(static_cast<size_t>(b) * h_q * s_q);
  const DecodePlan plan = dense_decode_plan_info(b, s_q, h_q, 1, d_v, false, kCPU);
  std::vector<int32_t> sched(static_cast<size_t>(plan.sched_meta_elems));
  std::vector<uint8_t> ws(static_cast<size_t>(plan.workspace_bytes));
  DensePlanParams pp{plan, TensorView::contiguous(lens.data(), DType::kInt32, kCPU, {b}),
                     TensorView::contiguous(sched.data(), DType::kInt32, kCPU,
                                            {plan.sched_meta_elems})};
  dense_decode_plan(pp);
  DenseDecodeParams p;
  p.q = TensorView::contiguous(q.data(), DType::kBFloat16, kCPU, {b, s_q, h_q, d_qk});
  p.k_cache = TensorView::contiguous(k.data(), DType::kBFloat16, kCPU, {num_blocks, page, 1, d_qk});
  p.block_table = TensorView::contiguous(table.data(), DType::kInt32, kCPU, {b, max_blocks});
  p.cache_seqlens = pp.cache_seqlens;
  p.plan = plan;
  p.sched_meta = pp.sched_meta;
  p.workspace = TensorView::contiguous(ws.data(), DType::kUInt8, kCPU, {plan.workspace_bytes});
  p.out = TensorView::contiguous(out.data(), DType::kBFloat16, kCPU, {b, s_q, h_q, d_v});
  p.lse = TensorView::contiguous(lse.data(), DType::kFloat32, kCPU, {b, h_q, s_q});
  const double us = time_median_us(iters, [&] { dense_decode(p); });
  const double flops = 2.0 * h_q * s_q * double(b) * s_k * (d_qk + d_v);
  const double bytes = double(b) * (double(s_k) * d_qk * 2 + s_q * h_q * (d_qk + d_v) * 2.0);
  char shape[128];
  std::snprintf(shape, sizeof shape, "b=%lld s_q=%d h_q=%d s_k=%d", (long long)b, s_q, h_q, s_k);
  return {"cpu dense_decode", shape, us, flops / us * 1e-6, bytes / us * 1e-3};
}

// FP8 quantize + dequantize of a bf16 cache on the CPU.
std::vector<Row> bench_cpu_codec(KVCacheLayout layout, int64_t num_blocks, int iters,
                                 std::mt19937_64& rng) {
  const int page = 64, d = kv_layout_dim(layout), bytes = kv_layout_token_bytes(layout);
  const int64_t block_bytes = layout == KVCacheLayout::kV32 ? int64_t{page} * bytes
                                                            : model1::min_block_bytes(page);
  auto k = random_bf16(static_cast<size_t>(num_blocks) * page * d, rng);
  std::vector<uint8_t> quant(static_cast<size_t>(num_blocks * block_bytes + 16));
  std::vector<uint16_t> back(k.size());
  KVQuantizeParams qp;
  qp.layout = layout;
  qp.k_cache = TensorView::contiguous(k.data(), DType::kBFloat16, kCPU, {num_blocks, page, 1, d});
  qp.quant_cache = TensorView::strided(quant.data(), DType::kUInt8, kCPU,
                                       {num_blocks, page, 1, bytes}, {block_bytes, bytes, bytes, 1});
  KVDequantizeParams dq{layout, qp.quant_cache, TensorView::contiguous(back.data(),
                        DType::kBFloat16, kCPU, {num_blocks, page, 1, d})};
  const double tokens = double(num_blocks) * page;
  const double traffic = tokens * (d * 2 + kv_layout_token_bytes(layout));
  std::string shape = std::string(layout == KVCacheLayout::kV32 ? "V3.2" : "MODEL1") +
                      " tokens=" + std::to_string(static_cast<long long>(tokens));
  const double tq = time_median_us(iters, [&] { kv_quantize(qp); });
  const double td = time_median_us(iters, [&] { kv_dequantize(dq); });
  return {{"cpu kv_quantize", shape, tq, 0, traffic / tq * 1e-3},
          {"cpu kv_dequantize", shape, td, 0, traffic / td * 1e-3}};
}

// `topk` distinct random slots in [0, slots) for each of `rows` query rows.
std::vector<int32_t> random_indices(int64_t rows, int topk, int64_t slots, std::mt19937_64& rng) {
  std::vector<int32_t> all(static_cast<size_t>(slots));
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int32_t>(i);
  std::vector<int32_t> idx;
  idx.reserve(static_cast<size_t>(rows) * topk);
  for (int64_t r = 0; r < rows; ++r) {
    std::shuffle(all.begin(), all.end(), rng);
    idx.insert(idx.end(), all.begin(), all.begin() + topk);
  }
  return idx;
}

// Sparse decode on the CPU over a V3.2 cache of s_k tokens a request (page 64).
Row bench_cpu_sparse_decode(int64_t b, int s_q, int h_q, int topk, int s_k, int iters,
                            std::mt19937_64& rng) {
  const int d_qk = 576, d_v = 512, page = 64, bytes = v32::kBytesPerToken;
  const int64_t num_blocks = b * ((s_k + page - 1) / page);
  auto k = random_bf16(static_cast<size_t>(num_blocks) * page * d_qk, rng);
  std::vector<uint8_t> cache(static_cast<size_t>(num_blocks) * page * bytes);
  KVQuantizeParams qp;
  qp.layout = KVCacheLayout::kV32;
  qp.k_cache = TensorView::contiguous(k.data(), DType::kBFloat16, kCPU, {num_blocks, page, 1, d_qk});
  qp.quant_cache =
      TensorView::contiguous(cache.data(), DType::kUInt8, kCPU, {num_blocks, page, 1, bytes});
  kv_quantize(qp);
  auto q = random_bf16(static_cast<size_t>(b) * s_q * h_q * d_qk, rng);
  // Request r's queries select among its own s_k tokens (blocks r * s_k / page onward).
  std::vector<int32_t> idx = random_indices(b * s_q, topk, s_k, rng);
  for (int64_t r = 0; r < b; ++r)
    for (int64_t e = 0; e < int64_t{s_q} * topk; ++e)
      idx[static_cast<size_t>(r * s_q * topk + e)] += static_cast<int32_t>(r * num_blocks / b * page);
  std::vector<uint16_t> out(static_cast<size_t>(b) * s_q * h_q * d_v);
  std::vector<float> lse(static_cast<size_t>(b) * h_q * s_q);
  SparseDecodeParams p;
  p.q = TensorView::contiguous(q.data(), DType::kBFloat16, kCPU, {b, s_q, h_q, d_qk});
  p.k_cache = qp.quant_cache;
  p.indices = TensorView::contiguous(idx.data(), DType::kInt32, kCPU, {b, s_q, topk});
  p.out = TensorView::contiguous(out.data(), DType::kBFloat16, kCPU, {b, s_q, h_q, d_v});
  p.lse = TensorView::contiguous(lse.data(), DType::kFloat32, kCPU, {b, h_q, s_q});
  const double us = time_median_us(iters, [&] { sparse_decode(p); });
  const double flops = 2.0 * h_q * s_q * double(b) * topk * (d_qk + d_v);
  char shape[128];
  std::snprintf(shape, sizeof shape, "V3.2 b=%lld s_q=%d h_q=%d topk=%d", (long long)b, s_q, h_q,
                topk);
  return {"cpu sparse_decode", shape, us, flops / us * 1e-6, 0};
}

// Sparse prefill on the CPU: s_q query rows over s_kv bf16 rows, h_kv 1, d_qk 576.
Row bench_cpu_sparse_prefill(int s_q, int h_q, int topk, int s_kv, int iters,
                             std::mt19937_64& rng) {
  const int d_qk = 576, d_v = 512;
  auto q = random_bf16(static_cast<size_t>(s_q) * h_q * d_qk, rng);
  auto kv = random_bf16(static_cast<size_t>(s_kv) * d_qk, rng);
  std::vector<int32_t> idx = random_indices(s_q, topk, s_kv, rng);
  std::vector<uint16_t> out(static_cast<size_t>(s_q) * h_q * d_v);
  std::vector<float> lse(static_cast<size_t>(s_q) * h_q), ml(lse.size());
  SparsePrefillParams p;
  p.q = TensorView::contiguous(q.data(), DType::kBFloat16, kCPU, {s_q, h_q, d_qk});
  p.kv = TensorView::contiguous(kv.data(), DType::kBFloat16, kCPU, {s_kv, 1, d_qk});
  p.indices = TensorView::contiguous(idx.data(), DType::kInt32, kCPU, {s_q, 1, topk});
  p.sm_scale = 1.0f / std::sqrt(float(d_qk));
  p.out = TensorView::contiguous(out.data(), DType::kBFloat16, kCPU, {s_q, h_q, d_v});
  p.max_logits = TensorView::contiguous(ml.data(), DType::kFloat32, kCPU, {s_q, h_q});
  p.lse = TensorView::contiguous(lse.data(), DType::kFloat32, kCPU, {s_q, h_q});
  const double us = time_median_us(iters, [&] { sparse_prefill(p); });
  const double flops = 2.0 * h_q * double(s_q) * topk * (d_qk + d_v);
  char shape[128];
  std::snprintf(shape, sizeof shape, "s_q=%d h_q=%d topk=%d s_kv=%d", s_q, h_q, topk, s_kv);
  return {"cpu sparse_prefill", shape, us, flops / us * 1e-6, 0};
}

// Dense MHA prefill on the CPU, forward then backward: one causal sequence of s tokens, h heads,
// d_qk 192, d_v 128. FLOPs count attended (query, key) pairs: 2 (d_qk + d_v) per pair forward,
// 2.5x that backward (five products instead of two).
std::vector<Row> bench_cpu_mha(int s, int h, int iters, std::mt19937_64& rng) {
  const int d_qk = 192, d_v = 128;
  auto q = random_bf16(static_cast<size_t>(s) * h * d_qk, rng);
  auto k = random_bf16(static_cast<size_t>(s) * h * d_qk, rng);
  auto v = random_bf16(static_cast<size_t>(s) * h * d_v, rng);
  auto dout = random_bf16(static_cast<size_t>(s) * h * d_v, rng);
  std::vector<uint16_t> out(dout.size()), dq(q.size()), dk(k.size()), dv(v.size());
  std::vector<float> lse(static_cast<size_t>(h) * s);
  std::vector<int32_t> cu = {0, s};
  MhaVarlenFwdParams f;
  f.q = TensorView::contiguous(q.data(), DType::kBFloat16, kCPU, {s, h, d_qk});
  f.k = TensorView::contiguous(k.data(), DType::kBFloat16, kCPU, {s, h, d_qk});
  f.v = TensorView::contiguous(v.data(), DType::kBFloat16, kCPU, {s, h, d_v});
  f.cu_seqlens_q = f.cu_seqlens_k = TensorView::contiguous(cu.data(), DType::kInt32, kCPU, {2});
  f.max_seqlen_q = f.max_seqlen_k = s;
  f.causal = true;
  f.out = TensorView::contiguous(out.data(), DType::kBFloat16, kCPU, {s, h, d_v});
  f.lse = TensorView::contiguous(lse.data(), DType::kFloat32, kCPU, {h, s});
  const double fwd_us = time_median_us(iters, [&] { mha_varlen_fwd(f); });
  MhaVarlenBwdParams b;
  b.dout = TensorView::contiguous(dout.data(), DType::kBFloat16, kCPU, {s, h, d_v});
  b.q = f.q, b.k = f.k, b.v = f.v, b.out = f.out, b.lse = f.lse;
  b.cu_seqlens_q = b.cu_seqlens_k = f.cu_seqlens_q;
  b.max_seqlen_q = b.max_seqlen_k = s;
  b.causal = true;
  b.dq = TensorView::contiguous(dq.data(), DType::kBFloat16, kCPU, {s, h, d_qk});
  b.dk = TensorView::contiguous(dk.data(), DType::kBFloat16, kCPU, {s, h, d_qk});
  b.dv = TensorView::contiguous(dv.data(), DType::kBFloat16, kCPU, {s, h, d_v});
  const double bwd_us = time_median_us(iters, [&] { mha_varlen_bwd(b); });
  const double flops = 2.0 * (d_qk + d_v) * h * (double(s) * (s + 1) / 2);
  char shape[128];
  std::snprintf(shape, sizeof shape, "causal s=%d h=%d d_qk=%d", s, h, d_qk);
  return {{"cpu mha_varlen_fwd", shape, fwd_us, flops / fwd_us * 1e-6, 0},
          {"cpu mha_varlen_bwd", shape, bwd_us, 2.5 * flops / bwd_us * 1e-6, 0}};
}

}  // namespace

int main(int argc, char** argv) {
  std::string csv, json, cases;
  bool cpu = true, gpu = true, sparse = false, mha = false;
  int iters = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--csv" && i + 1 < argc) csv = argv[++i];
    else if (a == "--json" && i + 1 < argc) json = argv[++i];
    else if (a == "--cpu-only") gpu = false;
    else if (a == "--gpu-only") cpu = false;
    else if (a == "--sparse") sparse = true;
    else if (a == "--mha") mha = true;
    else if (a == "--case" && i + 1 < argc) cases = argv[++i];
    else if (a == "--iters" && i + 1 < argc) iters = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: flashmla_bench [--csv FILE] [--json FILE] [--cpu-only] [--gpu-only] "
                           "[--iters N] [--sparse | --mha] [--case NAMES]\n");
      return 2;
    }
  }
  if (sparse || mha) cpu = false;
  std::printf("%s\n", describe_backends().c_str());
  std::mt19937_64 rng(42);
  std::vector<Row> rows;
  if (cpu) {
    rows.push_back(bench_cpu_dense(1, 1, 128, 4096, iters, rng));
    rows.push_back(bench_cpu_dense(1, 2, 128, 4096, iters, rng));
    rows.push_back(bench_cpu_dense(8, 1, 16, 1024, iters, rng));
    rows.push_back(bench_cpu_sparse_decode(1, 1, 128, 2048, 8192, iters, rng));
    rows.push_back(bench_cpu_sparse_prefill(4, 128, 2048, 8192, iters, rng));
    for (auto& r : bench_cpu_mha(1024, 16, iters, rng)) rows.push_back(r);
    for (KVCacheLayout l : {KVCacheLayout::kV32, KVCacheLayout::kModel1})
      for (auto& r : bench_cpu_codec(l, 256, iters, rng)) rows.push_back(r);
    std::printf("%-22s %-34s %12s %9s %9s\n", "op", "shape", "us", "TFLOPS", "GB/s");
    for (const Row& r : rows)
      std::printf("%-22s %-34s %12.1f %9.3f %9.2f\n", r.op.c_str(), r.shape.c_str(), r.us,
                  r.tflops, r.gbps);
    if (!csv.empty()) {
      if (FILE* f = std::fopen(csv.c_str(), "a")) {
        for (const Row& r : rows)
          std::fprintf(f, "%s,%s,%.3f,%.4f,%.3f\n", r.op.c_str(), r.shape.c_str(), r.us,
                       r.tflops, r.gbps);
        std::fclose(f);
      }
    }
  }
#if FLASHMLA_WITH_CUDA
  if (gpu) {
    std::vector<char*> args = {argv[0]};
    std::string csv_flag = "--csv", json_flag = "--json", case_flag = "--case";
    if (!csv.empty()) {
      args.push_back(csv_flag.data());
      args.push_back(csv.data());
    }
    // The decode benchmarks' rows also as JSON (named fields), and only the cases asked for.
    std::vector<char*> named_args = args;
    if (!json.empty()) {
      named_args.push_back(json_flag.data());
      named_args.push_back(json.data());
    }
    if (!cases.empty()) {
      named_args.push_back(case_flag.data());
      named_args.push_back(cases.data());
    }
    if (sparse) return bench_sparse(static_cast<int>(named_args.size()), named_args.data());
    if (mha) return bench_mha(static_cast<int>(named_args.size()), named_args.data());
    const int rc = bench_kv_codec(static_cast<int>(args.size()), args.data());
    if (rc != 0) return rc;
    const int rc_dense =
        bench_dense_decode(static_cast<int>(named_args.size()), named_args.data());
    if (rc_dense != 0) return rc_dense;
  }
#else
  (void)gpu;
  (void)mha;
#endif
  return 0;
}
