// CPU MHA prefill backward over variable-length sequences (flash_attn's varlen backward; the
// formulas are in params.h, MhaVarlenBwdParams).
//
// Two passes, each free of races and deterministic (no atomics; every sum in a fixed order):
//   1. dq: work items (sequence, kv head, block of <= kRows query rows), as in the forward.
//      Per key tile the block may see: S^T = K Q^T, dP^T = V dO^T, dS = P (dP - delta),
//      dQ += dS K.
//   2. dk, dv: work items (sequence, kv head, tile of <= kKeyTile keys). Per block of query rows
//      that may see the tile: S^T and dP^T as above, dV += P^T dO, dK += dS^T Q.
// P = exp(S - lse) comes from the forward's lse in both passes and is never stored; delta =
// dout . out - dlse is computed once per query row. Rows are numbered as in the forward: row
// i * group + g of a kv head is query i, head kv_head * group + g.
#include <algorithm>
#include <vector>

#include "cpu/attn_tile.h"
#include "cpu/cpu_backend.h"
#include "cpu/cpu_math.h"

namespace flashmla::cpu {
namespace {

constexpr int kRows = 64;  // query rows per block

int64_t cu(const TensorView& t, int64_t r) { return t.ptr<int32_t>()[r * t.stride[0]]; }

// Row (token t, head h) of a [tokens, heads, d] 16-bit tensor.
uint16_t* row(const TensorView& x, int64_t t, int h) {
  return x.ptr<uint16_t>() + t * x.stride[0] + h * x.stride[1];
}
// Element (h, t) of an lse-like [h_q, total_q] float32 tensor (any strides).
float lse_like(const TensorView& x, int h, int64_t t) {
  return x.ptr<float>()[h * x.stride[0] + t * x.stride[1]];
}

struct Seq {
  int64_t q0, s_q, k0, s_k;
  Seq(const MhaVarlenBwdParams& p, int64_t s)
      : q0(cu(p.cu_seqlens_q, s)), s_q(cu(p.cu_seqlens_q, s + 1) - q0),
        k0(cu(p.cu_seqlens_k, s)), s_k(cu(p.cu_seqlens_k, s + 1) - k0) {}
  // Query i sees keys [0, limit): bottom-right causal, as in the forward.
  int64_t key_limit(int64_t i, bool causal) const {
    return causal ? std::clamp<int64_t>(i + s_k - s_q + 1, 0, s_k) : s_k;
  }
};

struct Item {
  int64_t seq;
  int kvh;
  int64_t first, count;  // pass 1: rows [first, first + count); pass 2: keys likewise
};

// One thread's scratch: a block of query rows in both layouts, a key tile, the tile products
// and the accumulators.
class Scratch {
 public:
  Scratch(int d_qk, int d_v)
      : d_qk_(d_qk), d_v_(d_v), qt(d_qk * kRows), dot(d_v * kRows), q(kRows * d_qk),
        dout(kRows * d_v), k(kKeyTile * d_qk), v(kKeyTile * d_v), st(kKeyTile * kRows),
        dpt(kKeyTile * kRows), ds(kRows * kKeyTile), acc_k(std::max(kRows, kKeyTile) * d_qk),
        acc_v(kKeyTile * d_v), ones(std::max(kRows, kKeyTile), 1.0f), lse(kRows), delta(kRows),
        limit(kRows) {}

  // Loads rows [first, first + rows) of (seq, kvh): Q^T (scaled by the softmax scale) and dO^T
  // with padded columns zeroed, optionally Q and dO row-major too, and each row's lse, delta
  // and key limit (0 for rows that attended nothing). Returns the largest key limit.
  int64_t load_rows(const MhaVarlenBwdParams& p, const MhaVarlenProblem& pb, const Seq& s,
                    int kvh, int64_t first, int rows, const std::vector<float>& lse_all,
                    const std::vector<float>& delta_all, bool row_major) {
    const int group = pb.h_q / pb.h_kv;
    rows_ = rows;
    ld_ = static_cast<int>(round_up(rows, kNR));
    std::fill(qt.begin(), qt.begin() + d_qk_ * ld_, 0.0f);
    std::fill(dot.begin(), dot.begin() + d_v_ * ld_, 0.0f);
    int64_t max_limit = 0;
    for (int r = 0; r < rows; ++r) {
      const int64_t i = (first + r) / group;
      const int h = kvh * group + static_cast<int>((first + r) % group);
      const int64_t t = s.q0 + i;
      float* qr = q.data() + (row_major ? r * d_qk_ : 0);
      float* dr = dout.data() + (row_major ? r * d_v_ : 0);
      load_row(row(p.q, t, h), pb.is_fp16, d_qk_, pb.scale, qr);
      load_row(row(p.dout, t, h), pb.is_fp16, d_v_, 1.0f, dr);
      for (int d = 0; d < d_qk_; ++d) qt[d * ld_ + r] = qr[d];
      for (int d = 0; d < d_v_; ++d) dot[d * ld_ + r] = dr[d];
      lse[r] = lse_all[t * pb.h_q + h];
      delta[r] = delta_all[t * pb.h_q + h];
      limit[r] = lse[r] == kInf ? 0 : s.key_limit(i, p.causal);
      max_limit = std::max(max_limit, limit[r]);
    }
    return max_limit;
  }

