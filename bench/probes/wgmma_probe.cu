// Tensor-pipe probe: how fast do the dense decode kernel's wgmma groups run on their own (no
// loads, no softmax, no hand-offs)? Each mode repeats one group shape in a loop on every SM (one
// CTA of two warpgroups per SM, shared-memory layout as in the pair kernel) and reports cycles
// per loop iteration next to the nominal tensor time (m64n64k16: 32 cycles, m64n256k16: 128).
// Build: nvcc -std=c++20 -O3 -gencode arch=compute_90a,code=sm_90a -Isrc -o wgmma_probe
//        bench/probes/wgmma_probe.cu -lcuda
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "cuda/common/sm90_ptx.cuh"
#include "cuda/common/wgmma_ops.cuh"

namespace sm90 = flashmla::cuda::sm90;
using T = __nv_bfloat16;

constexpr int kAtomBytes = 64 * 128;
constexpr int kIters = 512;

// Shared-memory plan like the pair kernel: Q (9 atoms), K0, K1 (9 atoms each), P (1 atom).
constexpr int kQ = 0, kK0 = 9 * kAtomBytes, kK1 = 18 * kAtomBytes, kP = 27 * kAtomBytes;
constexpr int kBar = 28 * kAtomBytes;  // one mbarrier, completed once (phase 0)
constexpr int kSmem = 28 * kAtomBytes + 1024 + 64;

enum Mode {
  kSBoth = 0,       // S (9 atoms: 8 SS + RoPE RS) in both warpgroups, each its own K buffer
  kSOne = 1,        // the same, warpgroup 0 only
  kPvBoth = 2,      // P V (4 RS + 4 SS m64n256k16) in both warpgroups
  kPvOne = 3,       // the same, warpgroup 0 only
  kMixBoth = 4,     // S then P V, both warpgroups (one pair kernel step, no dependencies)
  kSSameK = 5,      // S in both warpgroups reading the same K buffer
  kSAllSS = 6,      // S, all 9 atoms SS, both warpgroups
  kSWithAlu = 7,    // S in warpgroup 0 while warpgroup 1 runs softmax-like ALU work (exp2, FMA)
  kPvWithAlu = 8,   // P V in warpgroup 0 while warpgroup 1 runs the same ALU work
  kSWithSts = 9,    // S in warpgroup 0 while warpgroup 1 stores to shared memory and fences
  kSBarOne = 10,    // S, warpgroup 0 only, an mbarrier wait (phase already complete) per atom
  kSBarBoth = 11,   // the same in both warpgroups
  kMixBar = 12,     // one pair step (S + P V) in both warpgroups, an mbarrier wait per S atom
};

__device__ __forceinline__ uint8_t* align_1024(uint8_t* p) {
  return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + 1023) & ~uintptr_t{1023});
}

// Makes the accumulators observable so the compiler keeps every wgmma.
__device__ __forceinline__ void keep_alive(const float (&s)[32], const float (&o)[128],
                                           float* sink) {
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < 32; ++i) acc += s[i];
#pragma unroll
  for (int i = 0; i < 128; ++i) acc += o[i];
  if (acc == 12345.f) sink[threadIdx.x] = acc;
}

// O += P V with P from registers (pv_rs) or shared memory (pv_ss), one commit group.
__device__ __forceinline__ void pv_rs(float (&o)[128], const uint32_t (&pb)[16], uint64_t desc_v) {
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    sm90::wgmma_m64n256k16_rs_tb<T>(o, pb + 4 * kk, sm90::desc_advance(desc_v, kk * 16 * 128), 1);
  sm90::wgmma_commit();
}
__device__ __forceinline__ void pv_ss(float (&o)[128], uint64_t desc_p, uint64_t desc_v) {
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    sm90::wgmma_m64n256k16_ss_tb<T>(o, sm90::desc_advance(desc_p, kk * 32),
                                    sm90::desc_advance(desc_v, kk * 16 * 128), 1);
  sm90::wgmma_commit();
}

