// Per-operation harness shared by the CPU and GPU suites: for one case of cases.h it builds fresh
// random host inputs (with NaN garbage wherever a kernel must not look), poisoned host outputs,
// the params struct over views of them, the float64 reference, and the checks.
//
// A suite runs a case as
//   Rng rng(fresh_seed());
//   auto in = make_dense_decode_inputs(c, rng);   // host tensors
//   auto out = make_dense_decode_outputs(c);      // NaN-poisoned host tensors
//   DenseDecodeParams p = dense_decode_params(c, in, out, view);
//   ... plan, call flashmla::dense_decode(p), bring `out` back to the host ...
//   EXPECT_TRUE(check_dense_decode(c, dense_decode_reference(c, in), out));
// where `view` maps a host tensor to the TensorView the call should see: the host view itself
// on the CPU, or a device copy's view (same shape and strides) on a GPU.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "cases.h"
#include "flashmla/flashmla.h"
#include "naive_reference.h"
#include "test_util.h"

namespace flashmla::test {

using ViewFn = std::function<TensorView(const HostTensor&)>;
// The CPU mapping: the host tensor's own view.
TensorView host_view(const HostTensor& t);

// ---- tolerances (one place; see the comment in harness.cpp) ----
Tolerance out_tolerance(DType dtype);
Tolerance lse_tolerance();
double out_max_cosine_diff(DType dtype);

// ---- dense decode ----
struct DenseDecodeInputs {
  HostTensor q;              // [b, s_q, h_q, d_qk]
  HostTensor k_cache;        // [num_blocks, page, h_kv, d_qk]; NaN outside the requests' tokens
  HostTensor block_table;    // [b, max_blocks]; garbage past each request's pages
  HostTensor cache_seqlens;  // [b]
  std::vector<int32_t> seqlens;
  std::optional<float> softmax_scale;
};
struct DenseDecodeOutputs {
  HostTensor out;  // [b, s_q, h_q, 512]
  HostTensor lse;  // [b, h_q, s_q]
};
DenseDecodeInputs make_dense_decode_inputs(const DenseDecodeCase& c, Rng& rng);
DenseDecodeOutputs make_dense_decode_outputs(const DenseDecodeCase& c);
// plan, sched_meta and workspace are left for the caller (they depend on the device).
DenseDecodeParams dense_decode_params(const DenseDecodeCase& c, const DenseDecodeInputs& in,
                                      const DenseDecodeOutputs& out, const ViewFn& view);
naive::Attention dense_decode_reference(const DenseDecodeCase& c, const DenseDecodeInputs& in);
::testing::AssertionResult check_dense_decode(const DenseDecodeCase& c, const naive::Attention& ref,
                                              const DenseDecodeOutputs& out);

// A plan made for the device's part count, redone for `num_parts` parts (to force uneven
// splits): schedule size from decode_schedule.h, workspace scaled up with the part count.
DecodePlan with_num_parts(DecodePlan plan, int num_parts);
// Plans and runs the case on the CPU backend (c.num_parts honoured), writing `out`: what the
// CPU tests check, and what a GPU test can compare its device results with.
void run_dense_decode_cpu(const DenseDecodeCase& c, const DenseDecodeInputs& in,
                          const DenseDecodeOutputs& out);

// ---- sparse decode ----
struct SparseScopeInputs {
  HostTensor cache;        // uint8 [num_blocks, page, 1, bytes], block stride padded
  HostTensor indices;      // [b, s_q, topk]
  HostTensor topk_length;  // [b] or absent
};
struct SparseDecodeInputs {
  HostTensor q;  // [b, s_q, h_q, d_qk]
  SparseScopeInputs main;
  std::optional<SparseScopeInputs> extra;
  HostTensor attn_sink;  // [h_q] or absent
  KVCacheLayout layout = KVCacheLayout::kV32;
};
struct SparseDecodeOutputs {
  HostTensor out;  // [b, s_q, h_q, 512]
  HostTensor lse;  // [b, h_q, s_q]
};
SparseDecodeInputs make_sparse_decode_inputs(const SparseDecodeCase& c, Rng& rng);
SparseDecodeOutputs make_sparse_decode_outputs(const SparseDecodeCase& c);
SparseDecodeParams sparse_decode_params(const SparseDecodeCase& c, const SparseDecodeInputs& in,
                                        const SparseDecodeOutputs& out, const ViewFn& view);
naive::Attention sparse_decode_reference(const SparseDecodeCase& c, const SparseDecodeInputs& in);
::testing::AssertionResult check_sparse_decode(const SparseDecodeCase& c,
                                               const naive::Attention& ref,
                                               const SparseDecodeOutputs& out);
void run_sparse_decode_cpu(const SparseDecodeCase& c, const SparseDecodeInputs& in,
                           const SparseDecodeOutputs& out);

// ---- sparse prefill ----
struct SparsePrefillInputs {
  HostTensor q;            // [s_q, h_q, d_qk]
  HostTensor kv;           // [s_kv, h_kv, d_qk]; NaN rows where no valid index points
  HostTensor indices;      // [s_q, h_kv, topk]
  HostTensor topk_length;  // [s_q] or absent
  HostTensor attn_sink;    // [h_q] or absent
  float sm_scale = 0;
};
struct SparsePrefillOutputs {
  HostTensor out;         // [s_q, h_q, 512]
  HostTensor max_logits;  // [s_q, h_q]
  HostTensor lse;         // [s_q, h_q]
};
SparsePrefillInputs make_sparse_prefill_inputs(const SparsePrefillCase& c, Rng& rng);
SparsePrefillOutputs make_sparse_prefill_outputs(const SparsePrefillCase& c);
SparsePrefillParams sparse_prefill_params(const SparsePrefillCase& c, const SparsePrefillInputs& in,
                                          const SparsePrefillOutputs& out, const ViewFn& view);
naive::Attention sparse_prefill_reference(const SparsePrefillCase& c,
                                          const SparsePrefillInputs& in);
::testing::AssertionResult check_sparse_prefill(const SparsePrefillCase& c,
                                                const naive::Attention& ref,
                                                const SparsePrefillOutputs& out);
void run_sparse_prefill_cpu(const SparsePrefillCase& c, const SparsePrefillInputs& in,
                            const SparsePrefillOutputs& out);

// ---- dense MHA prefill ----
struct MhaVarlenInputs {
  HostTensor q, k, v;  // [total, h, d]; pad rows NaN
  HostTensor cu_seqlens_q, cu_seqlens_k;
  std::vector<int32_t> cu_q, cu_k;
  int max_seqlen_q = 0, max_seqlen_k = 0;
};
struct MhaVarlenOutputs {
  HostTensor out;  // [total_q, h_q, 128]
  HostTensor lse;  // [h_q, total_q] (possibly a transposed view)
};
MhaVarlenInputs make_mha_varlen_inputs(const MhaVarlenCase& c, Rng& rng);
MhaVarlenOutputs make_mha_varlen_outputs(const MhaVarlenCase& c);
MhaVarlenFwdParams mha_varlen_params(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                     const MhaVarlenOutputs& out, const ViewFn& view);
naive::Attention mha_varlen_reference(const MhaVarlenCase& c, const MhaVarlenInputs& in);
::testing::AssertionResult check_mha_varlen(const MhaVarlenCase& c, const naive::Attention& ref,
                                            const MhaVarlenOutputs& out);
void run_mha_varlen_cpu(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                        const MhaVarlenOutputs& out);

// ---- dense MHA prefill, backward ----
// The backward of a case takes the forward's inputs and outputs (`fwd`, from the CPU forward),
// an upstream gradient dout and, on odd case ids, a dlse.
struct MhaVarlenGradInputs {
  HostTensor dout;  // [total_q, h_q, 128]; pad rows NaN
  HostTensor dlse;  // [h_q, total_q] (a transposed view when the case's lse is) or absent
};
struct MhaVarlenGrads {
  HostTensor dq, dk, dv;  // NaN-poisoned before the call
};
MhaVarlenGradInputs make_mha_varlen_grad_inputs(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                                Rng& rng);
MhaVarlenGrads make_mha_varlen_grads(const MhaVarlenCase& c, const MhaVarlenInputs& in);
MhaVarlenBwdParams mha_varlen_bwd_params(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                         const MhaVarlenOutputs& fwd,
                                         const MhaVarlenGradInputs& gin,
                                         const MhaVarlenGrads& grads, const ViewFn& view);
naive::MhaGrads mha_varlen_bwd_reference(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                         const MhaVarlenOutputs& fwd,
                                         const MhaVarlenGradInputs& gin);
// Gradient tolerance (harness.cpp): elementwise, noise_factor times the reference's per-element
// noise (naive::MhaGrads) plus rtol times |ref| plus an absolute floor.
struct GradTolerance {
  double noise_factor, rtol, floor;
};
GradTolerance grad_tolerance(DType dtype);
::testing::AssertionResult check_mha_varlen_bwd(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                                                const naive::MhaGrads& ref,
                                                const MhaVarlenGrads& grads);
void run_mha_varlen_bwd_cpu(const MhaVarlenCase& c, const MhaVarlenInputs& in,
                            const MhaVarlenOutputs& fwd, const MhaVarlenGradInputs& gin,
                            const MhaVarlenGrads& grads);

}  // namespace flashmla::test
