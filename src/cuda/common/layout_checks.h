// Host-side layout requirements of the CUDA kernels that validation (src/core) does not impose:
// the 16-byte (or 8/4-byte) row alignment of vector copies and stores. Views that break them are
// rare (slices at odd offsets); they get a clear error rather than a misaligned access.
#pragma once

#include <cstdint>
#include <string>

#include "flashmla/errors.h"
#include "flashmla/tensor.h"

namespace flashmla::cuda {

// Whether every row of t starts on a `bytes` boundary (data pointer and strides).
inline bool rows_aligned(const TensorView& t, int bytes) {
  bool ok = reinterpret_cast<uintptr_t>(t.data) % bytes == 0;
  const int elems = bytes / dtype_size(t.dtype);
  for (int d = 0; d + 1 < t.rank; ++d) ok = ok && (t.shape[d] <= 1 || t.stride[d] % elems == 0);
  return ok;
}

// Throws NotImplementedError naming the operation and argument unless rows_aligned(t, bytes).
inline void require_aligned(const char* op, const TensorView& t, const char* name, int bytes) {
  if (!rows_aligned(t, bytes))
    throw NotImplementedError(std::string("flashmla::") + op + ": the CUDA kernel needs " + name +
                              " rows aligned to " + std::to_string(bytes) +
                              " bytes (data pointer and strides), got strides " + t.stride_str());
}

}  // namespace flashmla::cuda
