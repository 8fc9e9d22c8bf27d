// Sparse prefill (flash_mla_sparse_fwd) on the CPU (SPEC.md §5).
//
// The selected token set depends on (query i, kv head g) only, so one work item is
// (i, g, group of the query heads g serves): it converts each valid bf16 key once into the
// engine's key tile (gathered_attention.h) and attends the whole head group to it.
// lse and max_logits are natural-log / plain values of the logits already multiplied by sm_scale.
#include <algorithm>
#include <cstdint>

#include "cpu/cpu_backend.h"
#include "cpu/gathered_attention.h"
#include "flashmla/fp8.h"

namespace flashmla::cpu {

void sparse_prefill(const SparsePrefillParams& p, const SparsePrefillProblem& pb) {
  const int q_per_kv = pb.h_q / pb.h_kv;
  const int threads = num_threads();
  const int64_t token_sets = pb.s_q * pb.h_kv;
  const int heads_per = heads_per_item(token_sets, q_per_kv, threads);
  const int groups = (q_per_kv + heads_per - 1) / heads_per;
  const int64_t items = token_sets * groups;

  const TensorView &q = p.q, &kv = p.kv, &idx = p.indices, &out = p.out;
#pragma omp parallel num_threads(threads)
  {
    GatheredAttention attn(heads_per, pb.d_qk, pb.d_v);
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t i = item / (int64_t(pb.h_kv) * groups);
      const int g = static_cast<int>(item / groups % pb.h_kv);
      const int h0 = g * q_per_kv + static_cast<int>(item % groups) * heads_per;
      const int n_heads = std::min(heads_per, (g + 1) * q_per_kv - h0);

      attn.begin(n_heads);
      for (int h = 0; h < n_heads; ++h)
        attn.set_query(h, q.ptr<const uint16_t>() + i * q.stride[0] + (h0 + h) * q.stride[1],
                       pb.scale);

      int64_t count = pb.topk;
      if (p.topk_length.defined())
        count = std::clamp<int64_t>(
            p.topk_length.ptr<const int32_t>()[i * p.topk_length.stride[0]], 0, count);
      const int32_t* row = idx.ptr<const int32_t>() + i * idx.stride[0] + g * idx.stride[1];
      for (int64_t j = 0; j < count; ++j) {
        const int64_t t = row[j];
        if (t < 0 || t >= pb.s_kv) continue;
        const uint16_t* src = kv.ptr<const uint16_t>() + t * kv.stride[0] + g * kv.stride[1];
        float* dst = attn.next_key();
        for (int x = 0; x < pb.d_qk; ++x) dst[x] = fp8::bf16_to_float(src[x]);
      }
      attn.flush();

      for (int h = 0; h < n_heads; ++h) {
        const int64_t head = h0 + h;
        const float* sink =
            p.attn_sink.defined() ? p.attn_sink.ptr<const float>() + head * p.attn_sink.stride[0]
                                  : nullptr;
        attn.write_output(h, sink, out.ptr<uint16_t>() + i * out.stride[0] + head * out.stride[1]);
        p.max_logits.ptr<float>()[i * p.max_logits.stride[0] + head * p.max_logits.stride[1]] =
            attn.max_logit(h);
        p.lse.ptr<float>()[i * p.lse.stride[0] + head * p.lse.stride[1]] = attn.lse(h);
      }
    }
  }
}

}  // namespace flashmla::cpu
