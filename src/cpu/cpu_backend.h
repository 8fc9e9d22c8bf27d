// CPU backend: every operation, float32 accumulation, multithreaded (OpenMP). It is the
// library's portable backend and the oracle the GPU tests compare against. Functions receive
// params that validate.cpp has already checked, plus the derived problem sizes.
#pragma once

#include "core/problem.h"
#include "flashmla/params.h"

namespace flashmla::cpu {

int num_threads();

// Writes the split-KV schedule (core/decode_schedule.h) for host-resident cache_seqlens.
void dense_decode_plan(const DensePlanParams& p, int64_t max_len);
void dense_decode(const DenseDecodeParams& p, const DenseDecodeProblem& pb);
void sparse_decode(const SparseDecodeParams& p, const SparseDecodeProblem& pb);
void sparse_prefill(const SparsePrefillParams& p, const SparsePrefillProblem& pb);
void mha_varlen_fwd(const MhaVarlenFwdParams& p, const MhaVarlenProblem& pb);
void mha_varlen_bwd(const MhaVarlenBwdParams& p, const MhaVarlenProblem& pb);
void kv_quantize(const KVQuantizeParams& p, const KVCodecProblem& pb);
void kv_dequantize(const KVDequantizeParams& p, const KVCodecProblem& pb);

}  // namespace flashmla::cpu