  // Loads keys [first, first + n) of (seq, kvh) into k and v.
  void load_keys(const MhaVarlenBwdParams& p, const MhaVarlenProblem& pb, const Seq& s, int kvh,
                 int64_t first, int n) {
    for (int j = 0; j < n; ++j) {
      load_row(row(p.k, s.k0 + first + j, kvh), pb.is_fp16, d_qk_, 1.0f, k.data() + j * d_qk_);
      load_row(row(p.v, s.k0 + first + j, kvh), pb.is_fp16, d_v_, 1.0f, v.data() + j * d_v_);
    }
  }

  // For the loaded rows and keys key0 + [0, n): st <- P^T and dpt <- dS^T, [n, ld] each, zero
  // where a row may not see a key.
  void probabilities_and_ds(int64_t key0, int n) {
    gemm(n, ld_, d_qk_, k.data(), d_qk_, qt.data(), ld_, st.data(), ld_, nullptr);
    gemm(n, ld_, d_v_, v.data(), d_v_, dot.data(), ld_, dpt.data(), ld_, nullptr);
    for (int j = 0; j < n; ++j) {
      float* s_row = st.data() + j * ld_;
      float* dp_row = dpt.data() + j * ld_;
      for (int r = 0; r < rows_; ++r) {
        const bool seen = key0 + j < limit[r];
        const float pr = seen ? exp_nonpositive(s_row[r] - lse[r]) : 0.0f;
        s_row[r] = pr;
        dp_row[r] = seen ? pr * (dp_row[r] - delta[r]) : 0.0f;
      }
    }
  }

  int rows() const { return rows_; }
  int ld() const { return ld_; }

  const int d_qk_, d_v_;
  std::vector<float> qt;     // [d_qk, ld] Q^T, scaled
  std::vector<float> dot;    // [d_v, ld] dO^T
  std::vector<float> q;      // [rows, d_qk] Q, scaled (pass 2)
  std::vector<float> dout;   // [rows, d_v] dO (pass 2)
  std::vector<float> k, v;   // [n, d_qk], [n, d_v] the key tile
  std::vector<float> st;     // [n, ld] S^T, then P^T
  std::vector<float> dpt;    // [n, ld] dP^T, then dS^T
  std::vector<float> ds;     // [rows, kKeyTile] dS (pass 1)
  std::vector<float> acc_k;  // pass 1: dQ [rows, d_qk]; pass 2: dK [n, d_qk]
  std::vector<float> acc_v;  // pass 2: dV [n, d_v]
  std::vector<float> ones;   // gemm's row scale for accumulating
  std::vector<float> lse, delta;
  std::vector<int64_t> limit;

 private:
  int rows_ = 0, ld_ = 0;
};

void dq_block(const MhaVarlenBwdParams& p, const MhaVarlenProblem& pb, const Item& it,
              const std::vector<float>& lse, const std::vector<float>& delta, Scratch& w) {
  const Seq s(p, it.seq);
  const int rows = static_cast<int>(it.count);
  const int64_t end = w.load_rows(p, pb, s, it.kvh, it.first, rows, lse, delta, false);
  std::fill(w.acc_k.begin(), w.acc_k.begin() + rows * pb.d_qk, 0.0f);
  for (int64_t t0 = 0; t0 < end; t0 += kKeyTile) {
    const int n = static_cast<int>(std::min<int64_t>(kKeyTile, end - t0));
    w.load_keys(p, pb, s, it.kvh, t0, n);
    w.probabilities_and_ds(t0, n);
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < n; ++j) w.ds[r * kKeyTile + j] = w.dpt[j * w.ld() + r];
    gemm(rows, pb.d_qk, n, w.ds.data(), kKeyTile, w.k.data(), pb.d_qk, w.acc_k.data(), pb.d_qk,
         w.ones.data());
  }
  const int group = pb.h_q / pb.h_kv;
  for (int r = 0; r < rows; ++r) {
    float* acc = w.acc_k.data() + r * pb.d_qk;
    for (int d = 0; d < pb.d_qk; ++d) acc[d] *= pb.scale;
    const int64_t i = (it.first + r) / group;
    const int h = it.kvh * group + static_cast<int>((it.first + r) % group);
    store_row(acc, pb.d_qk, pb.is_fp16, row(p.dq, s.q0 + i, h));
  }
}

void dkv_tile(const MhaVarlenBwdParams& p, const MhaVarlenProblem& pb, const Item& it,
              const std::vector<float>& lse, const std::vector<float>& delta, Scratch& w) {
  const Seq s(p, it.seq);
  const int n = static_cast<int>(it.count);
  const int group = pb.h_q / pb.h_kv;
  w.load_keys(p, pb, s, it.kvh, it.first, n);
  std::fill(w.acc_k.begin(), w.acc_k.begin() + n * pb.d_qk, 0.0f);
  std::fill(w.acc_v.begin(), w.acc_v.begin() + n * pb.d_v, 0.0f);
  // Under the causal mask, query i sees key `first` only from i = first - (s_k - s_q) on.
  const int64_t i0 = p.causal ? std::clamp<int64_t>(it.first - (s.s_k - s.s_q), 0, s.s_q) : 0;
  const int64_t row_end = s.s_q * group;
  for (int64_t r0 = i0 * group; r0 < row_end; r0 += kRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, row_end - r0));
    w.load_rows(p, pb, s, it.kvh, r0, rows, lse, delta, true);
    w.probabilities_and_ds(it.first, n);
    gemm(n, pb.d_v, rows, w.st.data(), w.ld(), w.dout.data(), pb.d_v, w.acc_v.data(), pb.d_v,
         w.ones.data());
    gemm(n, pb.d_qk, rows, w.dpt.data(), w.ld(), w.q.data(), pb.d_qk, w.acc_k.data(), pb.d_qk,
         w.ones.data());
  }
  for (int j = 0; j < n; ++j) {
    const int64_t t = s.k0 + it.first + j;
    store_row(w.acc_k.data() + j * pb.d_qk, pb.d_qk, pb.is_fp16, row(p.dk, t, it.kvh));
    store_row(w.acc_v.data() + j * pb.d_v, pb.d_v, pb.is_fp16, row(p.dv, t, it.kvh));
  }
}

