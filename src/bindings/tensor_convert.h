// Python object -> flashmla::TensorView, through DLPack (nanobind's ndarray import).
//
// Accepted per tensor argument:
//   None                       absent (optional arguments)
//   any DLPack/buffer object   torch (CPU/CUDA), numpy, cupy, jax, ...
//   (array, DType)             the array's bits reinterpreted as DType, for dtypes DLPack
//                              producers cannot export: numpy has no bfloat16 (ml_dtypes arrays
//                              are passed as a uint16 view + DType.bfloat16), and float8 tensors
//                              are passed as a uint8 view + DType.float8_e4m3fn.
// The view never owns memory: the ArgTensors object keeps every imported array alive for the
// duration of one call.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <vector>

#include "flashmla/errors.h"
#include "flashmla/tensor.h"

namespace flashmla::bindings {

namespace nb = nanobind;

class ArgTensors {
 public:
  explicit ArgTensors(const char* op) : op_(op) {}

  // `expected` describes the dtype the argument takes, for the message raised when the array's
  // dtype is one flashmla has no name for (float64, int64, ...); flashmla's own validation
  // reports every other dtype mismatch.
  TensorView view(nb::handle obj, const char* arg, const char* expected);

 private:
  [[noreturn]] void fail(ErrorKind kind, const char* arg, const std::string& detail) const;

  const char* op_;
  std::vector<nb::ndarray<nb::ro>> keep_;
};

}  // namespace flashmla::bindings
