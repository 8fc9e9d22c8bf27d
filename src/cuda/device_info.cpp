// Device queries for heuristics and for describe_backends(). describe_devices() reports a
// missing GPU or driver as text and never throws, so introspection works on any machine.
#include <array>
#include <atomic>
#include <cstdio>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/cuda_backend.h"

namespace flashmla::cuda {

namespace {

// Devices whose SM count is cached; a larger index is simply queried every time.
constexpr int kMaxCachedDevices = 64;

}  // namespace

int device_sm_count(int device_index) {
  // 0 = not queried yet. Concurrent first calls may both query; they store the same value.
  static std::array<std::atomic<int>, kMaxCachedDevices> cache{};
  const bool cacheable = device_index >= 0 && device_index < kMaxCachedDevices;
  if (cacheable) {
    const int cached = cache[device_index].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  int sms = 0;
  FLASHMLA_CUDA_CHECK(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_index));
  if (cacheable) cache[device_index].store(sms, std::memory_order_relaxed);
  return sms;
}

std::string describe_devices() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // leave no error behind for the caller's next check
    return std::string("no CUDA device (") + cudaGetErrorString(err) + ")";
  }
  if (count == 0) return "no CUDA device";
  std::string s;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (i > 0) s += "; ";
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      cudaGetLastError();
      s += "cuda:" + std::to_string(i) + " (properties unavailable)";
      continue;
    }
    char numbers[128];
    std::snprintf(numbers, sizeof numbers, "%d SMs, CC %d.%d, %.1f GiB, L2 %.0f MB",
                  prop.multiProcessorCount, prop.major, prop.minor,
                  static_cast<double>(prop.totalGlobalMem) / (1u << 30),
                  static_cast<double>(prop.l2CacheSize) / 1e6);
    s += "cuda:" + std::to_string(i) + " " + prop.name + ", " + numbers;
  }
  return s;
}

}  // namespace flashmla::cuda