template <int kMode>
__global__ void __launch_bounds__(256, 1) probe(long long* cycles, float* sink) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = align_1024(smem_raw);
  for (int i = threadIdx.x; i < (kSmem - 1024) / 16; i += 256)
    reinterpret_cast<uint4*>(smem)[i] = make_uint4(0x3c003c00u ^ i, 0x3c00u, i, 0);
  sm90::fence_proxy_async();
  const uint32_t bar = sm90::smem_addr(smem + kBar);
  if (threadIdx.x == 0) {
    sm90::mbarrier_init(bar, 1);
    sm90::fence_mbarrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) sm90::mbarrier_arrive(bar);  // phase 0 completes
  __syncthreads();
  const int wg = threadIdx.x / 128;
  const bool alu = (kMode == kSWithAlu || kMode == kPvWithAlu || kMode == kSWithSts) && wg == 1;
  const bool active = !(kMode == kSOne || kMode == kPvOne || kMode == kSBarOne || alu) || wg == 0;
  constexpr bool kBarWait = kMode == kSBarOne || kMode == kSBarBoth || kMode == kMixBar;
  const uint32_t base = sm90::smem_addr(smem);
  const uint64_t desc_q = sm90::make_smem_desc(base + kQ, 16, 1024);
  const uint32_t k_addr = base + ((kMode == kSSameK || wg == 0) ? kK0 : kK1);
  const uint64_t desc_k = sm90::make_smem_desc(k_addr, 16, 1024);
  const uint64_t desc_p = sm90::make_smem_desc(base + kP, 16, 1024);
  const uint64_t desc_v = sm90::make_smem_desc(k_addr + wg * 4 * kAtomBytes, kAtomBytes, 1024);
  float s[32];
  float o[128];
  uint32_t q8[16], pb[16];
#pragma unroll
  for (int i = 0; i < 32; ++i) s[i] = 0.f;
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
#pragma unroll
  for (int i = 0; i < 16; ++i) q8[i] = pb[i] = 0x3c003c00u + threadIdx.x;
  __syncthreads();
  const long long t0 = clock64();
  if (alu) {  // keeps running past warpgroup 0's loop (its time is not reported)
    float x[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) x[i] = 0.001f * (threadIdx.x + i);
    for (int it = 0; it < 6 * kIters; ++it) {
      if constexpr (kMode == kSWithSts) {
#pragma unroll
        for (int i = 0; i < 16; ++i)
          reinterpret_cast<uint32_t*>(smem + kP)[(threadIdx.x % 128) * 16 +
                                                 ((i + threadIdx.x) & 15)] =
              __float_as_uint(x[i]) + it;
        sm90::fence_proxy_async();
        x[it & 31] += 1.0f;
      } else {
        float m = -1e30f;
#pragma unroll
        for (int i = 0; i < 32; ++i) m = fmaxf(m, x[i]);
#pragma unroll
        for (int i = 0; i < 32; ++i) x[i] = exp2f(fmaf(x[i], 0.999f, -m)) + 0.5f;
      }
    }
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < 32; ++i) acc += x[i];
    if (acc == 12345.f) sink[threadIdx.x] = acc;
  }
  if (active) {
    for (int it = 0; it < kIters; ++it) {
      if constexpr (kMode != kPvBoth && kMode != kPvOne && kMode != kPvWithAlu) {
#pragma unroll
        for (int a = 0; a < 9; ++a) {
          if constexpr (kBarWait) sm90::mbarrier_wait(bar, 0);
          sm90::wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < 4; ++kk) {
            const uint64_t db = sm90::desc_advance(desc_k, a * kAtomBytes + kk * 32);
            if (a == 8 && kMode != kSAllSS)
              sm90::wgmma_m64n64k16_rs<T>(s, q8 + 4 * kk, db, 1);
            else
              sm90::wgmma_m64n64k16_ss<T>(s, sm90::desc_advance(desc_q, a * kAtomBytes + kk * 32),
                                          db, 1);
          }
          sm90::wgmma_commit();
        }
      }
      if constexpr (kMode == kPvBoth || kMode == kPvOne || kMode == kMixBoth ||
                    kMode == kPvWithAlu || kMode == kMixBar) {
        pv_rs(o, pb, desc_v);
        pv_ss(o, desc_p, desc_v);
      }
      sm90::wgmma_wait<0>();
      sm90::fence_regs(s);
      sm90::fence_regs(o);
    }
  }
  const long long t1 = clock64();
  __syncthreads();
  if (threadIdx.x % 128 == 0) cycles[blockIdx.x * 2 + wg] = active ? t1 - t0 : 0;
  // (the ALU warpgroup's clock is not reported: it only loads the SM)
  keep_alive(s, o, sink);
}

