// Device helpers shared by the attention kernels (dense decode, sparse): 16-bit packing, the
// SFU's exp2 / rcp / log2, the 1024-byte aligned shared-memory base and the quad transpose of
// the 16-byte output stores.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/sm90_ptx.cuh"

namespace flashmla::cuda {

template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

// 2^x on the SFU (ex2.approx: relative error ~2^-22, 2^-inf = +0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 1 / x and log2(x) on the SFU, flushing subnormals (the epilogue's row sums are 0 or >= 1).
__device__ __forceinline__ float fast_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float fast_log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The dynamic shared-memory base rounded up to 1024 bytes (swizzle atoms), by pointer arithmetic
// on the __shared__ array itself so the compiler keeps shared (not generic) loads and stores.
__device__ __forceinline__ uint8_t* align_smem_1024(uint8_t* smem_raw) {
  return smem_raw + ((1024u - (sm90::smem_addr(smem_raw) & 1023u)) & 1023u);
}

// 4 x 4 transpose across the four lanes of a quad (two butterfly stages of two shuffles): lane q
// starts with v[k] = element (q, k) and ends with v[k] = element (k, q). All 32 lanes call it.
__device__ __forceinline__ void quad_transpose(uint32_t (&v)[4], int quad_col) {
  const bool hi = (quad_col & 2) != 0;  // stage 1: swap the off-diagonal 2 x 2 blocks
  uint32_t r0 = __shfl_xor_sync(0xffffffff, hi ? v[0] : v[2], 2);
  uint32_t r1 = __shfl_xor_sync(0xffffffff, hi ? v[1] : v[3], 2);
  if (hi) v[0] = r0, v[1] = r1;
  else v[2] = r0, v[3] = r1;
  const bool odd = (quad_col & 1) != 0;  // stage 2: transpose inside each 2 x 2 block
  r0 = __shfl_xor_sync(0xffffffff, odd ? v[0] : v[1], 1);
  r1 = __shfl_xor_sync(0xffffffff, odd ? v[2] : v[3], 1);
  if (odd) v[0] = r0, v[2] = r1;
  else v[1] = r0, v[3] = r1;
}

}  // namespace flashmla::cuda
