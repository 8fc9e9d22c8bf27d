// Device queries for heuristics and for describe_backends(). describe_devices() reports a
// missing GPU or driver as text and never throws, so introspection works on any machine.
#include <cstdio>
#include <exception>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/per_device_cache.h"
#include "cuda/cuda_backend.h"

namespace flashmla::cuda {

namespace {

int query_sm_count(int device_index) {
  int sms = 0;
  FLASHMLA_CUDA_CHECK(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_index));
  return sms;
}

// Memory clock (kHz) x bus width (bits) x 2 (double data rate), in GB/s.
int query_peak_dram_gbps(int device_index) {
  int khz = 0, bits = 0;
  FLASHMLA_CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, device_index));
  FLASHMLA_CUDA_CHECK(
      cudaDeviceGetAttribute(&bits, cudaDevAttrGlobalMemoryBusWidth, device_index));
  return static_cast<int>(2.0 * khz * 1e3 * bits / 8 / 1e9);
}

}  // namespace

int device_sm_count(int device_index) {
  static PerDeviceCache cache;
  return cache.get(device_index, query_sm_count);
}

int device_peak_dram_gbps(int device_index) {
  static PerDeviceCache cache;
  return cache.get(device_index, query_peak_dram_gbps);
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
    char numbers[160];
    int dram_gbps = 0;  // (it picks the dense decode kernel for few rows)
    try {
      dram_gbps = device_peak_dram_gbps(i);
    } catch (const std::exception&) {
      cudaGetLastError();
    }
    std::snprintf(numbers, sizeof numbers,
                  "%d SMs, CC %d.%d, %.1f GiB, L2 %.0f MB, DRAM %.2f TB/s peak",
                  prop.multiProcessorCount, prop.major, prop.minor,
                  static_cast<double>(prop.totalGlobalMem) / (1u << 30),
                  static_cast<double>(prop.l2CacheSize) / 1e6, dram_gbps / 1e3);
    s += "cuda:" + std::to_string(i) + " " + prop.name + ", " + numbers;
  }
  return s;
}

}  // namespace flashmla::cuda
