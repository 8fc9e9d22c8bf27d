// GPU dense decode benchmark: see bench_dense_decode.h.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_common.cuh"
#include "bench_dense_decode.h"
#include "kernel_timer.h"
#include "cuda/common/cuda_check.h"
#include "flashmla/flashmla.h"

using namespace flashmla;
using bench::Buf;
using bench::timed_calls;

namespace {

constexpr double kCeilTflops = 740.0;  // anchors.md: bf16 matmul 8192^3, 742-780
constexpr double kCeilGbps = 3000.0;   // anchors.md: device copy, read + written
constexpr int64_t kFlushBytes = 256ll << 20;      // ev-flushed: before each timed call
constexpr int64_t kKernelFlushBytes = 8ll << 30;  // kernel time: as anchors.md (8 GB memset)
constexpr int kKernelRuns = 30;                   // anchors.md: 30 calls
// ev: a ~0.5 ms single-thread spin before each call's first event, as FlashMLA's harness
// (bench/flashmla_ref/time_flashmla.py: torch.cuda._sleep(1e6)) does, so the two ev columns are
// one method. Without it ("ev hot") the calls run back to back (memset, call, memset, ...) and a
// long case runs under the power limit's lower clock.
constexpr int64_t kEvSpinCycles = 1'000'000;

struct Case {
  const char* name;
  int64_t b;
  int s_q, h_q, s_k;
  double flashmla_kernel_us, flashmla_ev_us;  // anchors.md
  bool varlen = false;  // lengths ~ normal(s_k, s_k / 2), at least 1 (anchors.md L4)
  bool causal = false;
};

const Case kCases[] = {
    {"D1", 128, 1, 128, 4096, 258.0, 262.5},   {"D2", 128, 1, 128, 8192, 512.1, 532.2},
    {"D3", 128, 1, 128, 32768, 1884.8, 1962.8}, {"D4", 128, 2, 128, 8192, 826.2, 940.2},
    {"D5", 128, 1, 16, 8192, 439.9, 440.6},    {"D6", 64, 1, 8, 16384, 441.8, 442.8},
    {"L1", 1, 1, 128, 1024, 19.6, 21.2},       {"L2", 8, 1, 16, 1024, 17.0, 18.6},
    {"L3", 32, 2, 64, 2048, 54.2, 54.2},
    {"L4", 128, 1, 128, 4096, 286.9, 290.3, true},
    {"L5", 128, 2, 128, 4096, 436.8, 469.8, false, true},
    {"L6", 4, 1, 32, 65536, 131.9, 133.2},
    // Batch shapes that stress the split schedule (no FlashMLA figure): many short requests
    // (decode_schedule.h once put 94 chunks of B2 on one part).
    {"B1", 200, 1, 128, 1000, 0.0, 0.0},
    {"B2", 225, 1, 16, 100, 0.0, 0.0},
    // ... and requests cut into a few chunks each: few medium ones, mixed lengths, one q tile of
    // four queries, two long requests over 66 parts.
    {"B3", 16, 1, 128, 3000, 0.0, 0.0},
    {"B4", 48, 1, 128, 6000, 0.0, 0.0, true},
    {"B5", 64, 4, 16, 2048, 0.0, 0.0},
    {"B6", 2, 1, 128, 32768, 0.0, 0.0},
    // A serving batch of a TP-8 shard: many mixed-length requests (the plan kernel's serial
    // build is O(b)).
    {"B7", 1024, 1, 16, 1024, 0.0, 0.0, true},
};

// randn/10 clamped to [-1, 1] as bf16, from a counter hash (Box-Muller); never zeros.
__global__ void fill_activations(uint16_t* x, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u1 = (static_cast<float>(z >> 40) + 1.0f) * 0x1.0p-24f;
    const float u2 = static_cast<float>((z >> 16) & 0xFFFFFF) * 0x1.0p-24f;
    const float g = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    const float v = fminf(fmaxf(g / 10.0f, -1.0f), 1.0f);
    x[i] = static_cast<uint16_t>(__float_as_uint(v) >> 16);  // truncation to bf16 is fine here
  }
}

