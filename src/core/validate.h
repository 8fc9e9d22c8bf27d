// Boundary validation: one function per operation, checking a params struct in a fixed order
// (presence, rank, device, dtype, layout, shapes, cross-argument consistency, then values the
// host can read) and returning the derived problem sizes. Errors name the argument, the
// expected and the actual value (errors.h).
#pragma once

#include <initializer_list>
#include <string>

#include "core/problem.h"
#include "flashmla/errors.h"
#include "flashmla/params.h"

namespace flashmla {

// Check helpers bound to an operation name, so every message starts "flashmla::<op>: ...".
class Checker {
 public:
  explicit Checker(const char* op) : op_(op) {}

  [[noreturn]] void fail(const char* arg, ErrorKind kind, const std::string& detail) const;

  void present(const TensorView& t, const char* arg) const;
  void rank(const TensorView& t, const char* arg, int rank, const char* dims) const;
  void same_device(const TensorView& t, const char* arg, Device device) const;
  void dtype(const TensorView& t, const char* arg, std::initializer_list<DType> allowed) const;
  // Last dim contiguous, no negative strides, non-null data when non-empty.
  void layout(const TensorView& t, const char* arg) const;
  // Exact shape; `dims` names the dimensions for the message, e.g. "[b, s_q, h_q, d_v]".
  void shape(const TensorView& t, const char* arg, std::initializer_list<int64_t> expected,
             const char* dims) const;
  void at_least(const char* arg, const char* what, int64_t value, int64_t min) const;
  float scale(const std::optional<float>& scale, const char* arg, int d_qk) const;

 private:
  const char* op_;
};

// Each returns the problem sizes; values are checked only when the data is host-resident.
DenseDecodeProblem validate_dense_decode(const DenseDecodeParams& p);
void validate_dense_plan(const DensePlanParams& p);
SparseDecodeProblem validate_sparse_decode(const SparseDecodeParams& p);
SparsePrefillProblem validate_sparse_prefill(const SparsePrefillParams& p);
MhaVarlenProblem validate_mha_varlen_fwd(const MhaVarlenFwdParams& p);
MhaVarlenProblem validate_mha_varlen_bwd(const MhaVarlenBwdParams& p);
KVCodecProblem validate_kv_codec(const char* op, KVCacheLayout layout, const TensorView& k_cache,
                                 const TensorView& quant_cache, bool quant_is_output);

}  // namespace flashmla
