// GPU dense decode (SPEC.md §2) against the CPU backend, through the public API.
//
// Each case fills q and a paged KV cache on the host (randn/10 clamped, SPEC.md §7; every cache
// element past a request's end is NaN and unused block-table entries are garbage), runs
// dense_decode_plan + dense_decode on CPU views (the float32 CPU backend = the reference) and on
// cuda:0 copies (the sm_90a kernels), and checks:
//   - the GPU plan's sched_meta equals the CPU plan's for the same num_parts (same builder);
//   - out within atol 8e-4 + rtol 2/128 and cosine difference <= 5e-6, lse within rel 8/65536
//     (+1e-6 absolute for logsumexps near 0), inf positions exactly (SPEC.md §7);
//   - every output element written (outputs are NaN-poisoned before each GPU run);
//   - bitwise determinism over two GPU runs;
//   - page sizes that are multiples of 64 (TMA: pair kernel, or seesaw for <= 32 rows per kv
//     head) also through the launcher's A/B switches: each of the pair, seesaw and lockstep
//     kernels and the cp.async gather path.
// Quick tier by default; FLASHMLA_TEST_TIER=full sweeps b, s_q, s_k, h_q/h_kv, page size,
// causal, variable and zero lengths, both dtypes and d_qk 512. Skips when no device is usable.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "flashmla/flashmla.h"
#include "flashmla/fp8.h"
#include "gpu/gpu_test_util.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

// ---- cases -----------------------------------------------------------------------------------

struct GpuCase {
  int64_t b;
  int s_q, s_k, h_q, h_kv, page;
  bool causal, varlen, zero_lens;
  DType dtype = DType::kBFloat16;
  int d_qk = 576;
  // Scores that jump between 64-token blocks by up to ~15 (log2 units): the last 64 dims of every
  // key of a block hold one random value in [0, 4), of every query 1. The running max then moves
  // by more than the kernels' lazy-max threshold mid-sequence, so O is rescaled there.
  bool jumps = false;
};

std::string case_name(const GpuCase& c) {
  std::string s = "b" + std::to_string(c.b) + "_sq" + std::to_string(c.s_q) + "_sk" +
                  std::to_string(c.s_k) + "_hq" + std::to_string(c.h_q) + "_hkv" +
                  std::to_string(c.h_kv) + "_pg" + std::to_string(c.page) +
                  (c.causal ? "_causal" : "") + (c.varlen ? "_varlen" : "") +
                  (c.zero_lens ? "_zeros" : "") +
                  (c.dtype == DType::kFloat16 ? "_fp16" : "") +
                  (c.d_qk != 576 ? "_d" + std::to_string(c.d_qk) : "") +
                  (c.jumps ? "_jumps" : "");
  return s;
}

void PrintTo(const GpuCase& c, std::ostream* os) { *os << case_name(c); }

bool full_tier() {
  const char* env = std::getenv("FLASHMLA_TEST_TIER");
  return env && std::string(env) == "full";
}

