// Dense MHA prefill forward on sm_90a (flash_attn_varlen_func, SPEC.md §6): the kernel's tile
// shape, shared-memory plan and parameters. The kernel body is kernel.cuh; the host launcher
// mha_prefill.cu.
//
// A CTA owns 128 consecutive rows of one (sequence, kv head): row i * group + g is query token i
// of the sequence with query head kv_head * group + g, so the heads of a GQA group share every
// key tile a CTA loads. Two consumer warpgroups take 64 rows each; key tiles of 128 tokens pass
// through a two-stage cp.async pipeline that both warpgroups fill.
#pragma once

#include <cstdint>

namespace flashmla::cuda::mha {

inline constexpr int kRowsPerWg = 64;   // wgmma M
inline constexpr int kRows = 128;       // query rows per CTA (two warpgroups)
inline constexpr int kKeys = 128;       // keys per tile: S is m64n128 per warpgroup
inline constexpr int kThreads = 256;
inline constexpr int kDimV = 128;
inline constexpr int kAtomDims = 64;    // 64 16-bit values = one 128-byte swizzled row
inline constexpr int kStages = 2;

// Shared memory, every operand in 128-byte swizzled atom columns (64 dims of consecutive rows):
//   Q      [2 warpgroups][d_qk / 64 atoms][64 rows x 128 B]       (K-major A of S = Q K^T)
//   stage  K [d_qk / 64 atoms][128 keys x 128 B]                  (K-major B of S)
//          V [2 atoms][128 keys x 128 B]                          (MN-major B of O += P V)
// d_qk 192: 48 + 2 x 80 = 208 KB; d_qk 128: 32 + 2 x 64 = 160 KB.
template <int kDqk>
struct SmemPlan {
  static_assert(kDqk % kAtomDims == 0, "d_qk must be a multiple of 64");
  static constexpr int kQAtoms = kDqk / kAtomDims;
  static constexpr int kQAtomBytes = kRowsPerWg * 128;
  static constexpr int kQWgBytes = kQAtoms * kQAtomBytes;
  static constexpr int kKeyAtomBytes = kKeys * 128;
  static constexpr int kKBytes = kQAtoms * kKeyAtomBytes;
  static constexpr int kVBytes = (kDimV / kAtomDims) * kKeyAtomBytes;
  static constexpr int kStageBytes = kKBytes + kVBytes;
  static constexpr int kQ = 0;
  static constexpr int kStage0 = 2 * kQWgBytes;
  static constexpr int kBytes = kStage0 + kStages * kStageBytes;
  static constexpr int kLaunchBytes = kBytes + 1024;  // slack to align the base to 1024
  static_assert(kLaunchBytes <= 227 * 1024, "shared memory plan exceeds the sm_90 limit");
};

// Strides in elements; lse is [h_q, total_q] with any strides.
struct Params {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;
  const int32_t* cu_q;
  const int32_t* cu_k;
  int64_t q_stride_tok, q_stride_head;
  int64_t k_stride_tok, k_stride_head;
  int64_t v_stride_tok, v_stride_head;
  int64_t out_stride_tok, out_stride_head;
  int64_t lse_stride_head, lse_stride_tok;
  int64_t total_q, total_k;
  int b, h_kv, group;
  float scale_log2;  // softmax scale * log2(e): logits in the exp2 domain
  int causal;
};

}  // namespace flashmla::cuda::mha
