// CUDA backend entry points (compiled only when the build has CUDA). Each kernel family lives in
// its own folder under src/cuda/ and exposes its launcher here; dispatch.cpp calls these after
// validation. Operations without a kernel are simply absent, and dispatch reports them.
#pragma once

#include <string>

#include "core/problem.h"
#include "flashmla/params.h"

namespace flashmla::cuda {

// Number of SMs of a device (cached per device).
int device_sm_count(int device_index);
// Peak DRAM bandwidth in GB/s (memory clock x bus width x 2), cached per device.
int device_peak_dram_gbps(int device_index);
std::string describe_devices();

// FP8 KV codecs (src/cuda/kv_codec/).
void kv_quantize(const KVQuantizeParams& p, const KVCodecProblem& pb, Stream stream);
void kv_dequantize(const KVDequantizeParams& p, const KVCodecProblem& pb, Stream stream);

// Dense decode (src/cuda/dense_decode/): the plan kernel and the split-KV main + combine kernels.
void dense_decode_plan(const DensePlanParams& p, Stream stream);
void dense_decode(const DenseDecodeParams& p, const DenseDecodeProblem& pb, Stream stream);

// Sparse attention over gathered keys (src/cuda/sparse/): decode over FP8 caches, prefill over
// a bf16 cache.
void sparse_decode(const SparseDecodeParams& p, const SparseDecodeProblem& pb, Stream stream);
void sparse_prefill(const SparsePrefillParams& p, const SparsePrefillProblem& pb, Stream stream);

// Dense MHA prefill, forward and backward (src/cuda/mha_prefill/). Opt-in until a GPU run
// checks them.
void mha_varlen_fwd(const MhaVarlenFwdParams& p, const MhaVarlenProblem& pb, Stream stream);
void mha_varlen_bwd(const MhaVarlenBwdParams& p, const MhaVarlenProblem& pb, Stream stream);

}  // namespace flashmla::cuda