#define CHECK(x)                                                                      \
  do {                                                                                \
    cudaError_t e = (x);                                                              \
    if (e != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

template <int kMode>
int run(const char* name, double nominal_per_iter, int sms, long long* d_cycles, float* d_sink) {
  CHECK(cudaFuncSetAttribute(probe<kMode>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int rep = 0; rep < 7; ++rep) {
    CHECK(cudaEventRecord(e0));
    probe<kMode><<<sms, 256, kSmem>>>(d_cycles, d_sink);
    CHECK(cudaEventRecord(e1));
    CHECK(cudaEventSynchronize(e1));
    CHECK(cudaGetLastError());
    float t;
    CHECK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  std::vector<long long> cyc(2 * sms);
  CHECK(cudaMemcpy(cyc.data(), d_cycles, cyc.size() * sizeof(long long), cudaMemcpyDeviceToHost));
  long long mx = 0;
  double mean = 0;
  for (long long c : cyc) mx = std::max(mx, c);
  for (int i = 0; i < sms; ++i) mean += static_cast<double>(std::max(cyc[2 * i], cyc[2 * i + 1]));
  mean /= sms;
  const double per_iter = mean / kIters;
  const double mhz = mx / (ms[ms.size() / 2] * 1e3);
  std::printf("%-34s %9.1f cycles/iter  nominal %7.1f  tensor-busy %5.1f %%  ~%4.0f MHz\n", name,
              per_iter, nominal_per_iter, 100.0 * nominal_per_iter / per_iter, mhz);
  return 0;
}


// ---- The pair kernel's skeleton: its wgmma groups, waits and buffer-part releases (one
// mbarrier per atom, completed by the thread that "refills" the part, as in the kernel's
// FLASHMLA_DENSE_DECODE_PROBE_NO_COPY build), without loads. Variants add the pieces back. ----
enum Skeleton {
  kSkelCoupled = 0,   // parts released after their last reader, as in the kernel
  kSkelSelf = 1,      // every part released by its own warpgroup right after its S (no coupling)
  kSkelHandoffs = 2,  // coupled + the kernel's four named-barrier hand-offs
  kSkelSoftmax = 3,   // coupled + hand-offs + softmax-like math (exp2 of S) in each warpgroup
};
constexpr int kSkQ = 0, kSkK0 = 9 * kAtomBytes, kSkK1 = 18 * kAtomBytes, kSkP0 = 27 * kAtomBytes;
constexpr int kSkP1 = 8 * kAtomBytes;  // Q's RoPE atom, as in the kernel
constexpr int kSkBars = 28 * kAtomBytes;
constexpr int kSkSmem = kSkBars + 256 + 1024;
constexpr int kSkSteps = 256;

template <int kV>
__global__ void __launch_bounds__(256, 1) skeleton(long long* cycles, float* sink) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = align_1024(smem_raw);
  for (int i = threadIdx.x; i < kSkBars / 16; i += 256)
    reinterpret_cast<uint4*>(smem)[i] = make_uint4(0x3c003c00u ^ i, 0x3c00u, i & 0xff, 0);
  sm90::fence_proxy_async();
  const uint32_t base = sm90::smem_addr(smem);
  const uint32_t bars0 = base + kSkBars, bars1 = bars0 + 72;
  if (threadIdx.x == 0) {
    for (int a = 0; a < 18; ++a) sm90::mbarrier_init(bars0 + 8 * a, 1);
    sm90::fence_mbarrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int a = 0; a < 18; ++a) sm90::mbarrier_arrive(bars0 + 8 * a);  // step 0's blocks
  __syncthreads();
  const int wg = threadIdx.x / 128, t128 = threadIdx.x % 128;
  const uint64_t desc_q = sm90::make_smem_desc(base + kSkQ, 16, 1024);
  const uint32_t k0 = base + kSkK0, k1 = base + kSkK1;
  const uint64_t desc_k = sm90::make_smem_desc(wg == 0 ? k0 : k1, 16, 1024);
  const uint32_t my_bars = wg == 0 ? bars0 : bars1;
  float s[32], o[128];
  uint32_t q8[16], pb[16];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
#pragma unroll
  for (int i = 0; i < 16; ++i) q8[i] = pb[i] = 0x3c003c00u + threadIdx.x;
  auto issue_s = [&](int first, int last, uint32_t parity) {
    for (int a = first; a < last; ++a) {  // (unrolled by the compiler: constant bounds)
      sm90::mbarrier_wait(my_bars + 8 * a, parity);
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint64_t db = sm90::desc_advance(desc_k, a * kAtomBytes + kk * 32);
        if (a == 8) sm90::wgmma_m64n64k16_rs<T>(s, q8 + 4 * kk, db, 1);
        else
          sm90::wgmma_m64n64k16_ss<T>(
              s, sm90::desc_advance(desc_q, a * kAtomBytes + kk * 32), db, 1);
      }
      sm90::wgmma_commit();
    }
  };
  auto v_half = [&](uint32_t buf, int half) {
    return sm90::make_smem_desc(buf + half * 4 * kAtomBytes, kAtomBytes, 1024);
  };
  auto p_desc = [&](uint32_t p_addr) { return sm90::make_smem_desc(p_addr, 16, 1024); };
  auto release = [&](uint32_t bars, int first, int last) {
    if (t128 == 0)
      for (int a = first; a < last; ++a) sm90::mbarrier_arrive(bars + 8 * a);
  };
  auto softmax = [&]() {
    if constexpr (kV == kSkelSoftmax) {
      float m = -1e30f, sum = 0.f;
#pragma unroll
      for (int i = 0; i < 32; ++i) m = fmaxf(m, s[i]);
      m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, 2));
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        const float a = exp2f(fmaf(s[2 * i], 0.1f, -m)), b = exp2f(fmaf(s[2 * i + 1], 0.1f, -m));
        sum += a + b;
        __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        pb[i] = *reinterpret_cast<uint32_t*>(&h);
      }
      if (sum == 12345.f) sink[threadIdx.x] = sum;
    }
  };
  constexpr bool kHand = kV == kSkelHandoffs || kV == kSkelSoftmax;
  // step 0's S
  issue_s(8, 9, 0);
  issue_s(0, 8, 0);
  sm90::wgmma_wait<0>();
  sm90::fence_regs(s);
  __syncthreads();
  const long long t0 = clock64();
  uint32_t parity = 1;
  for (int st = 0; st < kSkSteps; ++st) {
    if (wg == 0) {
      softmax();
      if constexpr (kHand) sm90::named_barrier_arrive(6, 256);            // Scale0
      if constexpr (kV == kSkelSelf) release(bars0, 0, 9);
      else release(bars0, 8, 9);                                         // RoPE after S
      pv_rs(o, pb, v_half(k0, 0));                                       // P0 V0_L
      sm90::wgmma_wait<0>();
      sm90::fence_regs(o);
      sm90::fence_regs(pb);
      if constexpr (kV != kSkelSelf) release(bars0, 0, 4);
      if constexpr (kHand) sm90::named_barrier_sync(7, 256);             // Scale1
      if constexpr (kHand) sm90::named_barrier_arrive(8, 256);           // P0
      if constexpr (kHand) sm90::named_barrier_sync(9, 256);             // P1
      pv_ss(o, p_desc(base + kSkP1), v_half(k1, 0));                     // P1 V1_L
      issue_s(8, 9, parity);
      issue_s(0, 4, parity);
      sm90::wgmma_wait<5>();
      if constexpr (kV != kSkelSelf) release(bars1, 0, 4);
      issue_s(4, 8, parity);
      sm90::wgmma_wait<0>();
      sm90::fence_regs(o);
      sm90::fence_regs(s);
    } else {
      if constexpr (kHand) sm90::named_barrier_sync(6, 256);             // Scale0
      softmax();
      if constexpr (kHand) sm90::named_barrier_arrive(7, 256);           // Scale1
      if constexpr (kV == kSkelSelf) release(bars1, 0, 9);
      else release(bars1, 8, 9);
      pv_rs(o, pb, v_half(k1, 1));                                       // P1 V1_R
      if constexpr (kHand) sm90::named_barrier_sync(8, 256);             // P0
      pv_ss(o, p_desc(base + kSkP0), v_half(k0, 1));                     // P0' V0_R
      if constexpr (kHand) sm90::named_barrier_arrive(9, 256);           // P1
      sm90::wgmma_wait<1>();
      if constexpr (kV != kSkelSelf) release(bars1, 4, 8);
      sm90::wgmma_wait<0>();
      if constexpr (kV != kSkelSelf) release(bars0, 4, 8);
      sm90::fence_regs(o);
      sm90::fence_regs(pb);
      issue_s(8, 9, parity);
      issue_s(4, 8, parity);
      issue_s(0, 4, parity);
      sm90::wgmma_wait<0>();
      sm90::fence_regs(o);
      sm90::fence_regs(s);
    }
    parity ^= 1;
  }
  const long long t1 = clock64();
  if (t128 == 0) cycles[blockIdx.x * 2 + wg] = t1 - t0;
  keep_alive(s, o, sink);
}

