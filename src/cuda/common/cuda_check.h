// Error checking for every CUDA runtime call in the library: a failed call throws
// flashmla::CudaError naming the expression, the source location and CUDA's own message.
//   FLASHMLA_CUDA_CHECK(cudaMemsetAsync(p, 0, n, stream));
//   kernel<<<grid, block, 0, stream>>>(...);
//   FLASHMLA_CUDA_CHECK_LAUNCH("kv_quantize");
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "flashmla/errors.h"

namespace flashmla::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file,
                                          int line) {
  throw CudaError(std::string("flashmla: CUDA error at ") + file + ":" + std::to_string(line) +
                  ": " + what + " failed: " + cudaGetErrorName(err) + " (" +
                  cudaGetErrorString(err) + ")");
}

inline void check_cuda(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda_error(err, what, file, line);
}

// cudaGetLastError (not Peek) so that a reported launch error is not reported again by the
// next unrelated check.
inline void check_last_launch(const char* kernel, const char* file, int line) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw_cuda_error(err, (std::string("launch of ") + kernel).c_str(), file, line);
}

}  // namespace flashmla::cuda

#define FLASHMLA_CUDA_CHECK(expr) ::flashmla::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)
#define FLASHMLA_CUDA_CHECK_LAUNCH(kernel_name) \
  ::flashmla::cuda::check_last_launch((kernel_name), __FILE__, __LINE__)
