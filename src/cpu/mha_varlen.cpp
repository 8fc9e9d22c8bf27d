// CPU MHA prefill forward over variable-length sequences (flash_attn_varlen_func, SPEC.md §6).
//
// Work items are (sequence, kv head, row block): the rows of a kv head are its s_q * h_q / h_kv
// queries (row = i * group + head within group), cut into blocks of at most kMaxRows. Each block
// walks the key tiles up to the largest causal limit of its rows with the shared engine.
// Query rows past cu_seqlens_q[b] belong to no sequence: they get out = 0 and lse = +inf, so
// every output element is written.
#include <algorithm>
#include <vector>

#include "cpu/attn_tile.h"
#include "cpu/cpu_backend.h"
#include "cpu/cpu_math.h"

namespace flashmla::cpu {
namespace {

constexpr int kMaxRows = 64;  // rows per block: enough rows to amortise converting each K/V tile

struct Item {
  int64_t seq;
  int kvh, row0, rows;
};

int64_t cu(const TensorView& t, int64_t r) { return t.ptr<int32_t>()[r * t.stride[0]]; }

uint16_t* out_row(const MhaVarlenFwdParams& p, int64_t t, int h) {
  return p.out.ptr<uint16_t>() + t * p.out.stride[0] + h * p.out.stride[1];
}
float& lse_at(const MhaVarlenFwdParams& p, int64_t t, int h) {
  return p.lse.ptr<float>()[h * p.lse.stride[0] + t * p.lse.stride[1]];
}

void run_block(const MhaVarlenFwdParams& p, const MhaVarlenProblem& pb, const Item& it,
               RowBlockAttention& eng) {
  const int group = pb.h_q / pb.h_kv;
  const int64_t q0 = cu(p.cu_seqlens_q, it.seq), k0 = cu(p.cu_seqlens_k, it.seq);
  const int64_t s_q = cu(p.cu_seqlens_q, it.seq + 1) - q0;
  const int64_t s_k = cu(p.cu_seqlens_k, it.seq + 1) - k0;
  const TensorView &q = p.q, &k = p.k, &v = p.v;

  eng.begin(it.rows);
  for (int r = 0; r < it.rows; ++r) {
    const int64_t i = (it.row0 + r) / group;
    const int h = it.kvh * group + (it.row0 + r) % group;
    const int64_t limit = p.causal ? std::min(s_k, i + s_k - s_q + 1) : s_k;
    eng.set_query(r, q.ptr<uint16_t>() + (q0 + i) * q.stride[0] + h * q.stride[1], pb.is_fp16,
                  pb.scale, limit);
  }
  const int64_t end = eng.max_limit();
  for (int64_t t0 = 0; t0 < end; t0 += kKeyTile) {
    const int n = static_cast<int>(std::min<int64_t>(kKeyTile, end - t0));
    for (int j = 0; j < n; ++j) {
      const int64_t t = k0 + t0 + j;
      load_row(k.ptr<uint16_t>() + t * k.stride[0] + it.kvh * k.stride[1], pb.is_fp16, pb.d_qk,
               1.0f, eng.k_row(j));
      load_row(v.ptr<uint16_t>() + t * v.stride[0] + it.kvh * v.stride[1], pb.is_fp16, pb.d_v,
               1.0f, eng.v_row(j));
    }
    eng.attend(t0, n);
  }

  for (int r = 0; r < it.rows; ++r) {
    const int64_t i = (it.row0 + r) / group;
    const int h = it.kvh * group + (it.row0 + r) % group;
    store_row(eng.normalized_out(r), pb.d_v, pb.is_fp16, out_row(p, q0 + i, h));
    lse_at(p, q0 + i, h) = eng.state(r).lse(kInf);
  }
}

}  // namespace

void mha_varlen_fwd(const MhaVarlenFwdParams& p, const MhaVarlenProblem& pb) {
  const int group = pb.h_q / pb.h_kv;
  std::vector<Item> items;
  int max_block_rows = 1;
  for (int64_t s = 0; s < pb.b; ++s) {
    const int64_t rows = (cu(p.cu_seqlens_q, s + 1) - cu(p.cu_seqlens_q, s)) * group;
    const int64_t blocks = (rows + kMaxRows - 1) / kMaxRows;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t row0 = blk * rows / blocks;  // even blocks
      const int n = static_cast<int>((blk + 1) * rows / blocks - row0);
      max_block_rows = std::max(max_block_rows, n);
      for (int kvh = 0; kvh < pb.h_kv; ++kvh)
        items.push_back(Item{s, kvh, static_cast<int>(row0), n});
    }
  }
  const int64_t tail = cu(p.cu_seqlens_q, pb.b);

#pragma omp parallel
  {
    RowBlockAttention eng(max_block_rows, pb.d_qk, pb.d_v, /*separate_v=*/true);
#pragma omp for schedule(dynamic) nowait
    for (size_t w = 0; w < items.size(); ++w) run_block(p, pb, items[w], eng);

    const std::vector<float> zeros(pb.d_v, 0.0f);
#pragma omp for
    for (int64_t t = tail; t < pb.total_q; ++t) {
      for (int h = 0; h < pb.h_q; ++h) {
        store_row(zeros.data(), pb.d_v, pb.is_fp16, out_row(p, t, h));
        lse_at(p, t, h) = kInf;
      }
    }
  }
}

}  // namespace flashmla::cpu
