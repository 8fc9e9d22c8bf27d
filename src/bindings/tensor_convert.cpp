// DLPack -> TensorView (see tensor_convert.h).
#include "tensor_convert.h"

#include <string>

#include "flashmla/errors.h"

namespace flashmla::bindings {

namespace {

// DLPack type codes (dlpack.h; numeric so that any nanobind 2.x/3.x header works).
constexpr uint8_t kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4, kDLFloat8E4M3FN = 10;
// DLPack device types.
constexpr int kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3;

bool dlpack_to_dtype(nb::dlpack::dtype dt, DType* out) {
  if (dt.lanes != 1) return false;
  if (dt.code == kDLFloat && dt.bits == 32) *out = DType::kFloat32;
  else if (dt.code == kDLFloat && dt.bits == 16) *out = DType::kFloat16;
  else if (dt.code == kDLBfloat && dt.bits == 16) *out = DType::kBFloat16;
  else if (dt.code == kDLInt && dt.bits == 32) *out = DType::kInt32;
  else if (dt.code == kDLUInt && dt.bits == 8) *out = DType::kUInt8;
  else if (dt.code == kDLFloat8E4M3FN && dt.bits == 8) *out = DType::kFloat8E4M3;
  else return false;
  return true;
}

std::string dlpack_dtype_name(nb::dlpack::dtype dt) {
  const char* kind = "code" ;
  switch (dt.code) {
    case kDLInt: kind = "int"; break;
    case kDLUInt: kind = "uint"; break;
    case kDLFloat: kind = "float"; break;
    case kDLBfloat: kind = "bfloat"; break;
    case 5: kind = "complex"; break;
    case 6: kind = "bool"; break;
    default: return "DLPack dtype (code " + std::to_string(dt.code) + ", " +
                    std::to_string(dt.bits) + " bits)";
  }
  std::string s = kind + std::to_string(dt.bits);
  if (dt.lanes != 1) s += "x" + std::to_string(dt.lanes);
  return s;
}

}  // namespace

void ArgTensors::fail(ErrorKind kind, const char* arg, const std::string& detail) const {
  throw ArgumentError(kind, op_, arg, detail);
}

TensorView ArgTensors::view(nb::handle obj, const char* arg, const char* expected) {
  if (obj.is_none()) return TensorView{};
  nb::handle array = obj;
  bool has_override = false;
  DType override_dtype = DType::kFloat32;
  if (nb::isinstance<nb::tuple>(obj)) {
    nb::tuple t = nb::borrow<nb::tuple>(obj);
    if (nb::len(t) != 2 || !nb::try_cast<DType>(t[1], override_dtype))
      fail(ErrorKind::kType, arg, "expected a tensor, or a pair (tensor, flash_mla._C.DType)");
    array = t[0];
    has_override = true;
  }
  nb::ndarray<nb::ro> nd;
  if (!nb::try_cast(array, nd, /*convert=*/false))
    fail(ErrorKind::kType, arg,
         std::string("expected a tensor (torch.Tensor, numpy.ndarray or any DLPack array), got ") +
             nb::type_name(array.type()).c_str());

  TensorView v;
  if (nd.ndim() > static_cast<size_t>(kMaxRank))
    fail(ErrorKind::kValue, arg,
         "has rank " + std::to_string(nd.ndim()) + ", more than flashmla's limit of " +
             std::to_string(kMaxRank));
  v.rank = static_cast<int>(nd.ndim());
  for (int i = 0; i < v.rank; ++i) {
    v.shape[i] = static_cast<int64_t>(nd.shape(i));
    v.stride[i] = nd.stride(i);
  }
  const int itemsize = (nd.dtype().bits * nd.dtype().lanes + 7) / 8;
  if (has_override) {
    if (itemsize != dtype_size(override_dtype))
      fail(ErrorKind::kType, arg,
           std::string("cannot view ") + dlpack_dtype_name(nd.dtype()) + " data as " +
               dtype_name(override_dtype) + " (element sizes differ)");
    v.dtype = override_dtype;
  } else if (!dlpack_to_dtype(nd.dtype(), &v.dtype)) {
    fail(ErrorKind::kType, arg,
         std::string("expected dtype ") + expected + ", got " + dlpack_dtype_name(nd.dtype()));
  }
  switch (nd.device_type()) {
    case kDLCPU:
    case kDLCUDAHost:
      v.device = kCPU;
      break;
    case kDLCUDA:
      v.device = cuda_device(nd.device_id());
      break;
    default:
      fail(ErrorKind::kValue, arg,
           "is on a device flashmla does not support (DLPack device type " +
               std::to_string(nd.device_type()) + "); expected a CPU or CUDA tensor");
  }
  v.data = const_cast<void*>(static_cast<const void*>(nd.data()));
  keep_.push_back(std::move(nd));
  return v;
}

}  // namespace flashmla::bindings
