// One int per device, computed on first use (device attributes, occupancy): host-side queries that
// would otherwise run on every call.
#pragma once

#include <array>
#include <atomic>

namespace flashmla::cuda {

class PerDeviceCache {
 public:
  // query(device) on the first call for `device`, the cached value afterwards. Concurrent first
  // calls may both query; they store the same value. Devices past kMaxDevices are queried every
  // time.
  template <typename Query>
  int get(int device, Query&& query) {
    const bool cacheable = device >= 0 && device < kMaxDevices;
    if (cacheable) {
      const int cached = values_[device].load(std::memory_order_relaxed);
      if (cached > 0) return cached;
    }
    const int value = query(device);
    if (cacheable) values_[device].store(value > 0 ? value : 1, std::memory_order_relaxed);
    return value;
  }

 private:
  static constexpr int kMaxDevices = 64;
  std::array<std::atomic<int>, kMaxDevices> values_{};  // 0: not queried yet
};

}  // namespace flashmla::cuda