struct Result {
  double us;          // ev-flushed median (spin before each call)
  double ev_hot;      // the same without the spin: back-to-back calls
  double kernel_us;   // CUPTI: first kernel start to last kernel end, median of 30 calls (0: none)
  double kernel_mean; // the same, mean (the traced first call, ~2 ms late, is not among them)
  double sum_us;      // CUPTI: the calls' kernel durations summed (the profiler's figure), mean
  double main_us;     // CUPTI: the main kernel's own duration, median (krn - main: the combine's tail)
  double ev8_us;      // events around each call after the big memset, without CUPTI, median
  double ev8_cupti;   // the same, in the CUPTI pass
  double plan_ev;     // the plan step (dense_decode_plan): events around each call, median
  double plan_krn;    // its kernel's duration (CUPTI), median (0: not measured)
  double flop, bytes;
};

// Events around each of `runs` decode calls, each after a memset of `flush_bytes` (and a spin of
// `spin` cycles when > 0): sorted µs.
std::vector<double> event_times(const DenseDecodeParams& p, void* flush, int64_t flush_bytes,
                                int runs, int64_t spin = 0) {
  return bench::flushed_event_times([&] { dense_decode(p); }, flush, flush_bytes, runs, spin);
}

// The anchors' kernel time: each call after an 8 GB memset, the durations of the kernels it
// launched summed, as the profiler does. Our combine kernel is launched by programmatic dependent
// launch at the main kernel's start and waits for it on the GPU, so its recorded duration covers
// the main kernel's too and the sum counts that time twice: the span (first kernel start to last
// kernel end) is the call's GPU time, and the figure to hold against FlashMLA's kernel time.
void kernel_time(KernelTimer& timer, void* flush, int64_t flush_bytes,
                 const DenseDecodeParams& p, Result& r) {
  // Events around each call as well, once without CUPTI and once with it: tells the cost of the
  // big memset (clocks, L2 state) apart from the cost of the tracing.
  r.ev8_us = event_times(p, flush, flush_bytes, kKernelRuns)[kKernelRuns / 2];
  // One call more than timed, its records dropped: the first traced call's combine kernel is
  // submitted ~2 ms late (CUPTI's start-up on the host; session 11: its span 2,118 µs against
  // 239-243 for the other calls, the main kernel itself as fast as theirs).
  timer.start();
  r.ev8_cupti = event_times(p, flush, flush_bytes, kKernelRuns + 1)[(kKernelRuns + 1) / 2];
  std::vector<KernelSpan> spans = timer.stop();
  // Every call launches the same kernels (main, and combine when it splits): consecutive groups
  // of spans.size() / (kKernelRuns + 1) records, in start order, are one call each.
  if (spans.empty() || spans.size() % (kKernelRuns + 1) != 0) {
    std::printf("  (kernel time: %zu kernel records for %d calls; skipped)\n", spans.size(),
                kKernelRuns + 1);
    return;
  }
  const size_t per_call = spans.size() / (kKernelRuns + 1);
  spans.erase(spans.begin(), spans.begin() + static_cast<std::ptrdiff_t>(per_call));
  std::vector<double> lens(kKernelRuns, 0.0), mains(kKernelRuns, 0.0);
  double total = 0, span = 0;
  for (int i = 0; i < kKernelRuns; ++i) {
    uint64_t first = spans[i * per_call].start_ns, last = 0;
    for (size_t j = i * per_call; j < (i + 1) * per_call; ++j) {
      total += (spans[j].end_ns - spans[j].start_ns) * 1e-3;
      last = std::max(last, spans[j].end_ns);
    }
    lens[i] = (last - first) * 1e-3;
    mains[i] = (spans[i * per_call].end_ns - first) * 1e-3;  // the first record is the main kernel
    span += lens[i];
  }
  // FLASHMLA_BENCH_SPANS=1: every call's records (start offsets from the call's first kernel
  // start, durations), to see which kernel a far-off call lost its time in.
  if (std::getenv("FLASHMLA_BENCH_SPANS") != nullptr) {
    for (int i = 0; i < kKernelRuns; ++i) {
      const uint64_t first = spans[i * per_call].start_ns;
      std::printf("    call %2d: span %8.1f us;", i, lens[i]);
      for (size_t j = i * per_call; j < (i + 1) * per_call; ++j)
        std::printf("  kernel %zu at +%.1f for %.1f", j - i * per_call,
                    (spans[j].start_ns - first) * 1e-3, (spans[j].end_ns - spans[j].start_ns) * 1e-3);
      std::printf("\n");
    }
  }
  r.sum_us = total / kKernelRuns;
  r.kernel_mean = span / kKernelRuns;
  std::sort(lens.begin(), lens.end());
  r.kernel_us = lens[kKernelRuns / 2];
  std::sort(mains.begin(), mains.end());
  r.main_us = mains[kKernelRuns / 2];
}

