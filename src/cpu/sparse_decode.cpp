// Sparse decode over an FP8 paged cache on the CPU (SPEC.md §3, §4).
//
// The selected token set depends on (request r, query i) only, so one work item is
// (r, i, group of heads): it decodes each valid token of both scopes once into the engine's key
// tile (gathered_attention.h) and attends the whole head group to it under one softmax.
#include <algorithm>
#include <cstdint>

#include "cpu/cpu_backend.h"
#include "cpu/fp8_cache.h"
#include "cpu/gathered_attention.h"

namespace flashmla::cpu {

namespace {

// One scope's selection for query (r, i): its cache and its row of indices.
struct Selection {
  FP8Cache cache;
  const int32_t* indices = nullptr;  // [count]
  int64_t count = 0;                 // entries that count (topk, or topk_length[r] clamped)
};

Selection select(const FP8Cache& cache, const TensorView& indices, const TensorView& topk_length,
                 int64_t r, int i) {
  Selection s;
  s.cache = cache;
  s.indices = indices.ptr<const int32_t>() + r * indices.stride[0] + i * indices.stride[1];
  s.count = indices.size(2);
  if (topk_length.defined()) {
    const int64_t len = topk_length.ptr<const int32_t>()[r * topk_length.stride[0]];
    s.count = std::clamp<int64_t>(len, 0, s.count);
  }
  return s;
}

// Decodes every valid token of the selection into the engine; invalid slots are never read.
void gather(const Selection& s, GatheredAttention& attn) {
  const int64_t num_slots = s.cache.num_slots();
  for (int64_t j = 0; j < s.count; ++j) {
    const int64_t slot = s.indices[j];
    if (slot < 0 || slot >= num_slots) continue;
    decode_slot(s.cache, slot, attn.next_key());
  }
}

}  // namespace

void sparse_decode(const SparseDecodeParams& p, const SparseDecodeProblem& pb) {
  const FP8Cache main_cache{p.k_cache.ptr<const uint8_t>(), pb.layout, pb.num_blocks,
                            pb.page_block_size, pb.block_stride_bytes};
  FP8Cache extra_cache;
  if (pb.has_extra)
    extra_cache = {p.extra_k_cache.ptr<const uint8_t>(), pb.layout, pb.extra_num_blocks,
                   pb.extra_page_block_size, pb.extra_block_stride_bytes};

  const int threads = num_threads();
  const int64_t token_sets = pb.b * pb.s_q;
  const int heads_per = heads_per_item(token_sets, pb.h_q, threads);
  const int groups = (pb.h_q + heads_per - 1) / heads_per;
  const int64_t items = token_sets * groups;

  const TensorView &q = p.q, &out = p.out, &lse = p.lse;
#pragma omp parallel num_threads(threads)
  {
    GatheredAttention attn(heads_per, pb.d_qk, pb.d_v);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t r = item / (int64_t(pb.s_q) * groups);
      const int i = static_cast<int>(item / groups % pb.s_q);
      const int h0 = static_cast<int>(item % groups) * heads_per;
      const int n_heads = std::min(heads_per, pb.h_q - h0);

      attn.begin(n_heads);
      for (int h = 0; h < n_heads; ++h)
        attn.set_query(h,
                       q.ptr<const uint16_t>() + r * q.stride[0] + i * q.stride[1] +
                           (h0 + h) * q.stride[2],
                       pb.scale);
      gather(select(main_cache, p.indices, p.topk_length, r, i), attn);
      if (pb.has_extra)
        gather(select(extra_cache, p.extra_indices, p.extra_topk_length, r, i), attn);
      attn.flush();

      for (int h = 0; h < n_heads; ++h) {
        const int64_t head = h0 + h;
        const float* sink =
            p.attn_sink.defined() ? p.attn_sink.ptr<const float>() + head * p.attn_sink.stride[0]
                                  : nullptr;
        attn.write_output(h, sink, out.ptr<uint16_t>() + r * out.stride[0] + i * out.stride[1] +
                                       head * out.stride[2]);
        lse.ptr<float>()[r * lse.stride[0] + head * lse.stride[1] + i * lse.stride[2]] = attn.lse(h);
      }
    }
  }
}

}  // namespace flashmla::cpu
