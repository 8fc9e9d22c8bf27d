// FP8 KV cache codecs on the CPU (SPEC.md §3): bf16 paged cache <-> V3.2 / MODEL1 bytes.
// Tokens are independent, so both directions are one parallel loop over (block, offset); the
// per-token work is fp8_cache.h's, shared with the sparse decode kernel.
#include <cstdint>
#include <cstring>

#include "cpu/cpu_backend.h"
#include "cpu/fp8_cache.h"

namespace flashmla::cpu {

namespace {

// Token (block, offset) of the bf16 cache [num_blocks, page_block_size, 1, d].
uint16_t* bf16_token(const TensorView& cache, int64_t block, int64_t offset) {
  return cache.ptr<uint16_t>() + block * cache.stride[0] + offset * cache.stride[1];
}

}  // namespace

void kv_quantize(const KVQuantizeParams& p, const KVCodecProblem& pb) {
  const int64_t pbs = pb.page_block_size;
  const int64_t num_tokens = pb.num_blocks * pbs;
  uint8_t* quant = p.quant_cache.ptr<uint8_t>();
#pragma omp parallel for schedule(static) num_threads(num_threads())
  for (int64_t token = 0; token < num_tokens; ++token) {
    const int64_t block = token / pbs, offset = token % pbs;
    encode_token(pb.layout, bf16_token(p.k_cache, block, offset),
                 quant + block * pb.quant_block_stride_bytes, pbs, offset);
  }
}

void kv_dequantize(const KVDequantizeParams& p, const KVCodecProblem& pb) {
  const int64_t pbs = pb.page_block_size;
  const int64_t num_tokens = pb.num_blocks * pbs;
  const int dim = kv_layout_dim(pb.layout);
  const uint8_t* quant = p.quant_cache.ptr<const uint8_t>();
#pragma omp parallel for schedule(static) num_threads(num_threads())
  for (int64_t token = 0; token < num_tokens; ++token) {
    const int64_t block = token / pbs, offset = token % pbs;
    float row[v32::kDimQK];  // the larger of the two layouts
    decode_token(pb.layout, quant + block * pb.quant_block_stride_bytes, pbs, offset, row);
    // e4m3 * 2^e has 4 significant bits, so the bf16 conversion is exact.
    uint16_t* dst = bf16_token(p.k_cache, block, offset);
    const int nope = dim - v32::kDimRope;
    for (int k = 0; k < nope; ++k) dst[k] = fp8::float_to_bf16(row[k]);
    // RoPE is stored as bf16: copy its bits (a float round trip would quiet signalling NaNs).
    const uint8_t* blk = quant + block * pb.quant_block_stride_bytes;
    const uint8_t* rope = pb.layout == KVCacheLayout::kV32
                              ? blk + offset * v32::kBytesPerToken + v32::kRopeOffset
                              : blk + model1::token_data_offset(offset) + model1::kDimNope;
    std::memcpy(dst + nope, rope, v32::kDimRope * sizeof(uint16_t));
  }
}

}  // namespace flashmla::cpu
