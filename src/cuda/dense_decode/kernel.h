// Launchers of the dense decode kernels (the only header dispatch code includes).
#pragma once

#include <cuda.h>  // CUtensorMap (a plain struct; no driver library is linked)
#include <cuda_runtime.h>

#include "cuda/dense_decode/traits.h"

namespace flashmla::cuda::mla_decode {

// Main split-KV attention kernel, one explicit instantiation per (dtype, d_qk) in
// instantiations/*.cu. T = __nv_bfloat16 | __half.
// `tmap` describes k_cache for the TMA path (p.use_tma), `qmap` q for the pair kernel's Q tiles
// by TMA (p.q_tma), `vmap` k_cache as boxes of kVBoxAtoms atom columns for the pair kernel's V
// halves (p.v_box; config.h); each is ignored otherwise.
template <typename T, int kDqk>
void launch_main(const MainParams& p, const CUtensorMap& tmap, const CUtensorMap& qmap,
                 const CUtensorMap& vmap, cudaStream_t stream);

// Merges the partial slots of split requests into out / lse (combine.cu).
void launch_combine(const MainParams& p, bool is_fp16, cudaStream_t stream);

// Builds the schedule on the device (plan.cu): same code as the CPU plan.
void launch_plan(const int32_t* seqlens, int64_t seqlens_stride, int64_t b, int num_parts,
                 int32_t* sched_meta, cudaStream_t stream);

}  // namespace flashmla::cuda::mla_decode
