// The CPU attention engine shared by dense decode and MHA prefill: a block of query rows (all
// using one KV head) attends to key tiles of up to kKeyTile tokens with online softmax, float32
// throughout.
//
// Per tile, two small GEMMs with a register-blocked micro-kernel whose inner loop runs over
// kNR contiguous floats held in vector registers:
//   S^T[n, rows] = K[n, d_qk] . Q^T[d_qk, rows]     (Q^T is built once per block, pre-scaled)
//   O[rows, d_v] = alpha * O + P[rows, n] . V[n, d_v]
// Computing S^T instead of S keeps K row-major, so a K tile is converted once, with no
// transpose, and feeds both products (in MLA, V is a prefix of K).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/cpu_math.h"

namespace flashmla::cpu {

inline constexpr int kKeyTile = 64;  // keys per tile, the split-KV schedule's tile

// One SIMD register of floats: AVX (8) when the build targets it, else SSE / NEON (4). GCC and
// Clang vector extensions keep the accumulator block in registers; plain loops did not (GCC 12
// spilled it to the stack: 8x slower).
#if defined(__AVX__)
inline constexpr int kVec = 8;
#else
inline constexpr int kVec = 4;
#endif
typedef float vecf __attribute__((vector_size(kVec * sizeof(float))));

// Micro-kernel tile: kMR x 2 vector accumulators + 2 B vectors + 1 broadcast = 15 of the 16
// registers of AVX2 / SSE.
inline constexpr int kNR = 2 * kVec;  // columns
inline constexpr int kMR = 6;         // rows
static_assert(kMR == 6, "gemm() handles leftover rows with kernels of 1..5 rows");

inline vecf load_vec(const float* p) {
  vecf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store_vec(float* p, vecf v) { std::memcpy(p, &v, sizeof v); }

// C[MR, kNR] = (cscale ? diag(cscale) C : 0) + A[MR, k] . B[k, kNR]
template <int MR>
inline void micro_kernel(int k, const float* a, int64_t lda, const float* b, int64_t ldb,
                         float* c, int64_t ldc, const float* cscale) {
  constexpr int NV = kNR / kVec;
  vecf acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v)
      acc[i][v] = cscale ? cscale[i] * load_vec(c + i * ldc + v * kVec) : vecf{};
  for (int p = 0; p < k; ++p) {
    vecf bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load_vec(b + p * ldb + v * kVec);
    for (int i = 0; i < MR; ++i) {
      const float av = a[i * lda + p];
      for (int v = 0; v < NV; ++v) acc[i][v] += av * bv[v];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) store_vec(c + i * ldc + v * kVec, acc[i][v]);
}

// C[m, n] = (cscale ? diag(cscale) C : 0) + A[m, k] . B[k, n]; n a multiple of kNR.
inline void gemm(int m, int n, int k, const float* a, int64_t lda, const float* b, int64_t ldb,
                 float* c, int64_t ldc, const float* cscale) {
  for (int j0 = 0; j0 < n; j0 += kNR) {
    int i0 = 0;
    for (; i0 + kMR <= m; i0 += kMR)
      micro_kernel<kMR>(k, a + i0 * lda, lda, b + j0, ldb, c + i0 * ldc + j0, ldc,
                        cscale ? cscale + i0 : nullptr);
    // Leftover rows get one kernel of their own height: a 1-row kernel is load-bound.
    const float* a_rest = a + i0 * lda;
    float* c_rest = c + i0 * ldc + j0;
    const float* s_rest = cscale ? cscale + i0 : nullptr;
    switch (m - i0) {
      case 5: micro_kernel<5>(k, a_rest, lda, b + j0, ldb, c_rest, ldc, s_rest); break;
      case 4: micro_kernel<4>(k, a_rest, lda, b + j0, ldb, c_rest, ldc, s_rest); break;
      case 3: micro_kernel<3>(k, a_rest, lda, b + j0, ldb, c_rest, ldc, s_rest); break;
      case 2: micro_kernel<2>(k, a_rest, lda, b + j0, ldb, c_rest, ldc, s_rest); break;
      case 1: micro_kernel<1>(k, a_rest, lda, b + j0, ldb, c_rest, ldc, s_rest); break;
      default: break;
    }
  }
}

// One thread's scratch and state for a block of up to max_rows query rows.
class RowBlockAttention {
 public:
  // separate_v: V comes from its own tensor (MHA); otherwise V = K[:, :d_v] (MLA).
  RowBlockAttention(int max_rows, int d_qk, int d_v, bool separate_v)
      : d_qk_(d_qk), d_v_(d_v), ld_r_(round_up(max_rows, kNR)), ld_v_(round_up(d_v, kNR)),
        ld_k_(separate_v ? d_qk : std::max<int64_t>(d_qk, ld_v_)), separate_v_(separate_v),
        qt_(d_qk * ld_r_), st_(kKeyTile * ld_r_), p_(max_rows * kKeyTile),
        o_(max_rows * ld_v_), k_(kKeyTile * ld_k_, 0.0f),
        v_(separate_v ? kKeyTile * ld_v_ : 0, 0.0f), alpha_(max_rows), state_(max_rows),
        limit_(max_rows), q_row_(d_qk) {}

  // Starts a block of `rows` rows: empty softmax state, O = 0, padded Q^T columns = 0.
  void begin(int rows) {
    rows_ = rows;
    std::fill(state_.begin(), state_.begin() + rows, SoftmaxState{});
    std::fill(o_.begin(), o_.begin() + rows * ld_v_, 0.0f);
    ld_q_ = round_up(rows, kNR);
    std::fill(qt_.begin(), qt_.begin() + d_qk_ * ld_q_, 0.0f);
  }

  // Row r's query (scaled by the softmax scale) and the keys it may see: positions < limit.
  void set_query(int r, const uint16_t* q, bool is_fp16, float scale, int64_t limit) {
    load_row(q, is_fp16, d_qk_, scale, q_row_.data());
    for (int d = 0; d < d_qk_; ++d) qt_[d * ld_q_ + r] = q_row_[d];
    limit_[r] = limit;
  }

  // Destinations for the float32 rows of the next tile: key j (0 <= j < kKeyTile).
  float* k_row(int j) { return k_.data() + j * ld_k_; }
  float* v_row(int j) { return v_.data() + j * ld_v_; }  // only when separate_v

  // Attends every row to keys [t0, t0 + n) whose rows were written with k_row / v_row.
  void attend(int64_t t0, int n) {
    const float* v = separate_v_ ? v_.data() : k_.data();
    const int64_t ld_v = separate_v_ ? ld_v_ : ld_k_;
    gemm(n, static_cast<int>(ld_q_), d_qk_, k_.data(), ld_k_, qt_.data(), ld_q_, st_.data(),
         ld_q_, nullptr);
    for (int r = 0; r < rows_; ++r) {
      float* p = p_.data() + r * kKeyTile;
      const int seen = static_cast<int>(std::clamp<int64_t>(limit_[r] - t0, 0, n));
      for (int j = 0; j < seen; ++j) p[j] = st_[j * ld_q_ + r];
      std::fill(p + seen, p + n, 0.0f);
      alpha_[r] = seen > 0 ? state_[r].update(p, seen) : 1.0f;
    }
    gemm(rows_, static_cast<int>(ld_v_), n, p_.data(), kKeyTile, v, ld_v, o_.data(), ld_v_,
         alpha_.data());
  }

  // After the last tile: row r's normalised output (d_v floats; zeros if nothing attended).
  const float* normalized_out(int r) {
    float* o = o_.data() + r * ld_v_;
    const float inv = state_[r].inv_l();
    for (int d = 0; d < d_v_; ++d) o[d] *= inv;
    return o;
  }
  const SoftmaxState& state(int r) const { return state_[r]; }

  // The largest key limit of the block (0 if none): tiles at or past it can be skipped.
  int64_t max_limit() const {
    int64_t mx = 0;
    for (int r = 0; r < rows_; ++r) mx = std::max(mx, limit_[r]);
    return mx;
  }

 private:
  int d_qk_, d_v_;
  int64_t ld_r_, ld_v_, ld_k_;
  bool separate_v_;
  int rows_ = 0;
  int64_t ld_q_ = 0;
  std::vector<float> qt_;     // [d_qk, ld_q] Q^T, scaled; padded columns zero
  std::vector<float> st_;     // [kKeyTile, ld_q] S^T of the current tile
  std::vector<float> p_;      // [rows, kKeyTile] probabilities of the current tile
  std::vector<float> o_;      // [rows, ld_v] unnormalised output
  std::vector<float> k_;      // [kKeyTile, ld_k] K tile (V = its first d_v columns unless separate)
  std::vector<float> v_;      // [kKeyTile, ld_v] V tile when separate
  std::vector<float> alpha_;  // [rows] rescale of O for the current tile
  std::vector<SoftmaxState> state_;
  std::vector<int64_t> limit_;
  std::vector<float> q_row_;  // [d_qk] staging for set_query
};

}  // namespace flashmla::cpu
