// Framework-free tensor views: a pointer, a dtype, a device, a shape and strides.
//
// Every operation in flashmla takes its arguments as TensorView. Bindings (PyTorch, DLPack)
// build views over their own tensors; the library never owns or allocates tensor memory.
// Strides are in elements, as in PyTorch and DLPack.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

namespace flashmla {

enum class DType : uint8_t {
  kFloat32,
  kBFloat16,
  kFloat16,
  kInt32,
  kUInt8,       // raw bytes: FP8 KV caches are passed as uint8 (or float8_e4m3, same bits)
  kFloat8E4M3,  // e4m3 "fn" flavour: no infinities, 0x7F/0xFF are NaN, max finite 448
};

enum class DeviceType : uint8_t { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  friend bool operator==(const Device&, const Device&) = default;
};

inline constexpr Device kCPU{DeviceType::kCPU, 0};
inline Device cuda_device(int index = 0) { return Device{DeviceType::kCUDA, index}; }

int dtype_size(DType dtype);
const char* dtype_name(DType dtype);
std::string device_name(Device device);

inline constexpr int kMaxRank = 6;

// A non-owning view. A default-constructed view is "absent" (rank -1): optional arguments
// are passed that way.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  Device device = kCPU;
  int rank = -1;
  int64_t shape[kMaxRank] = {};
  int64_t stride[kMaxRank] = {};  // in elements

  bool defined() const { return rank >= 0; }
  int64_t size(int dim) const { return shape[dim < 0 ? dim + rank : dim]; }
  int64_t numel() const;
  bool is_contiguous() const;
  // "[2, 3, 4]"
  std::string shape_str() const;
  std::string stride_str() const;

  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }

  // A contiguous (row-major) view.
  static TensorView contiguous(void* data, DType dtype, Device device,
                               std::initializer_list<int64_t> shape);
  static TensorView strided(void* data, DType dtype, Device device,
                            std::initializer_list<int64_t> shape,
                            std::initializer_list<int64_t> stride);
};

}  // namespace flashmla
