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

// The split over the keys asked for by environment variable FLASHMLA_SPARSE_SPLIT (opt-in until
// the split kernel is measured): unset or 1 none (returns 1), 2 / 4 / 8 that split, auto the
// one split_plan.h predicts fastest (returns 0). Read per call; any other value throws a
// value Error naming the variable.
int split_request_from_env();

}  // namespace flashmla::cuda::sparse
