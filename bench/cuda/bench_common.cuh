// Pieces shared by the GPU benchmarks (bench_dense_decode.cu, bench_sparse.cu, bench_mha.cu):
// device buffers, random fills, the spin kernel and CUDA-event timing of calls.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "flashmla/fp8.h"

namespace flashmla::bench {
// One copy per benchmark file (a kernel's host stub may not be defined twice).
namespace {

struct Buf {
  void* p = nullptr;
  explicit Buf(int64_t bytes) { FLASHMLA_CUDA_CHECK(cudaMalloc(&p, bytes > 0 ? bytes : 1)); }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(p); }
};

// randn / div clamped to [-1, 1] as bf16, element `first + i` of the stream `seed`: a counter
// hash and Box-Muller, so that a buffer filled in chunks holds what one fill would have made.
__global__ void fill_randn(uint16_t* x, int64_t n, uint64_t seed, int64_t first, float div) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t z = seed * 0xD1B54A32D192ED03ull + 0x9E3779B97F4A7C15ull * (first + i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u1 = (static_cast<float>(z >> 40) + 1.0f) * 0x1.0p-24f;  // (0, 1]
    const float u2 = static_cast<float>((z >> 16) & 0xFFFFFF) * 0x1.0p-24f;
    const float g = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    x[i] = fp8::float_to_bf16(fminf(fmaxf(g / div, -1.0f), 1.0f));
  }
}

void fill(const Buf& b, int64_t n, uint64_t seed, float div) {
  fill_randn<<<1024, 256>>>(b.as<uint16_t>(), n, seed, 0, div);
  FLASHMLA_CUDA_CHECK_LAUNCH("fill_randn");
}


// Keeps the GPU busy (one thread, little power) for `cycles` SM cycles.
__global__ void spin_cycles(int64_t cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

// CUDA events around each of `runs` calls of `call()`, each after `before(i)` (outside the
// events): sorted µs.
template <typename Before, typename Call>
std::vector<double> timed_calls(int runs, Before before, Call call) {
  cudaEvent_t e0, e1;
  FLASHMLA_CUDA_CHECK(cudaEventCreate(&e0));
  FLASHMLA_CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    before(i);
    FLASHMLA_CUDA_CHECK(cudaEventRecord(e0, nullptr));
    call();
    FLASHMLA_CUDA_CHECK(cudaEventRecord(e1, nullptr));
    FLASHMLA_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    FLASHMLA_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms * 1e3);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  return t;
}

// timed_calls with, before each call and outside the events, a memset of `flush_bytes` at
// `flush` (evicting L2) and, when spin > 0, a spin of that many cycles (so that calls do not run
// back to back under the power limit): sorted µs.
template <typename Call>
std::vector<double> flushed_event_times(Call call, void* flush, int64_t flush_bytes, int runs,
                                        int64_t spin) {
  return timed_calls(
      runs,
      [&](int i) {
        FLASHMLA_CUDA_CHECK(cudaMemsetAsync(flush, i & 0xFF, flush_bytes, nullptr));
        if (spin > 0) {
          spin_cycles<<<1, 1>>>(spin);
          FLASHMLA_CUDA_CHECK_LAUNCH("spin_cycles");
        }
      },
      call);
}

}  // namespace
}  // namespace flashmla::bench
