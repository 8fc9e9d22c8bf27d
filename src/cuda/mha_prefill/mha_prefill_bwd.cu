// CUDA backend entry point of dense MHA prefill, backward: resolves MhaVarlenBwdParams into the
// kernels' BwdParams and launches the dq kernel, then the dk/dv kernel (kernel_bwd.cuh), for
// bf16 / fp16 and d_qk 128 / 192. Opt-in (FLASHMLA_MHA_BWD=1, dispatch.cpp) until a GPU run has
// checked it.
#include <cuda_runtime.h>

#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device_guard.h"
#include "cuda/common/layout_checks.h"
#include "cuda/cuda_backend.h"
#include "cuda/mha_prefill/launch_common.h"
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

  const int64_t max_rows = mha::checked_max_rows("mha_varlen_bwd", pb, p.max_seqlen_q);
  mha::BwdParams k{};
  mha::set_shared_params(k, p, pb);
  k.dout = p.dout.data;
  k.dlse = p.dlse.defined() ? p.dlse.ptr<float>() : nullptr;
  k.dq = p.dq.data;
  k.dk = p.dk.data;
  k.dv = p.dv.data;
  k.dout_stride_tok = p.dout.stride[0];
  k.dout_stride_head = p.dout.stride[1];
  k.dq_stride_tok = p.dq.stride[0];
  k.dq_stride_head = p.dq.stride[1];
  k.dk_stride_tok = p.dk.stride[0];
  k.dk_stride_head = p.dk.stride[1];
  k.dv_stride_tok = p.dv.stride[0];
  k.dv_stride_head = p.dv.stride[1];
  if (p.dlse.defined()) {
    k.dlse_stride_head = p.dlse.stride[0];
    k.dlse_stride_tok = p.dlse.stride[1];
  }
  k.scale = pb.scale;
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
