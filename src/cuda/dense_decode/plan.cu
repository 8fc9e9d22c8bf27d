// Plan kernel: builds the split-KV schedule on the device with the very code the CPU plan runs
// (sched::build is __host__ __device__), so both backends produce identical sched_meta.
// One block: its threads gather cache_seqlens (any stride) into shared memory, then thread 0
// builds. The build is O(b + num_parts) scalar work, microseconds for production batches.
#include <climits>

#include "core/decode_schedule.h"
#include "cuda/common/cuda_check.h"
#include "cuda/dense_decode/config.h"
#include "cuda/dense_decode/kernel.h"
#include "flashmla/errors.h"

namespace flashmla::cuda::mla_decode {
namespace {

__global__ void __launch_bounds__(kPlanThreads)
    plan_kernel(const int32_t* seqlens, int64_t stride, int64_t b, int num_parts,
                int32_t* sched_meta) {
  extern __shared__ int32_t lens[];
  for (int64_t r = threadIdx.x; r < b; r += blockDim.x) lens[r] = seqlens[r * stride];
  __syncthreads();
  // Same max_len as the CPU plan (dispatch.cpp): the plan does not see the block table; the
  // run step clamps each length to the table's capacity.
  if (threadIdx.x == 0) sched::build(lens, b, num_parts, INT32_MAX, sched::View{sched_meta, b, num_parts});
}

}  // namespace

void launch_plan(const int32_t* seqlens, int64_t seqlens_stride, int64_t b, int num_parts,
                 int32_t* sched_meta, cudaStream_t stream) {
  if (b > kPlanMaxBatch)
    throw NotImplementedError("flashmla::dense_decode_plan: the CUDA plan kernel handles b <= " +
                              std::to_string(kPlanMaxBatch) + ", got b = " + std::to_string(b));
  const int smem = static_cast<int>(b * sizeof(int32_t));
  FLASHMLA_CUDA_CHECK(cudaFuncSetAttribute(plan_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           smem));
  plan_kernel<<<1, kPlanThreads, smem, stream>>>(seqlens, seqlens_stride, b, num_parts,
                                                 sched_meta);
  FLASHMLA_CUDA_CHECK_LAUNCH("dense_decode plan_kernel");
}

}  // namespace flashmla::cuda::mla_decode
