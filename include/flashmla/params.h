// One plain params struct per operation: the contract between callers, the CPU backend and the
// CUDA kernels (all of them consume these same structs). Shapes are in the comments; every
// tensor's last dimension must be contiguous; other strides are honoured.
// See SPEC.md for semantics and docs/api.md for the error each check raises.
#pragma once

#include <cstdint>
#include <optional>

#include "flashmla/kv_layout.h"
#include "flashmla/tensor.h"

struct CUstream_st;

namespace flashmla {

// cudaStream_t without including CUDA headers (it is the same type). nullptr = legacy default
// stream; ignored by the CPU backend.
using Stream = CUstream_st*;

// ---------------------------------------------------------------------------------------------
// Dense decode: flash_mla_with_kvcache without indices (SPEC.md §2).
//
// Two steps. The plan computes a split-KV schedule from cache_seqlens into caller-owned int32
// memory (on the device of cache_seqlens; on a GPU it is a kernel, so it can be captured in a
// CUDA graph). The run step reads that schedule and never allocates or synchronizes.
// A plan stays valid while b, s_q, h_q, h_kv, causal and the values of cache_seqlens do not
// change.

// Host-side description of a plan: sizes to allocate, and the shape it was made for.
struct DecodePlan {
  int64_t b = 0;
  int s_q = 0;
  int h_q = 0;
  int h_kv = 0;
  int head_dim_v = 0;
  bool causal = false;
  Device device = kCPU;
  int num_parts = 0;              // independent work partitions (SM groups / CPU tasks)
  int64_t sched_meta_elems = 0;   // int32 elements of `sched_meta`
  int64_t workspace_bytes = 0;    // bytes of `workspace` (split-KV partial results)
};

struct DensePlanParams {
  DecodePlan plan;            // from dense_decode_plan_info()
  TensorView cache_seqlens;   // [b] int32
  TensorView sched_meta;      // [plan.sched_meta_elems] int32, written
};

struct DenseDecodeParams {
  TensorView q;               // [b, s_q, h_q, d_qk] bf16 | fp16; d_qk in {576, 512}
  TensorView k_cache;         // [num_blocks, page_block_size, h_kv, d_qk], q's dtype
  TensorView block_table;     // [b, max_blocks_per_seq] int32: page i of request r
  TensorView cache_seqlens;   // [b] int32, 0 <= len <= max_blocks_per_seq * page_block_size
  int head_dim_v = 512;       // V = k_cache[..., :head_dim_v]
  std::optional<float> softmax_scale;  // default d_qk^-0.5
  bool causal = false;        // query i sees keys j <= s_k - s_q + i
  DecodePlan plan;            // the plan sched_meta was made with
  TensorView sched_meta;      // [plan.sched_meta_elems] int32, from dense_decode_plan()
  TensorView workspace;       // [plan.workspace_bytes] uint8, scratch for split-KV partials
  TensorView out;             // [b, s_q, h_q, head_dim_v], q's dtype, written
  TensorView lse;             // [b, h_q, s_q] float32, natural log; +inf where nothing attended
};

// ---------------------------------------------------------------------------------------------
// Sparse decode over an FP8 cache: flash_mla_with_kvcache with indices (SPEC.md §3, §4).
// The layout follows d_qk: 576 -> V3.2 (656-byte tokens), 512 -> MODEL1.
struct SparseDecodeParams {
  TensorView q;                  // [b, s_q, h_q, d_qk] bf16
  TensorView k_cache;            // uint8 | float8_e4m3 [num_blocks, page_block_size, 1, bytes]
                                 //   bytes = 656 (V3.2) | 584 (MODEL1 nominal view)
  TensorView indices;            // [b, s_q, topk] int32: block * page_block_size + offset;
                                 //   -1 (or any slot outside the cache) = invalid
  TensorView topk_length;        // optional [b] int32: only indices[r, :, :topk_length[r]] count
  TensorView attn_sink;          // optional [h_q] float32: out *= 1 / (1 + exp(sink - lse))
  TensorView extra_k_cache;      // optional second scope, same layout as k_cache
  TensorView extra_indices;      // optional [b, s_q, extra_topk] int32, slots of extra_k_cache
  TensorView extra_topk_length;  // optional [b] int32
  int head_dim_v = 512;
  std::optional<float> softmax_scale;  // default d_qk^-0.5
  TensorView out;                // [b, s_q, h_q, head_dim_v] bf16, written
  TensorView lse;                // [b, h_q, s_q] float32, written (sink does not change it)
};

// ---------------------------------------------------------------------------------------------
// Sparse prefill: flash_mla_sparse_fwd (SPEC.md §5). Natural-log lse of logits already
// multiplied by sm_scale.
struct SparsePrefillParams {
  TensorView q;            // [s_q, h_q, d_qk] bf16; d_qk in {576, 512}
  TensorView kv;           // [s_kv, h_kv, d_qk] bf16
  TensorView indices;      // [s_q, h_kv, topk] int32; invalid = -1 or >= s_kv
  float sm_scale = 0.0f;   // required, applied to the logits
  int d_v = 512;
  TensorView attn_sink;    // optional [h_q] float32
  TensorView topk_length;  // optional [s_q] int32
  TensorView out;          // [s_q, h_q, d_v] bf16, written
  TensorView max_logits;   // [s_q, h_q] float32, written; -inf where nothing attended
  TensorView lse;          // [s_q, h_q] float32, written; +inf where nothing attended
};

// ---------------------------------------------------------------------------------------------
// Dense MHA prefill, variable length: flash_attn_varlen_func forward (SPEC.md §6).
// Causal masks are bottom-right aligned (query i of a sequence sees keys j <= i + s_k - s_q),
// as in flash_attn >= 2.1 and FlashMLA.
struct MhaVarlenFwdParams {
  TensorView q;              // [total_q, h_q, d_qk] bf16 | fp16; d_qk in {128, 192}
  TensorView k;              // [total_k, h_kv, d_qk], q's dtype; h_q % h_kv == 0
  TensorView v;              // [total_k, h_kv, d_v], q's dtype; d_v = 128
  TensorView cu_seqlens_q;   // [b + 1] int32, non-decreasing, cu[0] = 0, cu[b] <= total_q
  TensorView cu_seqlens_k;   // [b + 1] int32, likewise for total_k
  int max_seqlen_q = 0;      // >= every s_q (a launch-shape hint, checked on the CPU)
  int max_seqlen_k = 0;
  std::optional<float> softmax_scale;  // default d_qk^-0.5
  bool causal = false;
  TensorView out;            // [total_q, h_q, d_v], q's dtype, written
  TensorView lse;            // [h_q, total_q] float32 (any strides), +inf where nothing attended
};

// Dense MHA prefill, backward: the gradients of mha_varlen_fwd's out (and optionally lse) with
// respect to q, k and v, from the forward's own out and lse (flash_attn's varlen backward).
// With P = softmax(scale * q k^T) per row (causal as in the forward), D_i = dout_i . out_i:
//   dS_ij = P_ij (dout_i . v_j - D_i + dlse_i),  dq_i = scale sum_j dS_ij k_j,
//   dk_j = scale sum_i dS_ij q_i,  dv_j = sum_i P_ij dout_i
// (sums over the query heads that share a kv head for dk and dv). Rows that attended nothing
// (lse = +inf), rows of q / k / v outside every sequence and keys no query sees get exact zeros.
struct MhaVarlenBwdParams {
  TensorView dout;           // [total_q, h_q, d_v], q's dtype: the gradient of out
  TensorView q;              // [total_q, h_q, d_qk] bf16 | fp16; d_qk in {128, 192}
  TensorView k;              // [total_k, h_kv, d_qk], q's dtype; h_q % h_kv == 0
  TensorView v;              // [total_k, h_kv, d_v], q's dtype; d_v = 128
  TensorView out;            // [total_q, h_q, d_v], q's dtype: mha_varlen_fwd's out
  TensorView lse;            // [h_q, total_q] float32 (any strides): mha_varlen_fwd's lse
  TensorView dlse;           // optional [h_q, total_q] float32 (any strides): the gradient of lse
                             // (FlashMLA ignores it; absent means zero)
  TensorView cu_seqlens_q;   // [b + 1] int32, as in the forward
  TensorView cu_seqlens_k;   // [b + 1] int32
  int max_seqlen_q = 0;      // >= every s_q (checked on the CPU)
  int max_seqlen_k = 0;
  std::optional<float> softmax_scale;  // default d_qk^-0.5; the forward's value
  bool causal = false;
  TensorView dq;             // [total_q, h_q, d_qk], q's dtype, written
  TensorView dk;             // [total_k, h_kv, d_qk], q's dtype, written
  TensorView dv;             // [total_k, h_kv, d_v], q's dtype, written
};

// ---------------------------------------------------------------------------------------------
// FP8 KV cache codecs (SPEC.md §3): bf16 paged cache <-> FP8 layout, byte-exact on every backend.
struct KVQuantizeParams {
  KVCacheLayout layout = KVCacheLayout::kV32;
  TensorView k_cache;      // [num_blocks, page_block_size, 1, d] bf16, d = 576 (V3.2) | 512 (MODEL1)
  TensorView quant_cache;  // uint8 | float8_e4m3 [num_blocks, page_block_size, 1, bytes], written
};

struct KVDequantizeParams {
  KVCacheLayout layout = KVCacheLayout::kV32;
  TensorView quant_cache;  // uint8 | float8_e4m3 [num_blocks, page_block_size, 1, bytes]
  TensorView k_cache;      // [num_blocks, page_block_size, 1, d] bf16, written
};

}  // namespace flashmla