std::vector<GpuCase> make_cases() {
  std::vector<GpuCase> v = {
      // b, s_q, s_k, h_q, h_kv, page, causal, varlen, zeros
      {1, 1, 20, 128, 1, 64, false, false, false},
      {2, 2, 140, 128, 1, 64, true, false, false},
      {6, 1, 4096, 128, 1, 64, false, true, true},
      {64, 1, 4096, 16, 1, 64, false, false, false},
      {6, 4, 140, 64, 1, 61, true, true, false},
      {2, 1, 140, 1, 1, 1, false, false, false},
      {6, 2, 140, 9, 3, 61, true, true, true},
      {2, 4, 20, 126, 2, 64, true, false, false},
      {6, 1, 140, 8, 8, 64, false, true, false},
      {1, 2, 4096, 128, 1, 64, true, false, false},
      {2, 1, 140, 63, 1, 64, false, false, false, DType::kFloat16},
      {2, 2, 140, 128, 1, 64, true, true, false, DType::kBFloat16, 512},
      {2, 1, 140, 64, 2, 61, false, false, false, DType::kFloat16, 512},
      {2, 1, 4096, 128, 1, 64, false, false, false, DType::kBFloat16, 576, true},
      {3, 2, 2000, 128, 1, 64, true, true, false, DType::kFloat16, 512, true},
      // 64 requests on 16 parts (8 q tiles): several chunks per CTA, so chunk boundaries inside
      // a CTA (the next chunk's Q load, the producer running ahead across them), also around
      // zero-length requests.
      {64, 4, 140, 128, 1, 64, false, true, true},
      {64, 2, 1000, 128, 1, 64, true, false, false, DType::kFloat16},
      // One long request on 132 parts: ~40 chunks (the bulk combine's slots past one warp's
      // lanes) and ~128 chunks (more than a bulk tile holds: its row-per-warp path).
      {1, 1, 5000, 64, 1, 64, false, false, false},
      {1, 1, 16384, 16, 1, 64, false, false, false},
      // 24 requests on 66 parts, each split in 2-4 pieces: a partial q tile (63 rows per kv
      // head) and two kv heads, zero lengths among the pieces, causal queries, fp16.
      {24, 2, 2048, 64, 1, 64, true, true, false, DType::kFloat16, 576, true},
      {24, 1, 2048, 126, 2, 64, false, true, true},
      // s_q up to 8 (the range; the table above stops at 4), causal: 1,024 rows per kv
      // head (16 q tiles on 8 parts); exactly one 64-row tile (8 x 8) with zero lengths; s_q 5
      // on the cp.async path (page 61, 80 rows: a partial second tile, fp16); s_q 7 with GQA
      // 126 / 2 (441 rows: 7 q tiles, the last partial; 2 kv heads), d_qk 512.
      {4, 8, 2048, 128, 1, 64, true, true, false},
      {8, 8, 1000, 8, 1, 64, true, false, true},
      {6, 5, 700, 16, 1, 61, true, true, false, DType::kFloat16},
      {3, 7, 300, 126, 2, 64, true, false, false, DType::kBFloat16, 512},
  };
  if (!full_tier()) return v;
  // Full tier: every (h_q, h_kv) pair x page size x s_q, with b, s_k, causal, varlen, zero
  // lengths, dtype and d_qk rotated through their values.
  const int64_t bs[] = {1, 2, 6, 64};
  const int sks[] = {20, 140, 4096};
  const int pages[] = {64, 1, 61};
  const int sqs[] = {1, 2, 4};
  int n = 0;
  for (int h_q : {1, 3, 9, 63, 64, 126, 128})
    for (int h_kv : {1, 2, 3, 8}) {
      if (h_q % h_kv != 0) continue;
      for (int page : pages)
        for (int s_q : sqs) {
          GpuCase c{bs[n % 4], s_q, sks[(n / 4 + n) % 3], h_q, h_kv, page,
                    n % 2 == 1, n % 3 == 0, n % 5 == 0};
          // Keep the float32 CPU reference affordable: long contexts with small batches only.
          if (c.s_k == 4096 && c.b == 64 && (h_q * s_q > 128 || h_kv > 2)) c.b = 6;
          if (n % 7 == 3) c.dtype = DType::kFloat16;
          if (n % 11 == 5) c.d_qk = 512;
          v.push_back(c);
          ++n;
        }
    }
  return v;
}

