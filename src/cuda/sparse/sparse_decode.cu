// CUDA backend entry point of sparse decode over FP8 caches (SPEC.md §3, §4): resolves
// SparseDecodeParams into the sparse kernel's GatherParams (query token = (request, query),
// inner = s_q; the main scope and the optional extra scope under one softmax) and launches it
// with the V3.2 or the MODEL1 gatherer.
#include <cuda_runtime.h>

#include "cuda/common/device_guard.h"
#include "cuda/common/env_switch.h"
#include "cuda/cuda_backend.h"
#include "cuda/sparse/kernel.cuh"
#include "cuda/sparse/kernel_producer.cuh"
#include "cuda/sparse/kernel_seesaw.cuh"
#include "cuda/sparse/kernel.h"

namespace flashmla::cuda {
namespace {

// Switches (cuda/common/env_switch.h): FLASHMLA_SPARSE_DEQUANT = bits: the integer dequantization (dequant.cuh), for A/B timing;
// FLASHMLA_SPARSE_PAIR = 1: the crossover pair for two head tiles (kernel.cuh; measured slower
// than a CTA alone, session 28), for A/B timing; FLASHMLA_SPARSE_PRODUCER = 1: the producer
// kernel (kernel_producer.cuh), opt-in until measured. FLASHMLA_SPARSE_SPLIT: kernel.h.

// One FP8 scope (validation checked the layout: 16-byte aligned data and block stride).
sparse::Scope fp8_scope(const TensorView& cache, const TensorView& indices,
                        const TensorView& topk_length, int topk, int64_t num_blocks, int64_t page,
                        int64_t block_stride) {
  sparse::Scope sc{};
  sc.indices = indices.ptr<int32_t>();
  sc.idx_stride_outer = indices.stride[0];
  sc.idx_stride_inner = indices.stride[1];
  sc.topk = topk;
  if (topk_length.defined()) {
    sc.topk_length = topk_length.ptr<int32_t>();
    sc.topk_length_stride = topk_length.stride[0];
  }
  sc.cache = static_cast<const uint8_t*>(cache.data);
  sc.num_slots = num_blocks * page;
  sc.block_stride = block_stride;
  sc.page = static_cast<int>(page);
  sc.page_div = FastDiv(static_cast<uint32_t>(page));
  return sc;
}

// The FP8 gatherer G's kernel for the dequantization way and the kernel chosen: the producer
// kernel, the crossover pair, or the plain kernel with the split chosen (separate kernels: with
// several asked for, the split wins, then the producer).
template <template <sparse::Dequant, int> class G, int kDqk>
void launch_fp8(const sparse::GatherParams& g, bool bits, bool pair, bool producer,
                int split_request, int tiles, cudaStream_t stream) {
  using sparse::Dequant;
  constexpr int kSolo = sparse::kThreadsPerKeySolo, kPair = sparse::kThreadsPerKeyPair;
  if (producer && split_request == 1) {
    if (bits) sparse::launch_producer<G<Dequant::kBits, kSolo>, kDqk>(g, stream);
    else sparse::launch_producer<G<Dequant::kCvt, kSolo>, kDqk>(g, stream);
  } else if (pair && split_request == 1) {
    if (bits) sparse::launch<G<Dequant::kBits, kPair>, kDqk, true>(g, stream);
    else sparse::launch<G<Dequant::kCvt, kPair>, kDqk, true>(g, stream);
  } else {
    if (bits) sparse::launch_split<G<Dequant::kBits, kSolo>, kDqk>(g, split_request, tiles, stream);
    else sparse::launch_split<G<Dequant::kCvt, kSolo>, kDqk>(g, split_request, tiles, stream);
  }
}

}  // namespace

void sparse_decode(const SparseDecodeParams& p, const SparseDecodeProblem& pb, Stream stream) {
  const DeviceGuard guard(p.q.device.index);

  sparse::GatherParams g{};
  sparse::set_common("sparse_decode", p.q, p.out, pb.b, pb.s_q, pb.h_q, 1, pb.scale, &g);
  g.q = p.q.data;
  g.q_stride_outer = p.q.stride[0];
  g.q_stride_inner = p.q.stride[1];
  g.q_stride_head = p.q.stride[2];
  g.out = p.out.data;
  g.out_stride_outer = p.out.stride[0];
  g.out_stride_inner = p.out.stride[1];
  g.out_stride_head = p.out.stride[2];
  g.lse = p.lse.ptr<float>();  // [b, h_q, s_q]
  g.lse_stride_outer = p.lse.stride[0];
  g.lse_stride_head = p.lse.stride[1];
  g.lse_stride_inner = p.lse.stride[2];
  if (p.attn_sink.defined()) {
    g.attn_sink = p.attn_sink.ptr<float>();
    g.sink_stride = p.attn_sink.stride[0];
  }
  g.scope[0] = fp8_scope(p.k_cache, p.indices, p.topk_length, pb.topk, pb.num_blocks,
                         pb.page_block_size, pb.block_stride_bytes);
  g.num_scopes = 1;
  if (pb.has_extra) {
    g.scope[1] = fp8_scope(p.extra_k_cache, p.extra_indices, p.extra_topk_length, pb.extra_topk,
                           pb.extra_num_blocks, pb.extra_page_block_size,
                           pb.extra_block_stride_bytes);
    g.num_scopes = 2;
  }

  const bool bits = env_is("FLASHMLA_SPARSE_DEQUANT", "bits");
  const bool pair = g.head_tiles == 2 && env_is("FLASHMLA_SPARSE_PAIR", "1");
  const bool producer = env_is("FLASHMLA_SPARSE_PRODUCER", "1");
  const int split = sparse::split_request_from_env();
  // FLASHMLA_SPARSE_SEESAW = 1: the seesaw kernel (kernel_seesaw.cuh; V3.2 only, conversion
  // dequantization only: the integer way spilled its producer; opt-in until measured), unless a
  // split is asked for.
  if (pb.layout == KVCacheLayout::kV32 && split == 1 && env_is("FLASHMLA_SPARSE_SEESAW", "1")) {
    g.sync_handoffs = env_is("FLASHMLA_SPARSE_SYNC_HANDOFFS", "1") ? 1 : 0;
    sparse::launch_seesaw<sparse::V32SeesawProducer<sparse::Dequant::kCvt>, 576>(g, stream);
    return;
  }
  const int tiles = sparse::key_tiles(pb.topk) + (pb.has_extra ? sparse::key_tiles(pb.extra_topk) : 0);
  if (pb.layout == KVCacheLayout::kV32)
    launch_fp8<sparse::V32Gather, 576>(g, bits, pair, producer, split, tiles, stream);
  else launch_fp8<sparse::Model1Gather, 512>(g, bits, pair, producer, split, tiles, stream);
}

}  // namespace flashmla::cuda
