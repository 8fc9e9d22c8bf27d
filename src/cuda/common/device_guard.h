// Makes a device current for a scope and restores the caller's device afterwards, so a launch
// for tensors on cuda:1 works whatever device the calling thread had selected.
#pragma once

#include <cuda_runtime.h>

#include "cuda/common/cuda_check.h"

namespace flashmla::cuda {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    FLASHMLA_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) FLASHMLA_CUDA_CHECK(cudaSetDevice(device));
    else previous_ = -1;  // nothing to restore
  }
  ~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);  // a destructor must not throw
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace flashmla::cuda
