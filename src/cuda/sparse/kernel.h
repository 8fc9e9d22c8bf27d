// Host-side helpers shared by the sparse launchers (sparse_decode.cu, sparse_prefill.cu).
#pragma once

#include "cuda/sparse/params.h"
#include "flashmla/tensor.h"

namespace flashmla::cuda::sparse {

// Fills the fields of `p` common to both operations: the softmax scale, the head split, the
// query-token numbering (token = outer * inner + i) and the vector widths q's and out's rows
// allow. Throws (naming `op`) when the grid would not fit the launch limits.
void set_common(const char* op, const TensorView& q, const TensorView& out, int64_t outer,
                int inner, int h_q, int h_kv, float scale, GatherParams* p);

}  // namespace flashmla::cuda::sparse