// Fast activations for large caches: randn/10 clamped to [-1, 1] (Box-Muller over splitmix64,
// both of its normals used). One stream per request, its start hashed from (seed, request), so
// requests fill in parallel and the values do not depend on the thread count (generating the
// cache one thread at a time took most of the full tier's time: 26 s of a 64 x 4096-token case).
struct FastNormal {
  uint64_t state;
  bool has_spare = false;
  float spare = 0;
  static FastNormal stream(uint64_t seed, int64_t id) {
    FastNormal h{seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(id + 1))};
    return FastNormal{h.next()};
  }
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double activation() {  // (float math: the values are rounded to 16 bits anyway)
    float g = spare;
    if (!has_spare) {
      const uint64_t z = next();
      const float u1 = (static_cast<float>(z >> 40) + 1.0f) * 0x1.0p-24f;
      const float u2 = static_cast<float>((z >> 16) & 0xFFFFFF) * 0x1.0p-24f;
      const float radius = std::sqrt(-2.0f * std::log(u1));
      g = radius * std::cos(6.2831853f * u2);
      spare = radius * std::sin(6.2831853f * u2);
    }
    has_spare = !has_spare;
    return std::clamp(g / 10.0f, -1.0f, 1.0f);
  }
};

// The generator's rounding: any nearby 16-bit value will do (the reference reads back what is
// stored), so bf16 takes the library's bit rounding, ~20x faster than test_util's independent
// double_to_bf16 (which BF16.MatchesIndependentRounding holds it against).
uint16_t to_16(double x, DType dtype) {
  return dtype == DType::kFloat16 ? double_to_fp16(x) : fp8::float_to_bf16(static_cast<float>(x));
}

class DenseDecodeGpu : public ::testing::TestWithParam<GpuCase> {};

TEST_P(DenseDecodeGpu, MatchesCpuBackend) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const GpuCase c = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(case_name(c) + " " + seed_note(seed));
  Rng rng(seed);
  const int d_v = 512;
  const Device gpu = cuda_device(0);

  // Lengths, block table (each request owns max_blocks random pages), cache with NaN past ends.
  std::vector<int32_t> lens(c.b);
  for (int64_t r = 0; r < c.b; ++r) {
    lens[r] = c.varlen ? static_cast<int32_t>(rng.uniform_int(1, c.s_k)) : c.s_k;
    if (c.zero_lens && r % 3 == 1) lens[r] = 0;
  }
  const int64_t max_blocks = (c.s_k + c.page - 1) / c.page + 1;  // one spare page of garbage
  const int64_t num_blocks = c.b * max_blocks;
  std::vector<int32_t> perm(num_blocks);
  for (int64_t i = 0; i < num_blocks; ++i) perm[i] = static_cast<int32_t>(i);
  std::shuffle(perm.begin(), perm.end(), rng.engine());
  HostTensor table(DType::kInt32, {c.b, max_blocks});
  for (int64_t r = 0; r < c.b; ++r)
    for (int64_t j = 0; j < max_blocks; ++j) {
      const bool used = j * c.page < lens[r];
      table.ptr<int32_t>()[r * max_blocks + j] =
          used ? perm[r * max_blocks + j] : static_cast<int32_t>(0x7FFF0000 + j);  // garbage
    }
  HostTensor k(c.dtype, {num_blocks, c.page, c.h_kv, c.d_qk});
  k.poison();  // NaN everywhere, then the tokens each request owns
  uint16_t* kp = k.ptr<uint16_t>();
#pragma omp parallel for schedule(dynamic)
  for (int64_t r = 0; r < c.b; ++r) {
    FastNormal fast = FastNormal::stream(seed, r);
    for (int64_t t = 0; t < lens[r]; ++t) {
      const int64_t blk = table.ptr<int32_t>()[r * max_blocks + t / c.page];
      uint16_t* row = kp + ((blk * c.page + t % c.page) * c.h_kv) * c.d_qk;
      for (int64_t e = 0; e < int64_t{c.h_kv} * c.d_qk; ++e)
        row[e] = to_16(fast.activation(), c.dtype);
      if (c.jumps) {
        Rng block_rng(seed ^ (uint64_t(r) << 32) ^ uint64_t(t / 64));
        const double offset = 4.0 * block_rng.uniform();
        for (int64_t hd = 0; hd < c.h_kv; ++hd)
          for (int e = c.d_qk - 64; e < c.d_qk; ++e) row[hd * c.d_qk + e] = to_16(offset, c.dtype);
      }
    }
  }
  HostTensor q(c.dtype, {c.b, c.s_q, c.h_q, c.d_qk});
  const int64_t q_per_req = int64_t{c.s_q} * c.h_q * c.d_qk;