// Work items of both passes: even row blocks of each (sequence, kv head), and key tiles.
void make_items(const MhaVarlenBwdParams& p, const MhaVarlenProblem& pb, std::vector<Item>& dq,
                std::vector<Item>& dkv) {
  const int group = pb.h_q / pb.h_kv;
  for (int64_t seq = 0; seq < pb.b; ++seq) {
    const Seq s(p, seq);
    const int64_t rows = s.s_q * group;
    const int64_t blocks = (rows + kRows - 1) / kRows;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t first = blk * rows / blocks;
      for (int kvh = 0; kvh < pb.h_kv; ++kvh)
        dq.push_back(Item{seq, kvh, first, (blk + 1) * rows / blocks - first});
    }
    for (int64_t k0 = 0; k0 < s.s_k; k0 += kKeyTile)
      for (int kvh = 0; kvh < pb.h_kv; ++kvh)
        dkv.push_back(Item{seq, kvh, k0, std::min<int64_t>(kKeyTile, s.s_k - k0)});
  }
}

}  // namespace

void mha_varlen_bwd(const MhaVarlenBwdParams& p, const MhaVarlenProblem& pb) {
  std::vector<Item> dq_items, dkv_items;
  make_items(p, pb, dq_items, dkv_items);
  const int64_t q_end = cu(p.cu_seqlens_q, pb.b), k_end = cu(p.cu_seqlens_k, pb.b);
  // lse and delta of every row of some sequence, [t * h_q + h].
  std::vector<float> lse(q_end * pb.h_q), delta(q_end * pb.h_q);

#pragma omp parallel
  {
    std::vector<float> a(pb.d_v), b(pb.d_v);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < q_end; ++t) {
      for (int h = 0; h < pb.h_q; ++h) {
        load_row(row(p.dout, t, h), pb.is_fp16, pb.d_v, 1.0f, a.data());
        load_row(row(p.out, t, h), pb.is_fp16, pb.d_v, 1.0f, b.data());
        float dot = 0.0f;
        for (int d = 0; d < pb.d_v; ++d) dot += a[d] * b[d];
        lse[t * pb.h_q + h] = lse_like(p.lse, h, t);
        delta[t * pb.h_q + h] = dot - (p.dlse.defined() ? lse_like(p.dlse, h, t) : 0.0f);
      }
    }  // implicit barrier: both passes read lse and delta

    Scratch w(pb.d_qk, pb.d_v);
#pragma omp for schedule(dynamic) nowait
    for (size_t i = 0; i < dq_items.size(); ++i) dq_block(p, pb, dq_items[i], lse, delta, w);
#pragma omp for schedule(dynamic) nowait
    for (size_t i = 0; i < dkv_items.size(); ++i) dkv_tile(p, pb, dkv_items[i], lse, delta, w);

    // Rows outside every sequence get zero gradients.
    const std::vector<float> zeros(pb.d_qk, 0.0f);
#pragma omp for nowait
    for (int64_t t = q_end; t < pb.total_q; ++t)
      for (int h = 0; h < pb.h_q; ++h) store_row(zeros.data(), pb.d_qk, pb.is_fp16, row(p.dq, t, h));
#pragma omp for
    for (int64_t t = k_end; t < pb.total_k; ++t)
      for (int h = 0; h < pb.h_kv; ++h) {
        store_row(zeros.data(), pb.d_qk, pb.is_fp16, row(p.dk, t, h));
        store_row(zeros.data(), pb.d_v, pb.is_fp16, row(p.dv, t, h));
      }
  }
}

}  // namespace flashmla::cpu
