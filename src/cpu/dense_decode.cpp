// CPU dense decode over a paged KV cache (SPEC.md §2), running the same split-KV schedule as
// the GPU kernels: every chunk of the schedule attends to its key tiles and writes either the
// final output (request not split) or a float32 partial slot; a combine pass then merges the
// slots of split requests by their lse.
//
// Work items are (chunk, kv head, row block): the rows of a kv head are its s_q * h_q / h_kv
// queries (row = i * group + head within group), cut into blocks of at most kMaxRows so that
// one block's scratch stays in a core's L2 and a single long request still feeds every core.
//
// Workspace (float32): o_partial [2 * num_parts][s_q * h_q][d_v], then
// lse_partial [2 * num_parts][s_q * h_q]; partial row = i * h_q + h. An empty partial has
// o = 0 and lse = -inf so that it drops out of the merge.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/decode_schedule.h"
#include "cpu/attn_tile.h"
#include "cpu/cpu_backend.h"
#include "cpu/cpu_math.h"

namespace flashmla::cpu {
namespace {

constexpr int kMaxRows = 64;  // rows per block: Q^T, O and a K tile ~ 430 KB at d_qk = 576, in L2

struct Partials {
  float* o;    // [slots, rows, d_v]
  float* lse;  // [slots, rows]
};

Partials partials(const DenseDecodeParams& p, const DenseDecodeProblem& pb) {
  float* base = p.workspace.ptr<float>();
  const int64_t rows = int64_t{pb.s_q} * pb.h_q;
  return {base, base + sched::max_slots(p.plan.num_parts) * rows * pb.d_v};
}

int64_t seqlen(const DenseDecodeParams& p, const DenseDecodeProblem& pb, int64_t r) {
  const int64_t len = p.cache_seqlens.ptr<int32_t>()[r * p.cache_seqlens.stride[0]];
  return std::clamp<int64_t>(len, 0, pb.max_blocks_per_seq * pb.page_block_size);
}

// Loads the K rows of tokens [t0, t0 + n) of request r, kv head kvh, into the engine.
void load_k_tile(const DenseDecodeParams& p, const DenseDecodeProblem& pb, int64_t r, int kvh,
                 int64_t t0, int n, RowBlockAttention& eng) {
  const TensorView& kc = p.k_cache;
  const TensorView& bt = p.block_table;
  const int32_t* table = bt.ptr<int32_t>() + r * bt.stride[0];
  const uint16_t* base = kc.ptr<uint16_t>() + kvh * kc.stride[2];
  for (int j = 0; j < n; ++j) {
    const int64_t t = t0 + j;
    const int64_t block = table[(t / pb.page_block_size) * bt.stride[1]];
    const uint16_t* row = base + block * kc.stride[0] + (t % pb.page_block_size) * kc.stride[1];
    load_row(row, pb.is_fp16, pb.d_qk, 1.0f, eng.k_row(j));
  }
}

// One work item: rows [row0, row0 + rows) of kv head kvh of the chunk's request.
void run_block(const DenseDecodeParams& p, const DenseDecodeProblem& pb, const sched::Chunk& c,
               int kvh, int row0, int rows, Partials part, RowBlockAttention& eng) {
  const int group = pb.h_q / pb.h_kv;
  const int64_t r = c.req;
  const int64_t s_k = seqlen(p, pb, r);
  const TensorView& q = p.q;

  eng.begin(rows);
  for (int k = 0; k < rows; ++k) {
    const int i = (row0 + k) / group;
    const int h = kvh * group + (row0 + k) % group;
    const int64_t limit = p.causal ? s_k - pb.s_q + i + 1 : s_k;
    eng.set_query(k, q.ptr<uint16_t>() + r * q.stride[0] + i * q.stride[1] + h * q.stride[2],
                  pb.is_fp16, pb.scale, limit);
  }
  const int64_t end = std::min<int64_t>(int64_t{c.tile_end} * kKeyTile, eng.max_limit());
  for (int64_t t0 = int64_t{c.tile_begin} * kKeyTile; t0 < end; t0 += kKeyTile) {
    const int n = static_cast<int>(std::min<int64_t>(kKeyTile, end - t0));
    load_k_tile(p, pb, r, kvh, t0, n, eng);
    eng.attend(t0, n);
  }

  for (int k = 0; k < rows; ++k) {
    const int i = (row0 + k) / group;
    const int h = kvh * group + (row0 + k) % group;
    const float* o = eng.normalized_out(k);
    if (c.slot < 0) {
      const TensorView& out = p.out;
      store_row(o, pb.d_v, pb.is_fp16,
                out.ptr<uint16_t>() + r * out.stride[0] + i * out.stride[1] + h * out.stride[2]);
      p.lse.ptr<float>()[r * p.lse.stride[0] + h * p.lse.stride[1] + i * p.lse.stride[2]] =
          eng.state(k).lse(kInf);
    } else {
      const int64_t row = (int64_t{c.slot} * pb.s_q + i) * pb.h_q + h;
      std::copy(o, o + pb.d_v, part.o + row * pb.d_v);
      part.lse[row] = eng.state(k).lse(-kInf);
    }
  }
}

// Merges the partial slots of one split request's row: weights exp(lse_s - lse).
void combine_row(const DenseDecodeParams& p, const DenseDecodeProblem& pb, int64_t r, int i,
                 int h, int first_slot, int num_splits, Partials part, float* acc) {
  const int64_t rows = int64_t{pb.s_q} * pb.h_q;
  const int64_t row = int64_t{i} * pb.h_q + h;
  float mx = -kInf;
  for (int s = 0; s < num_splits; ++s) mx = std::fmax(mx, part.lse[(first_slot + s) * rows + row]);
  std::fill(acc, acc + pb.d_v, 0.0f);
  float lse = kInf;
  if (mx > -kInf) {
    float sum = 0.0f;
    for (int s = 0; s < num_splits; ++s) sum += std::exp(part.lse[(first_slot + s) * rows + row] - mx);
    for (int s = 0; s < num_splits; ++s) {
      const int64_t slot_row = (first_slot + s) * rows + row;
      const float w = std::exp(part.lse[slot_row] - mx) / sum;
      const float* o = part.o + slot_row * pb.d_v;
      for (int d = 0; d < pb.d_v; ++d) acc[d] += w * o[d];
    }
    lse = mx + std::log(sum);
  }
  const TensorView& out = p.out;
  store_row(acc, pb.d_v, pb.is_fp16,
            out.ptr<uint16_t>() + r * out.stride[0] + i * out.stride[1] + h * out.stride[2]);
  p.lse.ptr<float>()[r * p.lse.stride[0] + h * p.lse.stride[1] + i * p.lse.stride[2]] = lse;
}

}  // namespace

void dense_decode_plan(const DensePlanParams& p, int64_t max_len) {
  sched::build(p.cache_seqlens.ptr<int32_t>(), p.plan.b, p.plan.num_parts, max_len,
               sched::View{p.sched_meta.ptr<int32_t>(), p.plan.b, p.plan.num_parts});
}

void dense_decode(const DenseDecodeParams& p, const DenseDecodeProblem& pb) {
  const sched::View view{p.sched_meta.ptr<int32_t>(), pb.b, p.plan.num_parts};
  const sched::Chunk* chunks = view.chunks();
  const int rows = pb.s_q * (pb.h_q / pb.h_kv);
  const int row_blocks = (rows + kMaxRows - 1) / kMaxRows;
  const int block_rows = (rows + row_blocks - 1) / row_blocks;  // the largest block
  const int64_t items = int64_t{view.num_chunks()} * pb.h_kv * row_blocks;
  const Partials part = partials(p, pb);

#pragma omp parallel
  {
    RowBlockAttention eng(block_rows, pb.d_qk, pb.d_v, /*separate_v=*/false);
#pragma omp for schedule(dynamic)
    for (int64_t w = 0; w < items; ++w) {
      const int rb = static_cast<int>(w % row_blocks);
      const int kvh = static_cast<int>(w / row_blocks % pb.h_kv);
      const int64_t c = w / row_blocks / pb.h_kv;
      const int row0 = rb * rows / row_blocks;  // even blocks: 126 rows -> 63 + 63
      run_block(p, pb, chunks[c], kvh, row0, (rb + 1) * rows / row_blocks - row0, part, eng);
    }

    // Combine: only requests cut into several chunks have partials to merge.
    std::vector<float> acc(pb.d_v);
    const int32_t* num_splits = view.num_splits();
    const int32_t* first_slot = view.first_slot();
#pragma omp for schedule(dynamic, 16)
    for (int64_t w = 0; w < pb.b * pb.s_q * pb.h_q; ++w) {
      const int64_t r = w / (int64_t{pb.s_q} * pb.h_q);
      if (num_splits[r] <= 1) continue;
      const int i = static_cast<int>(w / pb.h_q % pb.s_q);
      const int h = static_cast<int>(w % pb.h_q);
      combine_row(p, pb, r, i, h, first_slot[r], num_splits[r], part, acc.data());
    }
  }
}

}  // namespace flashmla::cpu