#pragma omp parallel for schedule(dynamic)
  for (int64_t r = 0; r < c.b; ++r) {
    FastNormal fast = FastNormal::stream(seed, c.b + r);
    for (int64_t e = r * q_per_req; e < (r + 1) * q_per_req; ++e)
      q.ptr<uint16_t>()[e] =
          to_16(c.jumps && e % c.d_qk >= c.d_qk - 64 ? 1.0 : fast.activation(), c.dtype);
  }
  HostTensor seq = int32_tensor(lens);

  // CPU reference.
  const DecodePlan cpu_plan = dense_decode_plan_info(c.b, c.s_q, c.h_q, c.h_kv, d_v, c.causal, kCPU);
  HostTensor cpu_sched(DType::kInt32, {cpu_plan.sched_meta_elems});
  HostTensor cpu_ws(DType::kUInt8, {cpu_plan.workspace_bytes});
  HostTensor ref_out(c.dtype, {c.b, c.s_q, c.h_q, d_v});
  HostTensor ref_lse(DType::kFloat32, {c.b, c.h_q, c.s_q});
  ref_out.poison();
  ref_lse.poison();
  dense_decode_plan({cpu_plan, seq.view(), cpu_sched.view()});
  DenseDecodeParams cp;
  cp.q = q.view();
  cp.k_cache = k.view();
  cp.block_table = table.view();
  cp.cache_seqlens = seq.view();
  cp.causal = c.causal;
  cp.plan = cpu_plan;
  cp.sched_meta = cpu_sched.view();
  cp.workspace = cpu_ws.view();
  cp.out = ref_out.view();
  cp.lse = ref_lse.view();
  dense_decode(cp);

  // GPU.
  const DecodePlan plan = dense_decode_plan_info(c.b, c.s_q, c.h_q, c.h_kv, d_v, c.causal, gpu);
  DeviceBuffer d_q(q.storage_bytes()), d_k(k.storage_bytes()), d_table(table.storage_bytes()),
      d_seq(seq.storage_bytes()), d_sched(plan.sched_meta_elems * 4),
      d_ws(plan.workspace_bytes), d_out(ref_out.storage_bytes()), d_lse(ref_lse.storage_bytes());
  d_q.upload(q.data(), q.storage_bytes());
  d_k.upload(k.data(), k.storage_bytes());
  d_table.upload(table.data(), table.storage_bytes());
  d_seq.upload(seq.data(), seq.storage_bytes());
  d_sched.poison();
  HostTensor gpu_sched(DType::kInt32, {plan.sched_meta_elems});
  dense_decode_plan({plan, seq.view_at(d_seq.get(), gpu), gpu_sched.view_at(d_sched.get(), gpu)});
  FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
  d_sched.download(gpu_sched.data(), gpu_sched.storage_bytes());

  // The GPU plan equals the CPU plan built for the same num_parts.
  {
    DecodePlan same = plan;
    same.device = kCPU;
    HostTensor host_sched(DType::kInt32, {plan.sched_meta_elems});
    host_sched.fill_bytes(0xFF);  // the same poison as the device buffer: unused tails match
    dense_decode_plan({same, seq.view(), host_sched.view()});
    ASSERT_TRUE(bytes_equal("sched_meta (GPU plan vs CPU plan)", gpu_sched.bytes(),
                            host_sched.bytes(), gpu_sched.storage_bytes()));
  }

  DenseDecodeParams gp = cp;
  gp.q = q.view_at(d_q.get(), gpu);
  gp.k_cache = k.view_at(d_k.get(), gpu);
  gp.block_table = table.view_at(d_table.get(), gpu);
  gp.cache_seqlens = seq.view_at(d_seq.get(), gpu);
  gp.plan = plan;
  gp.sched_meta = gpu_sched.view_at(d_sched.get(), gpu);
  gp.workspace = HostTensor(DType::kUInt8, {plan.workspace_bytes}).view_at(d_ws.get(), gpu);
  gp.out = ref_out.view_at(d_out.get(), gpu);
  gp.lse = ref_lse.view_at(d_lse.get(), gpu);

  HostTensor out[2] = {HostTensor(c.dtype, {c.b, c.s_q, c.h_q, d_v}),
                       HostTensor(c.dtype, {c.b, c.s_q, c.h_q, d_v})};
  HostTensor lse[2] = {HostTensor(DType::kFloat32, {c.b, c.h_q, c.s_q}),
                       HostTensor(DType::kFloat32, {c.b, c.h_q, c.s_q})};
  for (int run = 0; run < 2; ++run) {
    d_out.poison();
    d_lse.poison();
    d_ws.poison();
    dense_decode(gp);
    FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
    d_out.download(out[run].data(), out[run].storage_bytes());
    d_lse.download(lse[run].data(), lse[run].storage_bytes());
  }

  // The alternative kernels of page-64-multiple caches (A/B switches of the launcher): the
  // pair, seesaw and lockstep kernels on TMA tiles (whichever the launcher picks by default),
  // the pair kernel without its producer warpgroup (consumer lanes load), the pair kernel with Q by copies where it would
  // take Q by TMA, and the cp.async gather path must agree with the reference too.
  struct Switch {
    const char* name;
    const char* value;
    const char* name2 = nullptr;  // an optional second variable set with the first
    const char* value2 = nullptr;
  };
  std::vector<std::pair<std::string, HostTensor>> alt_outs;
  if (c.page % 64 == 0) {
    for (const Switch sw :
         {Switch{"FLASHMLA_DENSE_DECODE_PAIR", "1"}, Switch{"FLASHMLA_DENSE_DECODE_SEESAW", "1"},
          Switch{"FLASHMLA_DENSE_DECODE_LOCKSTEP", "1"},
          Switch{"FLASHMLA_DENSE_DECODE_PAIR", "1", "FLASHMLA_DENSE_DECODE_LOADS", "inline"},
          Switch{"FLASHMLA_DENSE_DECODE_PAIR", "1", "FLASHMLA_DENSE_DECODE_QLOAD", "copies"},
          Switch{"FLASHMLA_DENSE_DECODE_COMBINE", "bulk"},
          Switch{"FLASHMLA_DENSE_DECODE_NO_TMA", "1"}}) {
      setenv(sw.name, sw.value, 1);
      if (sw.name2 != nullptr) setenv(sw.name2, sw.value2, 1);
      d_out.poison();
      d_lse.poison();
      dense_decode(gp);
      FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
      unsetenv(sw.name);
      std::string what = std::string(sw.name) + "=" + sw.value;
      if (sw.name2 != nullptr) {
        unsetenv(sw.name2);
        what += std::string(" ") + sw.name2 + "=" + sw.value2;
      }
      HostTensor alt(c.dtype, {c.b, c.s_q, c.h_q, d_v});
      d_out.download(alt.data(), alt.storage_bytes());
      alt_outs.emplace_back(what, std::move(alt));
    }
  }
  // Output rows off 16-byte boundaries (8 bytes in): the kernels' 4-byte store form instead of
  // the quad-transposed 16-byte one.
  {
    DeviceBuffer d_out8(ref_out.storage_bytes() + 16);
    DenseDecodeParams gp8 = gp;
    gp8.out = ref_out.view_at(d_out8.get() + 8, gpu);
    d_out8.poison();
    dense_decode(gp8);
    FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
    HostTensor alt(c.dtype, {c.b, c.s_q, c.h_q, d_v});
    FLASHMLA_CUDA_CHECK(cudaMemcpy(alt.data(), d_out8.get() + 8, alt.storage_bytes(),
                                   cudaMemcpyDeviceToHost));
    alt_outs.emplace_back("out 8 bytes off 16-byte alignment", std::move(alt));
  }
  const std::vector<double> ref_o = ref_out.to_doubles();
  for (const auto& [what, alt] : alt_outs) {
    EXPECT_TRUE(all_close("out with " + what, alt.to_doubles(), ref_o, alt.shape(),
                          {8e-4, 2.0 / 128}));
    // The two combine kernels do the same arithmetic in the same order.
    if (what.find("COMBINE=bulk") != std::string::npos)
      EXPECT_TRUE(bytes_equal("out, row-per-warp vs bulk combine", out[0].bytes(), alt.bytes(),
                              out[0].storage_bytes()));
  }

  const std::vector<double> got_o = out[0].to_doubles();
  EXPECT_TRUE(all_close("out", got_o, ref_o, out[0].shape(), {8e-4, 2.0 / 128}));
  EXPECT_TRUE(cosine_close("out", got_o, ref_o, 5e-6));
  EXPECT_TRUE(all_close("lse", lse[0].to_doubles(), ref_lse.to_doubles(), lse[0].shape(),
                        {1e-6, 8.0 / 65536}));
  EXPECT_TRUE(bytes_equal("out (run 1 vs run 2)", out[0].bytes(), out[1].bytes(),
                          out[0].storage_bytes()));
  EXPECT_TRUE(bytes_equal("lse (run 1 vs run 2)", lse[0].bytes(), lse[1].bytes(),
                          lse[0].storage_bytes()));
}

