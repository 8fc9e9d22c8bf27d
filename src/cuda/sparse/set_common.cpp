// GatherParams fields common to sparse decode and sparse prefill (kernel.h).
#include <climits>
#include <cstdlib>
#include <string>

#include "cuda/common/layout_checks.h"
#include "cuda/sparse/kernel.h"
#include "flashmla/errors.h"

namespace flashmla::cuda::sparse {

void set_common(const char* op, const TensorView& q, const TensorView& out, int64_t outer,
                int inner, int h_q, int h_kv, float scale, GatherParams* p) {
  p->h_q = h_q;
  p->h_kv = h_kv;
  p->group = h_q / h_kv;
  p->head_tiles = (p->group + kRowsPerTile - 1) / kRowsPerTile;
  p->inner = inner;
  p->inner_div = FastDiv(static_cast<uint32_t>(inner));
  p->num_tokens = outer * inner;
  p->scale_log2 = scale * kLog2e;
  p->q_vec16 = rows_aligned(q, 16) ? 1 : 0;
  p->out_vec16 = rows_aligned(out, 16) ? 1 : 0;
  p->out_vec4 = rows_aligned(out, 4) ? 1 : 0;
  // One CTA per (token, kv head, head tile) in a 1-D grid; the kernel numbers tokens in 32 bits.
  const int64_t blocks = p->num_tokens * h_kv * p->head_tiles;
  if (blocks > INT_MAX)
    throw NotImplementedError(std::string("flashmla::") + op + ": " + std::to_string(blocks) +
                              " CTAs (query tokens x kv heads x 64-head tiles) exceed the CUDA "
                              "kernel's grid limit of " + std::to_string(INT_MAX));
}

int split_request_from_env() {
  const char* v = std::getenv("FLASHMLA_SPARSE_SPLIT");
  if (v == nullptr) return 1;
  const std::string s(v);
  if (s.empty() || s == "1") return 1;
  if (s == "auto") return 0;
  if (s == "2" || s == "4" || s == "8") return std::stoi(s);
  throw Error(ErrorKind::kValue, "flashmla: environment variable FLASHMLA_SPARSE_SPLIT='" + s +
                                     "': expected 1, 2, 4, 8 or auto (the sparse kernels' "
                                     "split over the keys)");
}

}  // namespace flashmla::cuda::sparse
