// One variant per translation unit: dense decode main kernel, bf16, d_qk = 576.
#include "cuda/dense_decode/kernel.cuh"

namespace flashmla::cuda::mla_decode {
template void launch_main<__nv_bfloat16, 576>(const MainParams& p, const CUtensorMap& tmap,
                                              const CUtensorMap& qmap, const CUtensorMap& vmap,
    cudaStream_t stream);
}  // namespace flashmla::cuda::mla_decode