// The plan step: an inference engine runs it once per batch shape, which in decoding is every
// step (vLLM calls FlashMLA's get_mla_metadata before each step's layers), so its cost is paid
// once per step, not per layer. Back to back, caches warm: events around each call (launch
// included) and its kernel's own duration from the CUPTI records, medians of kKernelRuns.
void plan_time(KernelTimer& timer, const DensePlanParams& pp, Result& r) {
  const auto call = [&] { dense_decode_plan(pp); };
  r.plan_ev = timed_calls(kKernelRuns, [](int) {}, call)[kKernelRuns / 2];
  if (!timer.available()) return;
  timer.start();
  for (int i = 0; i < kKernelRuns; ++i) call();
  FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<KernelSpan> spans = timer.stop();
  if (spans.size() != static_cast<size_t>(kKernelRuns)) return;  // one kernel per call
  std::vector<double> d;
  for (const KernelSpan& k : spans) d.push_back((k.end_ns - k.start_ns) * 1e-3);
  std::sort(d.begin(), d.end());
  r.plan_krn = d[d.size() / 2];
}

std::vector<int32_t> case_lengths(const Case& c) {
  std::vector<int32_t> lens(c.b, c.s_k);
  if (c.varlen) {
    std::mt19937_64 rng(11);
    std::normal_distribution<double> dist(c.s_k, c.s_k / 2.0);
    for (auto& len : lens) len = static_cast<int32_t>(std::max(1.0, std::round(dist(rng))));
  }
  return lens;
}

// FLASHMLA_BENCH_CASES_FILE=F appends "name b s_q h_q causal len_0 .. len_{b-1}" for each case
// run, so that another implementation can be timed on the very same shapes and lengths
// (bench/flashmla_ref/time_flashmla.py).
void write_case(const Case& c, const std::vector<int32_t>& lens) {
  const char* path = std::getenv("FLASHMLA_BENCH_CASES_FILE");
  if (!path) return;
  FILE* f = std::fopen(path, "a");
  if (!f) return;
  std::fprintf(f, "%s %lld %d %d %d", c.name, static_cast<long long>(c.b), c.s_q, c.h_q,
               c.causal ? 1 : 0);
  for (const int32_t len : lens) std::fprintf(f, " %d", len);
  std::fprintf(f, "\n");
  std::fclose(f);
}

