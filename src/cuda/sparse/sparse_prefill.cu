// CUDA backend entry point of sparse prefill (SPEC.md §5): resolves SparsePrefillParams into the
// sparse kernel's GatherParams (query token = query row, inner = 1; keys gathered from the bf16
// kv rows by cp.async) and launches it for d_qk 576 or 512. Any strides work: rows off 16-byte
// boundaries take slower load paths instead of an error.
#include <cuda_runtime.h>

#include "cuda/common/device_guard.h"
#include "cuda/common/env_switch.h"
#include "cuda/common/layout_checks.h"
#include "cuda/cuda_backend.h"
#include "cuda/sparse/kernel.cuh"
#include "cuda/sparse/kernel_seesaw.cuh"
#include "cuda/sparse/kernel.h"

namespace flashmla::cuda {

void sparse_prefill(const SparsePrefillParams& p, const SparsePrefillProblem& pb, Stream stream) {
  const DeviceGuard guard(p.q.device.index);

  sparse::GatherParams g{};
  sparse::set_common("sparse_prefill", p.q, p.out, pb.s_q, 1, pb.h_q, pb.h_kv, pb.scale, &g);
  g.q = p.q.data;
  g.q_stride_outer = p.q.stride[0];
  g.q_stride_head = p.q.stride[1];
  g.out = p.out.data;
  g.out_stride_outer = p.out.stride[0];
  g.out_stride_head = p.out.stride[1];
  g.lse = p.lse.ptr<float>();
  g.lse_stride_outer = p.lse.stride[0];
  g.lse_stride_head = p.lse.stride[1];
  g.max_logits = p.max_logits.ptr<float>();
  g.ml_stride_outer = p.max_logits.stride[0];
  g.ml_stride_head = p.max_logits.stride[1];
  if (p.attn_sink.defined()) {
    g.attn_sink = p.attn_sink.ptr<float>();
    g.sink_stride = p.attn_sink.stride[0];
  }
  sparse::Scope& sc = g.scope[0];
  sc.indices = p.indices.ptr<int32_t>();
  sc.idx_stride_outer = p.indices.stride[0];
  sc.idx_stride_kvh = p.indices.stride[1];
  sc.topk = pb.topk;
  if (p.topk_length.defined()) {
    sc.topk_length = p.topk_length.ptr<int32_t>();
    sc.topk_length_stride = p.topk_length.stride[0];
  }
  sc.cache = static_cast<const uint8_t*>(p.kv.data);
  sc.num_slots = pb.s_kv;
  sc.key_stride = p.kv.stride[0] * 2;
  sc.kvh_stride = p.kv.stride[1] * 2;
  g.num_scopes = 1;

  // kv rows off 16-byte boundaries (a strided view) take the slow, unpipelined gather, without
  // a split. FLASHMLA_SPARSE_SEESAW=1 (opt-in until measured): the seesaw kernel for aligned
  // rows (kernel_seesaw.cuh); FLASHMLA_SPARSE_SYNC_HANDOFFS=1 makes its hand-offs bar.sync on
  // both sides (for racecheck).
  const bool aligned = rows_aligned(p.kv, 16);
  const int split = sparse::split_request_from_env();
  const int tiles = sparse::key_tiles(pb.topk);
  if (aligned && env_is("FLASHMLA_SPARSE_SEESAW", "1")) {
    g.sync_handoffs = env_is("FLASHMLA_SPARSE_SYNC_HANDOFFS", "1") ? 1 : 0;
    if (pb.d_qk == 576) sparse::launch_seesaw<sparse::Bf16SeesawProducer<576>, 576>(g, stream);
    else sparse::launch_seesaw<sparse::Bf16SeesawProducer<512>, 512>(g, stream);
    return;
  }
  if (pb.d_qk == 576) {
    if (aligned) sparse::launch_split<sparse::Bf16Gather<576, true>, 576>(g, split, tiles, stream);
    else sparse::launch<sparse::Bf16Gather<576, false>, 576>(g, stream);
  } else {
    if (aligned) sparse::launch_split<sparse::Bf16Gather<512, true>, 512>(g, split, tiles, stream);
    else sparse::launch<sparse::Bf16Gather<512, false>, 512>(g, stream);
  }
}

}  // namespace flashmla::cuda
