// TensorView helpers and dtype/device names.
#include "flashmla/tensor.h"

#include "flashmla/errors.h"
#include "flashmla/kv_layout.h"

namespace flashmla {

int dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kInt32: return 4;
    case DType::kBFloat16: return 2;
    case DType::kFloat16: return 2;
    case DType::kUInt8: return 1;
    case DType::kFloat8E4M3: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kInt32: return "int32";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat16: return "float16";
    case DType::kUInt8: return "uint8";
    case DType::kFloat8E4M3: return "float8_e4m3fn";
  }
  return "?";
}

std::string device_name(Device device) {
  return device.is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(device.index);
}

const char* kv_layout_name(KVCacheLayout layout) {
  return layout == KVCacheLayout::kV32 ? "V3.2 (656 B/token)" : "MODEL1 (584 B/token)";
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= shape[i];
  return n;
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int i = rank - 1; i >= 0; --i) {
    if (shape[i] != 1 && stride[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

static std::string join(const int64_t* v, int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string TensorView::shape_str() const { return defined() ? join(shape, rank) : "<absent>"; }
std::string TensorView::stride_str() const { return defined() ? join(stride, rank) : "<absent>"; }

TensorView TensorView::contiguous(void* data, DType dtype, Device device,
                                  std::initializer_list<int64_t> shape) {
  if (shape.size() > static_cast<size_t>(kMaxRank))
    throw Error(ErrorKind::kValue, "TensorView: rank exceeds kMaxRank");
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.rank = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.stride[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

TensorView TensorView::strided(void* data, DType dtype, Device device,
                               std::initializer_list<int64_t> shape,
                               std::initializer_list<int64_t> stride) {
  if (shape.size() != stride.size())
    throw Error(ErrorKind::kValue, "TensorView::strided: shape and stride ranks differ");
  TensorView t = contiguous(data, dtype, device, shape);
  int i = 0;
  for (int64_t s : stride) t.stride[i++] = s;
  return t;
}

}  // namespace flashmla