Result run_case(const Case& c, int runs, KernelTimer& timer, void* kflush, int64_t kflush_bytes) {
  const int d_qk = 576, d_v = 512, page = 64;
  const Device gpu = cuda_device(0);
  const std::vector<int32_t> host_lens = case_lengths(c);
  write_case(c, host_lens);
  const int64_t max_len = *std::max_element(host_lens.begin(), host_lens.end());
  const int64_t blocks_per_seq = (max_len + page - 1) / page;
  const int64_t num_blocks = c.b * blocks_per_seq;
  Buf q(c.b * c.s_q * c.h_q * d_qk * 2), k(num_blocks * page * d_qk * 2), table(num_blocks * 4),
      lens(c.b * 4), out(c.b * c.s_q * c.h_q * d_v * 2), lse(c.b * c.h_q * c.s_q * 4),
      flush(kFlushBytes);
  fill_activations<<<1024, 256>>>(static_cast<uint16_t*>(q.p), c.b * c.s_q * c.h_q * d_qk, 1);
  fill_activations<<<4096, 256>>>(static_cast<uint16_t*>(k.p), num_blocks * page * d_qk, 2);
  FLASHMLA_CUDA_CHECK_LAUNCH("fill_activations");
  std::vector<int32_t> perm(num_blocks);
  for (int64_t i = 0; i < num_blocks; ++i) perm[i] = static_cast<int32_t>(i);
  std::mt19937_64 rng(7);
  std::shuffle(perm.begin(), perm.end(), rng);
  FLASHMLA_CUDA_CHECK(cudaMemcpy(table.p, perm.data(), num_blocks * 4, cudaMemcpyHostToDevice));
  FLASHMLA_CUDA_CHECK(cudaMemcpy(lens.p, host_lens.data(), c.b * 4, cudaMemcpyHostToDevice));

  const DecodePlan plan = dense_decode_plan_info(c.b, c.s_q, c.h_q, 1, d_v, c.causal, gpu);
  Buf sched(plan.sched_meta_elems * 4), ws(plan.workspace_bytes);
  DensePlanParams pp{plan, TensorView::contiguous(lens.p, DType::kInt32, gpu, {c.b}),
                     TensorView::contiguous(sched.p, DType::kInt32, gpu,
                                            {plan.sched_meta_elems})};
  dense_decode_plan(pp);
  DenseDecodeParams p;
  p.q = TensorView::contiguous(q.p, DType::kBFloat16, gpu, {c.b, c.s_q, c.h_q, d_qk});
  p.k_cache = TensorView::contiguous(k.p, DType::kBFloat16, gpu, {num_blocks, page, 1, d_qk});
  p.block_table = TensorView::contiguous(table.p, DType::kInt32, gpu, {c.b, blocks_per_seq});
  p.cache_seqlens = pp.cache_seqlens;
  p.plan = plan;
  p.sched_meta = pp.sched_meta;
  p.workspace = TensorView::contiguous(ws.p, DType::kUInt8, gpu, {plan.workspace_bytes});
  p.out = TensorView::contiguous(out.p, DType::kBFloat16, gpu, {c.b, c.s_q, c.h_q, d_v});
  p.lse = TensorView::contiguous(lse.p, DType::kFloat32, gpu, {c.b, c.h_q, c.s_q});
  p.causal = c.causal;

  dense_decode(p);  // warm-up
  const std::vector<double> t = event_times(p, flush.p, kFlushBytes, runs, kEvSpinCycles);
  Result r{};
  r.us = t[t.size() / 2];
  r.ev_hot = event_times(p, flush.p, kFlushBytes, runs)[runs / 2];
  if (timer.available() && kflush) kernel_time(timer, kflush, kflush_bytes, p, r);
  plan_time(timer, pp, r);
  // SPEC.md formulas: FLOP over the attended keys of every query, bytes = Q + KV + O.
  double flop = 0, bytes = 0;
  for (const int32_t len : host_lens) {
    for (int i = 0; i < c.s_q; ++i) {
      const double attended = c.causal ? std::max(0, len - c.s_q + i + 1) : len;
      flop += 2.0 * c.h_q * attended * (d_qk + d_v);
    }
    bytes += c.s_q * c.h_q * (d_qk + d_v) * 2.0 + double(len) * d_qk * 2.0;
  }
  r.flop = flop;
  r.bytes = bytes;
  return r;
}

// One case as a JSON object (the --json file's "cases" entries). Times in µs; a figure that was
// not measured (no CUPTI) or has no FlashMLA anchor (B cases) is null.
std::string json_case(const Case& c, const Result& r) {
  const bool krn = r.kernel_us > 0, anchored = c.flashmla_kernel_us > 0;
  const double us = krn ? r.kernel_us : r.us;
  auto num = [](bool known, double v) {
    char b[32];
    if (!known || !std::isfinite(v)) return std::string("null");
    std::snprintf(b, sizeof b, "%.6g", v);
    return std::string(b);
  };
  char head[256];
  std::snprintf(head, sizeof head,
                "{\"case\": \"%s\", \"b\": %lld, \"s_q\": %d, \"h_q\": %d, \"s_k\": %d, "
                "\"varlen\": %s, \"causal\": %s, ",
                c.name, (long long)c.b, c.s_q, c.h_q, c.s_k, c.varlen ? "true" : "false",
                c.causal ? "true" : "false");
  return head + ("\"krn_us\": " + num(krn, r.kernel_us)) +
         (", \"main_kernel_us\": " + num(krn, r.main_us)) + (", \"ev_us\": " + num(true, r.us)) +
         (", \"ev_hot_us\": " + num(true, r.ev_hot)) +
         (", \"tflops\": " + num(true, r.flop / us * 1e-6)) +
         (", \"gbps\": " + num(true, r.bytes / us * 1e-3)) +
         (", \"timed_by\": \"" + std::string(krn ? "krn" : "ev") + "\"") +
         (", \"flashmla_krn_us\": " + num(anchored, c.flashmla_kernel_us)) +
         (", \"flashmla_ev_us\": " + num(anchored, c.flashmla_ev_us)) +
         (", \"ratio_krn\": " + num(anchored && krn, r.kernel_us / c.flashmla_kernel_us)) +
         (", \"ratio_ev\": " + num(anchored, r.us / c.flashmla_ev_us)) +
         (", \"plan_krn_us\": " + num(r.plan_krn > 0, r.plan_krn)) +
         (", \"plan_ev_us\": " + num(true, r.plan_ev)) + "}";
}

}  // namespace