// The plan kernel alone on batches the decode cases above do not reach (hundreds to tens of
// thousands of requests; lengths varied, zero, or far longer than the rest): sched_meta equal to
// the CPU plan's for the same num_parts, whole buffers (the same poison before).
TEST(DenseDecodePlanGpu, MatchesCpuPlanOnLargeBatches) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  Rng rng(seed);
  const Device gpu = cuda_device(0);
  for (const int64_t b : {200, 1000, 4096, 16384, 16385, 49152}) {
    for (const int h_q : {16, 128}) {
      std::vector<int32_t> lens(b);
      for (int64_t r = 0; r < b; ++r) {
        const int64_t u = rng.uniform_int(0, 8192);
        lens[r] = r % 97 == 5 ? 0 : static_cast<int32_t>(r % 211 == 7 ? 100 * u : u);
      }
      const HostTensor seq = int32_tensor(lens);
      const DecodePlan plan = dense_decode_plan_info(b, 1, h_q, 1, 512, false, gpu);
      DeviceBuffer d_seq(seq.storage_bytes()), d_sched(plan.sched_meta_elems * 4);
      d_seq.upload(seq.data(), seq.storage_bytes());
      d_sched.poison();
      HostTensor gpu_sched(DType::kInt32, {plan.sched_meta_elems});
      dense_decode_plan(
          {plan, seq.view_at(d_seq.get(), gpu), gpu_sched.view_at(d_sched.get(), gpu)});
      FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
      d_sched.download(gpu_sched.data(), gpu_sched.storage_bytes());
      DecodePlan same = plan;
      same.device = kCPU;
      HostTensor host_sched(DType::kInt32, {plan.sched_meta_elems});
      host_sched.fill_bytes(0xFF);  // the device buffer's poison
      dense_decode_plan({same, seq.view(), host_sched.view()});
      ASSERT_TRUE(bytes_equal("sched_meta (GPU plan vs CPU plan), b " + std::to_string(b) +
                                  ", h_q " + std::to_string(h_q),
                              gpu_sched.bytes(), host_sched.bytes(), gpu_sched.storage_bytes()));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, DenseDecodeGpu, ::testing::ValuesIn(make_cases()),
                         [](const ::testing::TestParamInfo<GpuCase>& info) {
                           return std::to_string(info.index) + "_" + case_name(info.param);
                         });

}  // namespace
}  // namespace flashmla::test
