// CUDA backend entry point of dense MHA prefill, forward (SPEC.md §6): resolves
// MhaVarlenFwdParams into the kernel's Params and launches it for bf16 / fp16 and d_qk 128 / 192
// (kernel.cuh; with FLASHMLA_MHA_FWD=2 the warp-specialised kernel_ws.cuh). Opt-in
// (FLASHMLA_MHA_FWD=1 or 2, dispatch.cpp) until a GPU run has checked them.
#include <cuda_runtime.h>

#include <climits>
#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device_guard.h"
#include "cuda/common/layout_checks.h"
#include "cuda/cuda_backend.h"
#include "cuda/common/env_switch.h"
#include "cuda/mha_prefill/kernel.cuh"
#include "cuda/mha_prefill/kernel_ws.cuh"

namespace flashmla::cuda {
namespace {

// ws: the warp-specialised kernel (kernel_ws.cuh), else the first version (kernel.cuh).
template <typename T, int kDqk>
void launch(const mha::Params& p, dim3 grid, bool ws, cudaStream_t stream) {
  if (ws) {
    auto* kernel = &mha::mha_fwd_ws_kernel<T, kDqk>;
    constexpr int kSmem = mha::WsSmemPlan<kDqk>::kLaunchBytes;
    FLASHMLA_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    kernel<<<grid, mha::kWsThreads, kSmem, stream>>>(p);
    FLASHMLA_CUDA_CHECK_LAUNCH("mha_fwd_ws_kernel");
    return;
  }
  auto* kernel = &mha::mha_fwd_kernel<T, kDqk>;
  constexpr int kSmem = mha::SmemPlan<kDqk>::kLaunchBytes;
  FLASHMLA_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  kernel<<<grid, mha::kThreads, kSmem, stream>>>(p);
  FLASHMLA_CUDA_CHECK_LAUNCH("mha_fwd_kernel");
}

}  // namespace

void mha_varlen_fwd(const MhaVarlenFwdParams& p, const MhaVarlenProblem& pb, Stream stream) {
  const DeviceGuard guard(p.q.device.index);
  // cp.async copies 16-byte chunks of q, k and v rows; out is stored 4 bytes at a time.
  require_aligned("mha_varlen_fwd", p.q, "q", 16);
  require_aligned("mha_varlen_fwd", p.k, "k", 16);
  require_aligned("mha_varlen_fwd", p.v, "v", 16);
  require_aligned("mha_varlen_fwd", p.out, "out", 4);
  if (pb.total_q == 0) return;  // nothing to write

  const int group = pb.h_q / pb.h_kv;
  const int64_t max_rows = int64_t{p.max_seqlen_q} * group;  // a sequence's rows, at most
  if (max_rows > INT_MAX - mha::kRows || pb.total_q > INT_MAX || pb.total_k > INT_MAX)
    throw NotImplementedError("flashmla::mha_varlen_fwd: the CUDA kernel indexes rows with 32 "
                              "bits: needs max_seqlen_q * h_q / h_kv and the token counts below "
                              "2^31");
  if (pb.b + 1 > 65535 || pb.h_kv > 65535)
    throw NotImplementedError("flashmla::mha_varlen_fwd: the CUDA kernel takes at most 65534 "
                              "sequences and 65535 kv heads, got b = " + std::to_string(pb.b) +
                              ", h_kv = " + std::to_string(pb.h_kv));

  mha::Params k{};
  k.q = p.q.data;
  k.k = p.k.data;
  k.v = p.v.data;
  k.out = p.out.data;
  k.lse = p.lse.ptr<float>();
  k.cu_q = p.cu_seqlens_q.ptr<int32_t>();
  k.cu_k = p.cu_seqlens_k.ptr<int32_t>();
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
  k.group = group;
  k.scale_log2 = pb.scale * 1.4426950408889634f;
  k.causal = p.causal ? 1 : 0;
  // cu_seqlens cannot be read here: max_seqlen_q bounds every sequence's rows (the caller's
  // contract, as in FlashMLA; the CPU backend checks it).
  const dim3 grid(static_cast<unsigned>(mha::grid_row_tiles(max_rows)),
                  static_cast<unsigned>(pb.h_kv), static_cast<unsigned>(pb.b + 1));
  auto s = static_cast<cudaStream_t>(stream);
  const bool fp16 = pb.is_fp16;
  const bool ws = env_is("FLASHMLA_MHA_FWD", "2");
  if (pb.d_qk == 192) {
    if (fp16) launch<__half, 192>(k, grid, ws, s);
    else launch<__nv_bfloat16, 192>(k, grid, ws, s);
  } else {
    if (fp16) launch<__half, 128>(k, grid, ws, s);
    else launch<__nv_bfloat16, 128>(k, grid, ws, s);
  }
}

}  // namespace flashmla::cuda