int bench_dense_decode(int argc, char** argv) {
  int runs = 50;
  std::string csv, json, only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::max(30, std::atoi(argv[++i]));
    else if (a == "--csv" && i + 1 < argc) csv = argv[++i];
    else if (a == "--json" && i + 1 < argc) json = argv[++i];
    else if (a == "--case" && i + 1 < argc) only = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_dense_decode [--runs R] [--case NAME] [--csv FILE] "
                           "[--json FILE]\n");
      return 2;
    }
  }
  // FLASHMLA_BENCH_CASES=D1,D5 selects cases when called through flashmla_bench.
  std::string pick = only;
  if (const char* env = std::getenv("FLASHMLA_BENCH_CASES"); pick.empty() && env) pick = env;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    std::printf("bench_dense_decode: skipped, no CUDA device\n");
    return 0;
  }
  FILE* j = json.empty() ? nullptr : std::fopen(json.c_str(), "w");  // checked before the runs
  if (!json.empty() && !j) {
    std::fprintf(stderr, "bench_dense_decode: cannot write --json file %s\n", json.c_str());
    return 1;
  }
  try {
    cudaDeviceProp prop{};
    FLASHMLA_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    // FLASHMLA_BENCH_NO_CUPTI=1 (e.g. under ncu, itself a CUPTI client): events only.
    const bool no_cupti = std::getenv("FLASHMLA_BENCH_NO_CUPTI") != nullptr;
    KernelTimer timer(!no_cupti);
    // The kernel-time flush: 8 GB as in anchors.md, less on a smaller card.
    size_t free_bytes = 0, total_bytes = 0;
    FLASHMLA_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const int64_t kflush_bytes =
        std::min<int64_t>(kKernelFlushBytes, static_cast<int64_t>(free_bytes) / 4);
    void* kflush = nullptr;
    if (timer.available() && cudaMalloc(&kflush, kflush_bytes) != cudaSuccess) {
      cudaGetLastError();
      kflush = nullptr;
    }
    std::printf("GPU dense decode on %s (%d SMs): bf16, h_kv 1, d_qk 576, page 64, fixed lengths; "
                "main + combine\n"
                "  ev: CUDA events, median of %d calls, 256 MB memset and a ~0.5 ms spin before "
                "each (FlashMLA harness's method); ev hot: the same without the spin\n",
                prop.name, prop.multiProcessorCount, runs);
    if (kflush)
      std::printf("  krn: GPU time of a call from its kernels' CUPTI records (first start to last "
                  "end), median of %d calls, %.1f GB memset before each (anchors.md's kernel time);"
                  " TFLOPS and GB/s from krn\n",
                  kKernelRuns, kflush_bytes / 1e9);
    else
      std::printf("  krn: not measured (%s); TFLOPS and GB/s from ev\n",
                  no_cupti ? "FLASHMLA_BENCH_NO_CUPTI"
                  : timer.available() ? "no memory for the flush" : timer.reason().c_str());
    std::printf("%-4s %-34s %8s %8s %8s %6s %8s %6s %10s %10s\n", "case", "shape", "ev us",
                "krn us", "TFLOPS", "/740", "GB/s", "/3000", "krn vs FM", "ev vs FM");
    FILE* f = csv.empty() ? nullptr : std::fopen(csv.c_str(), "a");
    std::vector<std::string> json_cases;
    for (const Case& c : kCases) {
      if (!pick.empty() && ("," + pick + ",").find("," + std::string(c.name) + ",") == std::string::npos)
        continue;
      const Result r = run_case(c, runs, timer, kflush, kflush_bytes);
      char shape[96];
      std::snprintf(shape, sizeof shape, "b=%lld s_q=%d h_q=%d s_k=%d%s", (long long)c.b, c.s_q,
                    c.h_q, c.s_k, c.varlen ? " varlen" : (c.causal ? " causal" : ""));
      const bool krn = r.kernel_us > 0;
      const double us = krn ? r.kernel_us : r.us;
      const double tflops = r.flop / us * 1e-6, gbps = r.bytes / us * 1e-3;
      const bool anchored = c.flashmla_kernel_us > 0;  // B cases: no FlashMLA figure
      char krn_us[16] = "-", krn_ratio[16] = "-", ev_ratio[16] = "-";
      if (krn) std::snprintf(krn_us, sizeof krn_us, "%.1f", r.kernel_us);
      if (krn && anchored)
        std::snprintf(krn_ratio, sizeof krn_ratio, "%.3fx", r.kernel_us / c.flashmla_kernel_us);
      if (anchored) std::snprintf(ev_ratio, sizeof ev_ratio, "%.3fx", r.us / c.flashmla_ev_us);
      // Ratio > 1 = slower than FlashMLA (same method on both sides).
      std::printf("%-4s %-34s %8.1f %8s %8.1f %5.0f%% %8.0f %5.0f%% %10s %10s\n", c.name,
                  shape, r.us, krn_us, tflops, 100 * tflops / kCeilTflops, gbps,
                  100 * gbps / kCeilGbps, krn_ratio, ev_ratio);
      if (krn)
        std::printf("     (ev hot %.1f; krn mean %.1f; main kernel alone %.1f; kernel durations "
                    "summed, counting the PDL-waiting combine kernel in full: %.1f; events after "
                    "the big memset: %.1f, with CUPTI on %.1f)\n", r.ev_hot, r.kernel_mean,
                    r.main_us, r.sum_us, r.ev8_us, r.ev8_cupti);
      else
        std::printf("     (ev hot %.1f)\n", r.ev_hot);
      std::printf("     (plan step, back to back: kernel %.1f us, events around the call "
                  "%.1f us)\n", r.plan_krn, r.plan_ev);
      if (f)
        std::fprintf(f, "gpu dense_decode %s,%s,%.3f,%.4f,%.3f,%.4f,%.3f,%.3f,%.3f,%.4f,%.3f,"
                     "%.3f,%.3f\n",
                     c.name, shape, r.us, r.flop / r.us * 1e-6, r.bytes / r.us * 1e-3,
                     anchored ? r.us / c.flashmla_ev_us : 0.0, r.kernel_us, r.kernel_mean,
                     r.sum_us, krn && anchored ? r.kernel_us / c.flashmla_kernel_us : 0.0,
                     r.ev_hot, r.plan_krn, r.plan_ev);
      json_cases.push_back(json_case(c, r));
    }
    if (j) {
      std::fprintf(j, "{\"benchmark\": \"dense_decode\", \"gpu\": \"%s\", \"sms\": %d, "
                   "\"dtype\": \"bf16\", \"d_qk\": 576, \"d_v\": 512, \"h_kv\": 1, "
                   "\"page\": 64,\n \"ceil_tflops\": %.0f, \"ceil_gbps\": %.0f, \"ev_runs\": %d, "
                   "\"krn_runs\": %d,\n \"cases\": [",
                   prop.name, prop.multiProcessorCount, kCeilTflops, kCeilGbps, runs, kKernelRuns);
      for (size_t i = 0; i < json_cases.size(); ++i)
        std::fprintf(j, "%s\n  %s", i ? "," : "", json_cases[i].c_str());
      std::fprintf(j, "\n]}\n");
      std::fclose(j);
    }
    if (kflush) cudaFree(kflush);
    if (f) std::fclose(f);
    return 0;
  } catch (const flashmla::Error& e) {
    std::fprintf(stderr, "bench_dense_decode: %s\n", e.what());
    if (j) std::fclose(j);  // left empty: no partial JSON
    return 1;
  }
}
