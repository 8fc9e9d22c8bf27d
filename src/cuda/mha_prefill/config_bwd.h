// Dense MHA prefill backward on sm_90a: the two kernels' tile shapes, shared-memory plans and
// parameters (bodies in kernel_bwd.cuh, launcher mha_prefill_bwd.cu). Deterministic, no atomics:
//   dq kernel:    a CTA owns 128 query rows (as the forward) and walks key tiles of 64:
//                 S = Q K^T, dP = dO V^T, dS = P (dP - delta), dQ += dS K;
//   dk/dv kernel: a CTA owns 128 keys and walks the rows that see them, 32 at a time:
//                 S^T = K Q^T, dP^T = V dO^T, dV += P^T dO, dK += dS^T Q.
// Both recompute P from the forward's lse, and each computes delta = dO . O - dlse for the rows
// it holds (from dO and O), so the operation needs no workspace. Seven products a (row, key)
// pair instead of five, the price of no atomics and no scratch.
#pragma once

#include <cstdint>

#include "cuda/mha_prefill/config.h"

namespace flashmla::cuda::mha {

inline constexpr int kDqKeys = 64;  // keys per tile of the dq kernel (S, dP are m64n64)

// dq kernel: Q and dO per warpgroup ([atoms][64 rows x 128 B], as the forward's Q), then two
// stages of a 64-key tile (K [atoms][64 keys x 128 B], V [2 atoms][64 keys x 128 B]).
// d_qk 192: 48 + 32 + 2 x 40 = 160 KB.
template <int kDqk>
struct DqSmemPlan {
  static constexpr int kQAtoms = kDqk / kAtomDims;
  static constexpr int kRowAtomBytes = kRowsPerWg * 128;  // 64 rows
  static constexpr int kQWgBytes = kQAtoms * kRowAtomBytes;
  static constexpr int kDoWgBytes = (kDimV / kAtomDims) * kRowAtomBytes;
  static constexpr int kKeyAtomBytes = kDqKeys * 128;
  static constexpr int kKBytes = kQAtoms * kKeyAtomBytes;
  static constexpr int kStageBytes = kKBytes + (kDimV / kAtomDims) * kKeyAtomBytes;
  static constexpr int kQ = 0;
  static constexpr int kDo = 2 * kQWgBytes;
  static constexpr int kStage0 = kDo + 2 * kDoWgBytes;
  static constexpr int kBytes = kStage0 + 2 * kStageBytes;
  static constexpr int kLaunchBytes = kBytes + 1024;
  static_assert(kLaunchBytes <= 227 * 1024, "shared memory plan exceeds the sm_90 limit");
};

// dk/dv kernel: K and V of the CTA's 128 keys per warpgroup ([atoms][64 keys x 128 B]), then two
// stages of a 32-row step (Q [atoms][32 rows x 128 B], dO and O [2 atoms][32 rows x 128 B]) and
// the step's per-row statistics. d_qk 192: 48 + 32 + 2 x 28 + 1 = 137 KB.
template <int kDqk>
struct DkvSmemPlan {
  static constexpr int kQAtoms = kDqk / kAtomDims;
  static constexpr int kKeyAtomBytes = kRowsPerWg * 128;  // a warpgroup's 64 keys
  static constexpr int kKWgBytes = kQAtoms * kKeyAtomBytes;
  static constexpr int kVWgBytes = (kDimV / kAtomDims) * kKeyAtomBytes;
  static constexpr int kStepAtomBytes = 32 * 128;  // kStepRows rows
  static constexpr int kQBytes = kQAtoms * kStepAtomBytes;
  static constexpr int kDoBytes = (kDimV / kAtomDims) * kStepAtomBytes;
  static constexpr int kStageBytes = kQBytes + 2 * kDoBytes;  // Q, dO, O
  static constexpr int kK = 0;
  static constexpr int kV = 2 * kKWgBytes;
  static constexpr int kStage0 = kV + 2 * kVWgBytes;
  static constexpr int kStats = kStage0 + 2 * kStageBytes;  // lse2, delta, limit: 32 each
  static constexpr int kBytes = kStats + 3 * 32 * 4;
  static constexpr int kLaunchBytes = kBytes + 1024;
  static_assert(kLaunchBytes <= 227 * 1024, "shared memory plan exceeds the sm_90 limit");
};

// Strides in elements; lse and dlse are [h_q, total_q] with any strides.
struct BwdParams {
  const void* q;
  const void* k;
  const void* v;
  const void* out;
  const void* dout;
  const float* lse;
  const float* dlse;  // null: zero
  const int32_t* cu_q;
  const int32_t* cu_k;
  void* dq;
  void* dk;
  void* dv;
  int64_t q_stride_tok, q_stride_head;
  int64_t k_stride_tok, k_stride_head;
  int64_t v_stride_tok, v_stride_head;
  int64_t out_stride_tok, out_stride_head;
  int64_t dout_stride_tok, dout_stride_head;
  int64_t dq_stride_tok, dq_stride_head;
  int64_t dk_stride_tok, dk_stride_head;
  int64_t dv_stride_tok, dv_stride_head;
  int64_t lse_stride_head, lse_stride_tok;
  int64_t dlse_stride_head, dlse_stride_tok;
  int64_t total_q, total_k;
  int b, h_kv, group;
  float scale;       // softmax scale (dq and dk carry it)
  float scale_log2;  // scale * log2(e)
  int causal;
};

}  // namespace flashmla::cuda::mha
