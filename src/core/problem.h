// Validated problem descriptions: what validate_*() derives from a params struct once, so the
// backends never re-derive (or re-check) sizes. Backends receive (params, problem) and may
// assume every check in validate.cpp has passed.
#pragma once

#include <cstdint>

#include "flashmla/kv_layout.h"
#include "flashmla/params.h"

namespace flashmla {

struct DenseDecodeProblem {
  int64_t b;
  int s_q, h_q, h_kv, d_qk, d_v;
  int64_t num_blocks;
  int page_block_size;
  int64_t max_blocks_per_seq;
  float scale;       // softmax scale, resolved
  bool is_fp16;      // else bf16
};

struct SparseDecodeProblem {
  int64_t b;
  int s_q, h_q, d_qk, d_v;
  KVCacheLayout layout;
  int topk;
  int64_t num_blocks, page_block_size, block_stride_bytes;  // main scope
  bool has_extra;
  int extra_topk;
  int64_t extra_num_blocks, extra_page_block_size, extra_block_stride_bytes;
  float scale;
};

struct SparsePrefillProblem {
  int64_t s_q, s_kv;
  int h_q, h_kv, d_qk, d_v, topk;
  float scale;
};

struct MhaVarlenProblem {
  int64_t b, total_q, total_k;
  int h_q, h_kv, d_qk, d_v;
  float scale;
  bool is_fp16;
};

struct KVCodecProblem {
  KVCacheLayout layout;
  int64_t num_blocks;
  int page_block_size;
  int64_t quant_block_stride_bytes;  // bytes between page blocks of the FP8 cache
};

}  // namespace flashmla