template <int kV>
int run_skeleton(const char* name, int sms, long long* d_cycles, float* d_sink) {
  CHECK(cudaFuncSetAttribute(skeleton<kV>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSkSmem));
  for (int rep = 0; rep < 3; ++rep) {
    skeleton<kV><<<sms, 256, kSkSmem>>>(d_cycles, d_sink);
    CHECK(cudaDeviceSynchronize());
  }
  std::vector<long long> cyc(2 * sms);
  CHECK(cudaMemcpy(cyc.data(), d_cycles, cyc.size() * sizeof(long long), cudaMemcpyDeviceToHost));
  double mean = 0;
  for (int i = 0; i < sms; ++i) mean += static_cast<double>(std::max(cyc[2 * i], cyc[2 * i + 1]));
  mean /= sms;
  std::printf("skeleton %-40s %7.0f cycles/step  nominal 4352  tensor-busy %5.1f %%\n", name,
              mean / kSkSteps, 100.0 * 4352.0 * kSkSteps / mean);
  return 0;
}

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  long long* d_cycles;
  float* d_sink;
  CHECK(cudaMalloc(&d_cycles, 2 * sms * sizeof(long long)));
  CHECK(cudaMalloc(&d_sink, 256 * sizeof(float)));
  // Nominal: m64n64k16 32 cycles, m64n256k16 128 cycles (4096 bf16 FLOP / clock / SM).
  int rc = 0;
  rc |= run<kSOne>("S 36 x m64n64k16, WG0 only", 36 * 32.0, sms, d_cycles, d_sink);
  rc |= run<kSBoth>("S 36 x m64n64k16, both WGs", 2 * 36 * 32.0, sms, d_cycles, d_sink);
  rc |= run<kSSameK>("S both WGs, same K buffer", 2 * 36 * 32.0, sms, d_cycles, d_sink);
  rc |= run<kSAllSS>("S both WGs, RoPE atom SS too", 2 * 36 * 32.0, sms, d_cycles, d_sink);
  rc |= run<kPvOne>("PV 4 RS + 4 SS n256, WG0 only", 8 * 128.0, sms, d_cycles, d_sink);
  rc |= run<kPvBoth>("PV 4 RS + 4 SS n256, both WGs", 2 * 8 * 128.0, sms, d_cycles, d_sink);
  rc |= run<kSBarOne>("S WG0 only, mbarrier wait per atom", 36 * 32.0, sms, d_cycles, d_sink);
  rc |= run<kSBarBoth>("S both WGs, mbarrier wait per atom", 2 * 36 * 32.0, sms, d_cycles,
                       d_sink);
  rc |= run<kMixBar>("pair step, mbarrier wait per S atom", 2 * (36 * 32.0 + 8 * 128.0), sms,
                     d_cycles, d_sink);
  rc |= run<kSWithAlu>("S WG0, WG1 softmax-like ALU", 36 * 32.0, sms, d_cycles, d_sink);
  rc |= run<kPvWithAlu>("PV WG0, WG1 softmax-like ALU", 8 * 128.0, sms, d_cycles, d_sink);
  rc |= run<kSWithSts>("S WG0, WG1 st.shared + fence", 36 * 32.0, sms, d_cycles, d_sink);
  rc |= run<kMixBoth>("S + PV (one pair step), both WGs", 2 * (36 * 32.0 + 8 * 128.0), sms,
                      d_cycles, d_sink);
  rc |= run_skeleton<kSkelCoupled>("coupled releases", sms, d_cycles, d_sink);
  rc |= run_skeleton<kSkelSelf>("self releases (no coupling)", sms, d_cycles, d_sink);
  rc |= run_skeleton<kSkelHandoffs>("coupled + hand-offs", sms, d_cycles, d_sink);
  rc |= run_skeleton<kSkelSoftmax>("coupled + hand-offs + softmax", sms, d_cycles, d_sink);
  return rc;
}
