// Combine kernel: merges the float32 partial slots of every request the schedule split into
// several chunks (SPEC.md §2, Flash-Decoding). One warp per (request, query, head) row at a time
// (the warps of one resident wave stride over the rows):
//   lse = log(sum_s exp(lse_s)),   out = sum_s exp(lse_s - lse) * o_s
// Empty partials carry lse_s = -inf and drop out; a row with every partial empty gets out = 0
// and lse = +inf. Requests with one chunk were written by the main kernel and are skipped (a
// schedule without slots: the whole grid returns at once).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>

#include "core/decode_schedule.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/sm90_ptx.cuh"
#include "cuda/dense_decode/config.h"
#include "cuda/dense_decode/kernel.h"

namespace flashmla::cuda::mla_decode {
namespace {

constexpr int kColsPerLane = kDimV / 32;  // 16 floats = 4 float4

template <typename T>
__device__ __forceinline__ void store4(T* dst, float4 v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
    uint2 u{*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b)};
    *reinterpret_cast<uint2*>(dst) = u;
  } else {
    const __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
    uint2 u{*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b)};
    *reinterpret_cast<uint2*>(dst) = u;
  }
}

// One (request, query, head) row of the combine (warp w, all 32 lanes).
template <typename T>
__device__ __forceinline__ void combine_row(const MainParams& p, const sched::View& view,
                                            int64_t rows_per_req, int64_t w, int lane) {
  const int64_t req = w / rows_per_req;
  const int64_t rem = w % rows_per_req;  // i * h_q + h: the partial row inside a slot
  const int splits = view.num_splits()[req];
  if (splits <= 1) return;
  const int64_t first = view.first_slot()[req];
  const int i = static_cast<int>(rem / p.h_q);
  const int h = static_cast<int>(rem % p.h_q);

  // Max and sum of exp over the slots' lse, lanes striding over slots.
  float mx = -INFINITY;
  for (int s = lane; s < splits; s += 32)
    mx = fmaxf(mx, p.lse_partial[(first + s) * rows_per_req + rem]);
#pragma unroll
  for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, o));
  float acc[kColsPerLane] = {};
  float lse = INFINITY;
  if (mx > -INFINITY) {
    float sum = 0.0f;
    for (int s = lane; s < splits; s += 32)
      sum += expf(p.lse_partial[(first + s) * rows_per_req + rem] - mx);
#pragma unroll
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffff, sum, o);
    lse = mx + logf(sum);
    for (int s = 0; s < splits; ++s) {
      const int64_t slot_row = (first + s) * rows_per_req + rem;
      const float wgt = expf(p.lse_partial[slot_row] - lse);
      const float4* src = reinterpret_cast<const float4*>(p.o_partial + slot_row * kDimV);
#pragma unroll
      for (int v = 0; v < kColsPerLane / 4; ++v) {
        const float4 x = src[v * 32 + lane];
        acc[4 * v + 0] += wgt * x.x;
        acc[4 * v + 1] += wgt * x.y;
        acc[4 * v + 2] += wgt * x.z;
        acc[4 * v + 3] += wgt * x.w;
      }
    }
  }
  T* out = static_cast<T*>(p.out) + req * p.out_stride[0] + i * p.out_stride[1] +
           h * p.out_stride[2];
#pragma unroll
  for (int v = 0; v < kColsPerLane / 4; ++v)
    store4<T>(out + (v * 32 + lane) * 4,
              make_float4(acc[4 * v], acc[4 * v + 1], acc[4 * v + 2], acc[4 * v + 3]));
  if (lane == 0) p.lse[req * p.lse_stride[0] + h * p.lse_stride[1] + i * p.lse_stride[2]] = lse;
}

template <typename T>
__global__ void __launch_bounds__(kCombineWarpsPerBlock * 32)
    combine_kernel(const __grid_constant__ MainParams p) {
  // Launched early by programmatic dependent launch: wait until the main kernel has finished
  // and its partials are visible.
  sm90::grid_dependency_wait();
  const sched::View view{const_cast<int32_t*>(p.sched_meta), p.b, p.num_parts};
  if (view.num_slots() == 0) return;  // a whole-request schedule: nothing to merge
  const int64_t rows_per_req = int64_t{p.s_q} * p.h_q;
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t{gridDim.x} * kCombineWarpsPerBlock;
  for (int64_t w = int64_t{blockIdx.x} * kCombineWarpsPerBlock + threadIdx.x / 32;
       w < p.b * rows_per_req; w += warps)
    combine_row<T>(p, view, rows_per_req, w, lane);
}

// Blocks of one resident wave of the combine kernel on the current device (cached per device).
// Its warps stride over the rows: a grid of one warp per row needed up to four waves of block
// launches after the main kernel (b * s_q * h_q warps, 4096 blocks for D4; the main kernel's CTAs
// hold every register until they exit), even when no request was split.
int combine_wave_blocks() {
  constexpr int kMaxDevices = 64;
  static std::array<std::atomic<int>, kMaxDevices> cache{};
  int dev = 0;
  FLASHMLA_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < kMaxDevices && cache[dev].load(std::memory_order_relaxed) > 0)
    return cache[dev].load(std::memory_order_relaxed);
  int sms = 0, per_sm = 0;
  FLASHMLA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  // (the fp16 instantiation has the same shape: 61 registers each, ptxas)
  FLASHMLA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, combine_kernel<__nv_bfloat16>, kCombineWarpsPerBlock * 32, 0));
  const int blocks = sms * (per_sm > 0 ? per_sm : 1);
  if (dev < kMaxDevices) cache[dev].store(blocks, std::memory_order_relaxed);
  return blocks;
}

}  // namespace

void launch_combine(const MainParams& p, bool is_fp16, cudaStream_t stream) {
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_COMBINE)  // diagnostic build: partials never merged
  return;
#endif
  const int64_t warps = p.b * p.s_q * p.h_q;
  const int64_t blocks = std::min<int64_t>(
      (warps + kCombineWarpsPerBlock - 1) / kCombineWarpsPerBlock, combine_wave_blocks());
  // Programmatic dependent launch: the combine grid is scheduled while the main kernel runs (it
  // triggers at its start) and waits in griddepcontrol.wait, hiding the launch latency.
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(kCombineWarpsPerBlock * 32);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  if (is_fp16)
    FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(&config, combine_kernel<__half>, p));
  else
    FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(&config, combine_kernel<__nv_bfloat16>, p));
  FLASHMLA_CUDA_CHECK_LAUNCH("dense_decode combine_kernel");
}

}  // namespace flashmla::cuda::mla_decode
