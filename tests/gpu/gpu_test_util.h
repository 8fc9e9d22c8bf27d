// Device plumbing shared by the GPU suites: why a GPU test must skip, and an owning device
// buffer with host transfers. Only compiled in CUDA builds (tests/gpu/).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.h"

namespace flashmla::test {

// Empty when a CUDA device is usable, else the reason (for GTEST_SKIP).
inline std::string why_no_gpu() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later checks are not confused
    return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err);
  }
  return n == 0 ? "no CUDA device" : "";
}

class DeviceBuffer {
 public:
  explicit DeviceBuffer(int64_t bytes) : bytes_(bytes) {
    FLASHMLA_CUDA_CHECK(cudaMalloc(&ptr_, bytes > 0 ? bytes : 1));
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  uint8_t* get() const { return static_cast<uint8_t*>(ptr_); }
  void upload(const void* src, int64_t bytes, int64_t at = 0) {
    FLASHMLA_CUDA_CHECK(cudaMemcpy(get() + at, src, bytes, cudaMemcpyHostToDevice));
  }
  void download(void* dst, int64_t bytes) const {
    FLASHMLA_CUDA_CHECK(cudaMemcpy(dst, ptr_, bytes, cudaMemcpyDeviceToHost));
  }
  std::vector<uint8_t> download_bytes(int64_t at, int64_t bytes) const {
    std::vector<uint8_t> v(bytes);
    FLASHMLA_CUDA_CHECK(cudaMemcpy(v.data(), get() + at, bytes, cudaMemcpyDeviceToHost));
    return v;
  }
  // 0xFF bytes: NaN in every float format, so unwritten outputs cannot pass a comparison.
  void poison() { FLASHMLA_CUDA_CHECK(cudaMemset(ptr_, 0xFF, bytes_)); }

 private:
  void* ptr_ = nullptr;
  int64_t bytes_;
};

}  // namespace flashmla::test
