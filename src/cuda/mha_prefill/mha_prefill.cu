// CUDA backend entry point of dense MHA prefill, forward (SPEC.md §6): resolves
// MhaVarlenFwdParams into the kernel's Params and launches it for bf16 / fp16 and d_qk 128 / 192
// (kernel.cuh; with FLASHMLA_MHA_FWD=2 the warp-specialised kernel_ws.cuh). Opt-in
// (FLASHMLA_MHA_FWD=1 or 2, dispatch.cpp) until a GPU run has checked them.
#include <cuda_runtime.h>

#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device_guard.h"
#include "cuda/common/layout_checks.h"
#include "cuda/cuda_backend.h"
#include "cuda/mha_prefill/launch_common.h"
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

  const int64_t max_rows = mha::checked_max_rows("mha_varlen_fwd", pb, p.max_seqlen_q);
  mha::Params k{};
  mha::set_shared_params(k, p, pb);
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
