// CUDA backend entry point of dense MHA prefill, backward: resolves MhaVarlenBwdParams into the
// kernels' BwdParams and launches the dq kernel, then the dk/dv kernel (kernel_bwd.cuh), for
// bf16 / fp16 and d_qk 128 / 192. Opt-in (FLASHMLA_MHA_BWD=1, dispatch.cpp) until a GPU run has
// checked it.
#include <cuda_runtime.h>

#include <climits>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device_guard.h"
#include "cuda/common/layout_checks.h"
#include "cuda/cuda_backend.h"
#include "cuda/mha_prefill/kernel_bwd.cuh"

namespace flashmla::cuda {
namespace {

template <typename T, int kDqk>
void launch(const mha::BwdParams& p, dim3 grid_dq, dim3 grid_dkdv, cudaStream_t stream) {
  auto* dq_kernel = &mha::mha_bwd_dq_kernel<T, kDqk>;
  auto* dkdv_kernel = &mha::mha_bwd_dkdv_kernel<T, kDqk>;
  constexpr int kSmemDq = mha::DqSmemPlan<kDqk>::kLaunchBytes;
  constexpr int kSmemDkdv = mha::DkvSmemPlan<kDqk>::kLaunchBytes;
  FLASHMLA_CUDA_CHECK(
      cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemDq));
  FLASHMLA_CUDA_CHECK(
      cudaFuncSetAttribute(dkdv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemDkdv));
  dq_kernel<<<grid_dq, mha::kThreads, kSmemDq, stream>>>(p);
  FLASHMLA_CUDA_CHECK_LAUNCH("mha_bwd_dq_kernel");
  dkdv_kernel<<<grid_dkdv, mha::kThreads, kSmemDkdv, stream>>>(p);
  FLASHMLA_CUDA_CHECK_LAUNCH("mha_bwd_dkdv_kernel");
}

}  // namespace

void mha_varlen_bwd(const MhaVarlenBwdParams& p, const MhaVarlenProblem& pb, Stream stream) {
  const DeviceGuard guard(p.q.device.index);
  // cp.async copies 16-byte chunks of q, k, v, dout and out rows (the dq kernel also reads dout
  // and out 16 bytes at a time); the gradients are stored 4 bytes at a time.
  const char* op = "mha_varlen_bwd";
  require_aligned(op, p.q, "q", 16);
  require_aligned(op, p.k, "k", 16);
  require_aligned(op, p.v, "v", 16);
  require_aligned(op, p.out, "out", 16);
  require_aligned(op, p.dout, "dout", 16);
  require_aligned(op, p.dq, "dq", 4);
  require_aligned(op, p.dk, "dk", 4);
  require_aligned(op, p.dv, "dv", 4);
  if (pb.total_q == 0 && pb.total_k == 0) return;  // nothing to write

  const int group = pb.h_q / pb.h_kv;
  const int64_t max_rows = int64_t{p.max_seqlen_q} * group;
  if (max_rows > INT_MAX - mha::kRows || pb.total_q > INT_MAX || pb.total_k > INT_MAX)
    throw NotImplementedError("flashmla::mha_varlen_bwd: the CUDA kernels index rows with 32 "
                              "bits: needs max_seqlen_q * h_q / h_kv and the token counts below "
                              "2^31");
  if (pb.b + 1 > 65535 || pb.h_kv > 65535)
    throw NotImplementedError("flashmla::mha_varlen_bwd: the CUDA kernels take at most 65534 "
                              "sequences and 65535 kv heads, got b = " + std::to_string(pb.b) +
                              ", h_kv = " + std::to_string(pb.h_kv));

  mha::BwdParams k{};
  k.q = p.q.data;
  k.k = p.k.data;
  k.v = p.v.data;
  k.out = p.out.data;
  k.dout = p.dout.data;
  k.lse = p.lse.ptr<float>();
  k.dlse = p.dlse.defined() ? p.dlse.ptr<float>() : nullptr;
  k.cu_q = p.cu_seqlens_q.ptr<int32_t>();
  k.cu_k = p.cu_seqlens_k.ptr<int32_t>();
  k.dq = p.dq.data;
  k.dk = p.dk.data;
  k.dv = p.dv.data;
  k.q_stride_tok = p.q.stride[0];
  k.q_stride_head = p.q.stride[1];
  k.k_stride_tok = p.k.stride[0];
  k.k_stride_head = p.k.stride[1];
  k.v_stride_tok = p.v.stride[0];
  k.v_stride_head = p.v.stride[1];
  k.out_stride_tok = p.out.stride[0];
  k.out_stride_head = p.out.stride[1];
  k.dout_stride_tok = p.dout.stride[0];
  k.dout_stride_head = p.dout.stride[1];
  k.dq_stride_tok = p.dq.stride[0];
  k.dq_stride_head = p.dq.stride[1];
  k.dk_stride_tok = p.dk.stride[0];
  k.dk_stride_head = p.dk.stride[1];
  k.dv_stride_tok = p.dv.stride[0];
  k.dv_stride_head = p.dv.stride[1];
  k.lse_stride_head = p.lse.stride[0];
  k.lse_stride_tok = p.lse.stride[1];
  if (p.dlse.defined()) {
    k.dlse_stride_head = p.dlse.stride[0];
    k.dlse_stride_tok = p.dlse.stride[1];
  }
  k.total_q = pb.total_q;
  k.total_k = pb.total_k;
  k.b = static_cast<int>(pb.b);
  k.h_kv = pb.h_kv;
  k.group = group;
  k.scale = pb.scale;
  k.scale_log2 = pb.scale * mha::kLog2e;
  k.causal = p.causal ? 1 : 0;
  // max_seqlen_q / _k bound every sequence (the caller's contract, as in FlashMLA; the CPU
  // backend checks them).
  const dim3 grid_dq(static_cast<unsigned>(mha::grid_row_tiles(max_rows)),
                     static_cast<unsigned>(pb.h_kv), static_cast<unsigned>(pb.b + 1));
  const dim3 grid_dkdv(static_cast<unsigned>(mha::grid_row_tiles(p.max_seqlen_k)),
                       static_cast<unsigned>(pb.h_kv), static_cast<unsigned>(pb.b + 1));
  auto s = static_cast<cudaStream_t>(stream);
  if (pb.d_qk == 192) {
    if (pb.is_fp16) launch<__half, 192>(k, grid_dq, grid_dkdv, s);
    else launch<__nv_bfloat16, 192>(k, grid_dq, grid_dkdv, s);
  } else {
    if (pb.is_fp16) launch<__half, 128>(k, grid_dq, grid_dkdv, s);
    else launch<__nv_bfloat16, 128>(k, grid_dq, grid_dkdv, s);
  }
}

}  // namespace flashmla::cuda
