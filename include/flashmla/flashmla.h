// flashmla: Multi-head Latent Attention kernels, framework-free C++ API.
//
// Layers: this header (validation + dispatch) -> backends (src/cpu, src/cuda/<family>).
// Every entry point validates its params struct in a fixed order (presence, rank, device, dtype,
// layout, shapes, cross-argument consistency) and throws flashmla::Error subclasses
// (errors.h). The backend is picked from where the data lives: all tensors of one call must be
// on one device; CPU tensors run on the CPU backend, CUDA tensors on a CUDA kernel, and a CUDA
// call with no kernel yet throws NotImplementedError naming the operation (never a silent CPU
// fallback).
#pragma once

#include <string>

#include "flashmla/errors.h"
#include "flashmla/kv_layout.h"
#include "flashmla/params.h"
#include "flashmla/tensor.h"

namespace flashmla {

// --- dense decode ---
// Sizes of the schedule and workspace for a batch shape on a device. Pure host computation.
DecodePlan dense_decode_plan_info(int64_t b, int s_q, int h_q, int h_kv, int head_dim_v,
                                  bool causal, Device device);
// Writes the split-KV schedule for `cache_seqlens` into `sched_meta`.
void dense_decode_plan(const DensePlanParams& params, Stream stream = nullptr);
void dense_decode(const DenseDecodeParams& params, Stream stream = nullptr);

// --- sparse ---
void sparse_decode(const SparseDecodeParams& params, Stream stream = nullptr);
void sparse_prefill(const SparsePrefillParams& params, Stream stream = nullptr);

// --- dense prefill ---
void mha_varlen_fwd(const MhaVarlenFwdParams& params, Stream stream = nullptr);
void mha_varlen_bwd(const MhaVarlenBwdParams& params, Stream stream = nullptr);

// --- FP8 KV cache codecs ---
void kv_quantize(const KVQuantizeParams& params, Stream stream = nullptr);
void kv_dequantize(const KVDequantizeParams& params, Stream stream = nullptr);

// --- introspection ---
bool built_with_cuda();
// Human-readable list of backends, devices and which operations have kernels on each.
std::string describe_backends();

}  // namespace flashmla
