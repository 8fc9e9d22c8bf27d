// Host-side pieces shared by the MHA prefill launchers (forward and backward): the limits of the
// kernels' grids and 32-bit row indices (a problem past them gets a NotImplementedError naming
// the operation, never a truncated grid), and the kernel parameters both kinds of params share.
#pragma once

#include <climits>
#include <cstdint>
#include <string>

#include "core/problem.h"
#include "cuda/mha_prefill/config.h"
#include "flashmla/errors.h"

namespace flashmla::cuda::mha {

// Returns a sequence's row count at most (max_seqlen_q * group), after checking it and the
// token counts fit the kernels' int rows, and b + 1 and h_kv the grid's y and z.
inline int64_t checked_max_rows(const char* op, const MhaVarlenProblem& pb, int max_seqlen_q) {
  const int64_t max_rows = int64_t{max_seqlen_q} * (pb.h_q / pb.h_kv);
  if (max_rows > INT_MAX - kRows || pb.total_q > INT_MAX || pb.total_k > INT_MAX)
    throw NotImplementedError(std::string("flashmla::") + op +
                              ": the CUDA kernels index rows with 32 bits: needs max_seqlen_q * "
                              "h_q / h_kv and the token counts below 2^31");
  if (pb.b + 1 > 65535 || pb.h_kv > 65535)
    throw NotImplementedError(std::string("flashmla::") + op +
                              ": the CUDA kernels take at most 65534 sequences and 65535 kv "
                              "heads, got b = " + std::to_string(pb.b) +
                              ", h_kv = " + std::to_string(pb.h_kv));
  return max_rows;
}

// The fields Params and BwdParams share, from MhaVarlenFwdParams or MhaVarlenBwdParams: q, k,
// v, out, lse and the offsets, their strides, the sizes, the scale and the mask.
template <typename KernelParams, typename ApiParams>
void set_shared_params(KernelParams& k, const ApiParams& p, const MhaVarlenProblem& pb) {
  k.q = p.q.data;
  k.k = p.k.data;
  k.v = p.v.data;
  k.out = p.out.data;
  k.lse = p.lse.template ptr<float>();
  k.cu_q = p.cu_seqlens_q.template ptr<int32_t>();
  k.cu_k = p.cu_seqlens_k.template ptr<int32_t>();
  k.q_stride_tok = p.q.stride[0];
  k.q_stride_head = p.q.stride[1];
  k.k_stride_tok = p.k.stride[0];
  k.k_stride_head = p.k.stride[1];
  k.v_stride_tok = p.v.stride[0];
  k.v_stride_head = p.v.stride[1];
  k.out_stride_tok = p.out.stride[0];
  k.out_stride_head = p.out.stride[1];
  k.lse_stride_head = p.lse.stride[0];
  k.lse_stride_tok = p.lse.stride[1];
  k.total_q = pb.total_q;
  k.total_k = pb.total_k;
  k.b = static_cast<int>(pb.b);
  k.h_kv = pb.h_kv;
  k.group = pb.h_q / pb.h_kv;
  k.scale_log2 = pb.scale * 1.4426950408889634f;  // log2(e)
  k.causal = p.causal ? 1 : 0;
}

}  // namespace flashmla::cuda::mha
