// FP8 KV-cache codecs on the GPU (SPEC.md §3): bf16 paged cache <-> V3.2 / MODEL1 bytes.
//
// Work split: one warp per token. Lane l owns NoPE chunks l and l + 32 (a chunk is 8
// elements: 16 bytes of bf16, 8 bytes of e4m3); lanes 0..7 own the 8 RoPE chunks. A tile's
// chunks sit on consecutive lanes, so its amax is a butterfly over kChunksPerTile lanes and
// lane 0 gathers the per-tile scales. A persistent grid of warps walks the tokens, each warp
// issuing its next token's loads before it stores the current one.
//
// Bytes: the same operations, in the same order, as the CPU backend (src/cpu/fp8_cache.h),
// with fp8.h's e4m3 codecs read from shared-memory tables that fp8.h's functions fill
// (e4m3_tables.h), so the two backends write identical bytes.
//
// Alignment: validation guarantees a 16-byte aligned FP8 cache (data and block stride); the
// bf16 cache may be any strided view, so the launcher picks the widest access (16, 8, 4 or 2
// bytes) that divides its pointer and the strides in use.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device_guard.h"
#include "cuda/cuda_backend.h"
#include "cuda/kv_codec/byte_access.cuh"
#include "cuda/kv_codec/config.h"
#include "cuda/kv_codec/e4m3_tables.h"
#include "flashmla/fp8.h"
#include "flashmla/kv_layout.h"

namespace flashmla::cuda::kv_codec {

// bf16 bits of +inf: an amax above it means the tile holds a NaN.
inline constexpr uint32_t kBf16InfBits = 0x7F80u;

// ---- Layouts --------------------------------------------------------------------------------

template <KVCacheLayout kLayout>
struct LayoutTraits;

template <>
struct LayoutTraits<KVCacheLayout::kV32> {
  static constexpr int kDimNope = v32::kDimNope;
  static constexpr int kTile = v32::kTile;
  static constexpr int kNumTiles = v32::kNumTiles;
  static constexpr int kRopeOffset = v32::kRopeOffset;  // in the token's data
  static constexpr int kTileScaleBytes = 4;             // float32 2^e, inside the token
  static constexpr int kScaleBytes = kNumTiles * kTileScaleBytes;
  __device__ static int64_t token_data_offset(int t) {
    return static_cast<int64_t>(t) * v32::kBytesPerToken;
  }
  __device__ static int64_t scale_offset(int /*pbs*/, int t) {
    return token_data_offset(t) + v32::kScaleOffset;
  }
  __device__ static uint32_t encode_scale(int e) { return fp8::float_bits(fp8::exp2_int(e)); }
  __device__ static float decode_scale(uint32_t raw) { return fp8::bits_float(raw); }
};

template <>
struct LayoutTraits<KVCacheLayout::kModel1> {
  static constexpr int kDimNope = model1::kDimNope;
  static constexpr int kTile = model1::kTile;
  static constexpr int kNumTiles = model1::kNumTiles;
  static constexpr int kRopeOffset = model1::kDimNope;
  static constexpr int kTileScaleBytes = 1;  // UE8M0, in the block's scale area
  static constexpr int kScaleBytes = model1::kScaleBytesPerToken;  // 7 + a zero pad byte
  __device__ static int64_t token_data_offset(int t) { return model1::token_data_offset(t); }
  __device__ static int64_t scale_offset(int pbs, int t) {
    return model1::token_scale_offset(pbs, t);
  }
  __device__ static uint32_t encode_scale(int e) { return fp8::exponent_to_ue8m0(e); }
  __device__ static float decode_scale(uint32_t raw) {
    return fp8::ue8m0_to_float(static_cast<uint8_t>(raw));
  }
};

// How a layout's NoPE part maps onto the lanes of a warp.
template <KVCacheLayout kLayout>
struct WarpPlan : LayoutTraits<kLayout> {
  using L = LayoutTraits<kLayout>;
  static constexpr int kNopeChunks = L::kDimNope / kChunkElems;
  static constexpr int kPasses = (kNopeChunks + kWarpSize - 1) / kWarpSize;  // chunks per lane
  static constexpr int kChunksPerTile = L::kTile / kChunkElems;
  static constexpr int kTilesPerPass = kWarpSize / kChunksPerTile;

  static_assert(L::kDimNope % kChunkElems == 0 && L::kTile % kChunkElems == 0);
  static_assert(kWarpSize % kChunksPerTile == 0, "a tile must not straddle two passes");
  static_assert(L::kNumTiles <= kPasses * kTilesPerPass);
  static_assert(L::kRopeOffset % kMaxAccessBytes == 0, "RoPE is copied in 16-byte chunks");
  static_assert(L::kScaleBytes == 8 || L::kScaleBytes == 16, "scales are stored in one access");
  static_assert(L::kDimNope * kBf16Bytes % kMaxAccessBytes == 0);
};

// ---- Addressing -----------------------------------------------------------------------------

struct Addressing {
  int64_t num_tokens;          // num_blocks * page_block_size
  int page_block_size;
  int64_t bf16_block_stride;   // bytes between page blocks of the bf16 cache
  int64_t bf16_token_stride;   // bytes between tokens of a page block of the bf16 cache
  int64_t quant_block_stride;  // bytes between page blocks of the FP8 cache
  int64_t step_tokens;         // tokens between a warp's consecutive steps (grid-wide stride)
  int64_t step_blocks;         // step_tokens / page_block_size
  int step_offset;             // step_tokens % page_block_size
};

// A token as (page block, offset in the block); stepping avoids a 64-bit division per token.
struct Slot {
  int64_t blk;
  int t;
  __device__ __forceinline__ Slot step(const Addressing& a) const {
    const int u = t + a.step_offset;
    return u < a.page_block_size ? Slot{blk + a.step_blocks, u}
                                 : Slot{blk + a.step_blocks + 1, u - a.page_block_size};
  }
  __device__ __forceinline__ int64_t bf16_offset(const Addressing& a) const {
    return blk * a.bf16_block_stride + t * a.bf16_token_stride;
  }
};

__device__ __forceinline__ Slot slot_of(int64_t token, int pbs) {
  const int64_t blk = token / pbs;
  return {blk, static_cast<int>(token - blk * pbs)};
}

// ---- Quantize -------------------------------------------------------------------------------

// The rare chunk of a tile that holds a NaN: fp8.h's function itself (the table has no NaN
// entry).
__device__ __forceinline__ void encode_chunk_with_nan(const uint32_t (&x)[4], float inv_scale,
                                                      uint32_t (&q)[2]) {
#pragma unroll
  for (int k = 0; k < kChunkElems; ++k) {
    const auto v = static_cast<uint16_t>(x[k / 2] >> (16 * (k % 2)));
    const uint32_t byte = fp8::float_to_e4m3(fp8::bf16_to_float(v) * inv_scale);
    q[k / 4] |= byte << (8 * (k % 4));
  }
}

// A lane's NoPE chunks of one token as bf16 pairs: [pass][word].
template <KVCacheLayout kLayout>
using NopeBf16 = uint32_t[WarpPlan<kLayout>::kPasses][4];

template <KVCacheLayout kLayout>
__device__ __forceinline__ void quantize_token(const NopeBf16<kLayout>& nope,
                                               const uint32_t (&rope)[4], const uint8_t* table,
                                               uint8_t* block, int pbs, int t, int lane) {
  using P = WarpPlan<kLayout>;
  uint8_t* data = block + P::token_data_offset(t);

  // Tile amax, as bf16 bits of |x| like the CPU: they order like the values, NaN above +inf.
  // Lanes without a chunk hold zeros.
  uint32_t amax[P::kPasses];
  int e[P::kPasses];
#pragma unroll
  for (int p = 0; p < P::kPasses; ++p) {
    uint32_t m2 = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) m2 = __vmaxu2(m2, nope[p][j] & 0x7FFF7FFFu);
    uint32_t m = max(m2 & 0xFFFFu, m2 >> 16);
#pragma unroll
    for (int off = P::kChunksPerTile / 2; off > 0; off /= 2)
      m = max(m, __shfl_xor_sync(kFullMask, m, off));
    amax[p] = m;
    e[p] = fp8::scale_exponent_for_amax(fp8::bf16_to_float(static_cast<uint16_t>(m)));
  }

  // NoPE: x * 2^-e is exact, the e4m3 rounding is the only one. A tile holding a NaN has an
  // amax above inf's bits.
#pragma unroll
  for (int p = 0; p < P::kPasses; ++p) {
    const int c = p * kWarpSize + lane;
    if (c >= P::kNopeChunks) continue;
    const float inv_scale = fp8::exp2_int(-e[p]);
    uint32_t q[2] = {0u, 0u};
    if (amax[p] <= kBf16InfBits) {
#pragma unroll
      for (int k = 0; k < kChunkElems; ++k) {
        const auto x = static_cast<uint16_t>(nope[p][k / 2] >> (16 * (k % 2)));
        const uint32_t byte = encode_e4m3(table, fp8::bf16_to_float(x) * inv_scale);
        q[k / 4] |= byte << (8 * (k % 4));
      }
    } else {
      encode_chunk_with_nan(nope[p], inv_scale, q);
    }
    ByteAccess<kChunkFp8Bytes, kChunkFp8Bytes>::store(data + c * kChunkFp8Bytes, q);
  }

  if (lane < kRopeChunks)
    ByteAccess<kChunkBf16Bytes, kMaxAccessBytes>::store(
        data + P::kRopeOffset + lane * kChunkBf16Bytes, rope);

  // Scales: lane 0 gathers each tile's exponent from the tile's first lane; unused bytes
  // (MODEL1's pad) stay 0.
  uint32_t s[P::kScaleBytes / 4] = {};
#pragma unroll
  for (int tile = 0; tile < P::kNumTiles; ++tile) {
    const int et = __shfl_sync(kFullMask, e[tile / P::kTilesPerPass],
                               (tile % P::kTilesPerPass) * P::kChunksPerTile);
    const int byte = tile * P::kTileScaleBytes;
    s[byte / 4] |= P::encode_scale(et) << (8 * (byte % 4));
  }
  if (lane == 0)
    ByteAccess<P::kScaleBytes, P::kScaleBytes>::store(block + P::scale_offset(pbs, t), s);
}

template <KVCacheLayout kLayout, int kBf16Align>
struct Quantizer {
  using P = WarpPlan<kLayout>;
  using In = ByteAccess<kChunkBf16Bytes, kBf16Align>;
  struct Regs {
    NopeBf16<kLayout> nope;
    uint32_t rope[4];
  };
  const uint8_t* bf16;
  uint8_t* quant;
  const uint8_t* table;  // shared memory, kEncodeEntries
  const Addressing& a;
  int lane;

  __device__ __forceinline__ void load(Slot at, Regs& r) const {
    const uint8_t* row = bf16 + at.bf16_offset(a);
#pragma unroll
    for (int p = 0; p < P::kPasses; ++p) {
      const int c = p * kWarpSize + lane;
      if (c < P::kNopeChunks) In::load(row + c * kChunkBf16Bytes, r.nope[p]);
      else r.nope[p][0] = r.nope[p][1] = r.nope[p][2] = r.nope[p][3] = 0u;
    }
    if (lane < kRopeChunks)
      In::load(row + P::kDimNope * kBf16Bytes + lane * kChunkBf16Bytes, r.rope);
  }
  __device__ __forceinline__ void store(Slot at, const Regs& r) const {
    quantize_token<kLayout>(r.nope, r.rope, table, quant + at.blk * a.quant_block_stride,
                            a.page_block_size, at.t, lane);
  }
};

template <KVCacheLayout kLayout, int kBf16Align>
struct Dequantizer {
  using P = WarpPlan<kLayout>;
  using Out = ByteAccess<kChunkBf16Bytes, kBf16Align>;
  using TileScale = ByteAccess<P::kTileScaleBytes, P::kTileScaleBytes>;
  struct Regs {
    uint32_t nope[P::kPasses][2];
    uint32_t scale[P::kPasses][1];  // raw bytes of each chunk's tile scale
    uint32_t rope[4];
  };
  const uint8_t* quant;
  uint8_t* bf16;
  const float* table;  // shared memory, kDecodeEntries
  const Addressing& a;
  int lane;

  __device__ __forceinline__ void load(Slot at, Regs& r) const {
    const uint8_t* block = quant + at.blk * a.quant_block_stride;
    const uint8_t* data = block + P::token_data_offset(at.t);
    const uint8_t* scales = block + P::scale_offset(a.page_block_size, at.t);
#pragma unroll
    for (int p = 0; p < P::kPasses; ++p) {
      const int c = p * kWarpSize + lane;
      if (c >= P::kNopeChunks) continue;
      ByteAccess<kChunkFp8Bytes, kChunkFp8Bytes>::load(data + c * kChunkFp8Bytes, r.nope[p]);
      TileScale::load(scales + c / P::kChunksPerTile * P::kTileScaleBytes, r.scale[p]);
    }
    if (lane < kRopeChunks)
      ByteAccess<kChunkBf16Bytes, kMaxAccessBytes>::load(
          data + P::kRopeOffset + lane * kChunkBf16Bytes, r.rope);
  }
  __device__ __forceinline__ void store(Slot at, const Regs& r) const {
    uint8_t* row = bf16 + at.bf16_offset(a);
#pragma unroll
    for (int p = 0; p < P::kPasses; ++p) {
      const int c = p * kWarpSize + lane;
      if (c >= P::kNopeChunks) continue;
      // e4m3 * 2^e has 4 significant bits, so the bf16 rounding is exact (as on the CPU).
      const float s = P::decode_scale(r.scale[p][0]);
      uint32_t out[4] = {0u, 0u, 0u, 0u};
#pragma unroll
      for (int k = 0; k < kChunkElems; ++k) {
        const uint32_t byte = (r.nope[p][k / 4] >> (8 * (k % 4))) & 0xFFu;
        out[k / 2] |= uint32_t{fp8::float_to_bf16(table[byte] * s)} << (16 * (k % 2));
      }
      Out::store(row + c * kChunkBf16Bytes, out);
    }
    if (lane < kRopeChunks)
      Out::store(row + P::kDimNope * kBf16Bytes + lane * kChunkBf16Bytes, r.rope);
  }
};

// Runs one warp over its tokens (token = warp, warp + step, ...), issuing the next token's
// loads before the current token's stores, so every lane keeps loads in flight.
template <class Codec>
__device__ __forceinline__ void walk_tokens(const Addressing& a, const Codec& codec) {
  int64_t token = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / kWarpSize;
  if (token >= a.num_tokens) return;
  Slot slot = slot_of(token, a.page_block_size);
  typename Codec::Regs cur;
  codec.load(slot, cur);
  for (;;) {
    const int64_t next = token + a.step_tokens;
    const Slot next_slot = slot.step(a);
    typename Codec::Regs nxt;
    if (next < a.num_tokens) codec.load(next_slot, nxt);
    codec.store(slot, cur);  // warp-uniform: the shuffles inside see full warps
    if (next >= a.num_tokens) return;
    cur = nxt;
    token = next;
    slot = next_slot;
  }
}

template <KVCacheLayout kLayout, int kBf16Align>
__global__ void __launch_bounds__(kThreadsPerCta, kQuantizeCtasPerSm)
    kv_quantize_kernel(const uint8_t* __restrict__ bf16, uint8_t* __restrict__ quant,
                       Addressing a) {
  __shared__ uint8_t table[kEncodeEntries];
  for (int i = threadIdx.x; i < kEncodeEntries; i += kThreadsPerCta) table[i] = encode_entry(i);
  __syncthreads();
  const int lane = threadIdx.x % kWarpSize;
  walk_tokens(a, Quantizer<kLayout, kBf16Align>{bf16, quant, table, a, lane});
}

template <KVCacheLayout kLayout, int kBf16Align>
__global__ void __launch_bounds__(kThreadsPerCta, kDequantizeCtasPerSm)
    kv_dequantize_kernel(const uint8_t* __restrict__ quant, uint8_t* __restrict__ bf16,
                         Addressing a) {
  __shared__ float table[kDecodeEntries];
  for (int i = threadIdx.x; i < kDecodeEntries; i += kThreadsPerCta) table[i] = decode_entry(i);
  __syncthreads();
  const int lane = threadIdx.x % kWarpSize;
  walk_tokens(a, Dequantizer<kLayout, kBf16Align>{quant, bf16, table, a, lane});
}

// ---- Launchers ------------------------------------------------------------------------------

namespace {

// Widest power-of-two access (<= 16 bytes) dividing the bf16 cache's pointer and the strides
// actually used (a size-1 dimension's stride is never applied, so it may be anything).
int bf16_alignment(const TensorView& cache, const KVCodecProblem& pb) {
  uint64_t bits = reinterpret_cast<uintptr_t>(cache.data) | kMaxAccessBytes;
  if (pb.num_blocks > 1) bits |= static_cast<uint64_t>(cache.stride[0] * kBf16Bytes);
  if (pb.page_block_size > 1) bits |= static_cast<uint64_t>(cache.stride[1] * kBf16Bytes);
  return static_cast<int>(bits & (~bits + 1));  // lowest set bit
}

struct Launch {
  dim3 grid;
  Addressing a;
};

// A persistent grid: as many CTAs as fit on the device at once, fewer for small caches.
Launch plan_launch(const TensorView& bf16_cache, const TensorView& quant_cache,
                   const KVCodecProblem& pb, int device, int ctas_per_sm) {
  // Validation promises these; the kernels' 16-byte FP8 accesses depend on them.
  if (reinterpret_cast<uintptr_t>(quant_cache.data) % kMaxAccessBytes != 0 ||
      pb.quant_block_stride_bytes % kMaxAccessBytes != 0)
    throw Error(ErrorKind::kValue,
                "flashmla::cuda::kv_codec: the FP8 cache must be 16-byte aligned (pointer and "
                "block stride)");
  const int64_t num_tokens = pb.num_blocks * pb.page_block_size;
  const int64_t needed = (num_tokens + kWarpsPerCta - 1) / kWarpsPerCta;
  const int64_t ctas = std::min<int64_t>(needed, int64_t{device_sm_count(device)} * ctas_per_sm);
  const int64_t step = ctas * kWarpsPerCta;  // one token per warp and step
  const Addressing a{num_tokens,
                     pb.page_block_size,
                     bf16_cache.stride[0] * kBf16Bytes,
                     bf16_cache.stride[1] * kBf16Bytes,
                     pb.quant_block_stride_bytes,
                     step,
                     step / pb.page_block_size,
                     static_cast<int>(step % pb.page_block_size)};
  return {dim3(static_cast<unsigned>(ctas)), a};
}

// Calls fn(layout constant, alignment constant) with the run-time choices as template values.
template <class Fn>
void dispatch(KVCacheLayout layout, int bf16_align, Fn&& fn) {
  auto with_layout = [&](auto align) {
    if (layout == KVCacheLayout::kV32)
      fn(std::integral_constant<KVCacheLayout, KVCacheLayout::kV32>{}, align);
    else
      fn(std::integral_constant<KVCacheLayout, KVCacheLayout::kModel1>{}, align);
  };
  switch (bf16_align) {
    case 16: return with_layout(std::integral_constant<int, 16>{});
    case 8: return with_layout(std::integral_constant<int, 8>{});
    case 4: return with_layout(std::integral_constant<int, 4>{});
    default: return with_layout(std::integral_constant<int, 2>{});
  }
}

}  // namespace

}  // namespace flashmla::cuda::kv_codec

namespace flashmla::cuda {

void kv_quantize(const KVQuantizeParams& p, const KVCodecProblem& pb, Stream stream) {
  using namespace kv_codec;
  if (pb.num_blocks * pb.page_block_size == 0) return;
  const int device = p.k_cache.device.index;
  const DeviceGuard guard(device);
  const Launch l = plan_launch(p.k_cache, p.quant_cache, pb, device, kQuantizeCtasPerSm);
  const auto* src = static_cast<const uint8_t*>(p.k_cache.data);
  auto* dst = static_cast<uint8_t*>(p.quant_cache.data);
  dispatch(pb.layout, bf16_alignment(p.k_cache, pb), [&](auto layout, auto align) {
    kv_quantize_kernel<decltype(layout)::value, decltype(align)::value>
        <<<l.grid, kThreadsPerCta, 0, stream>>>(src, dst, l.a);
  });
  FLASHMLA_CUDA_CHECK_LAUNCH("kv_quantize_kernel");
}

void kv_dequantize(const KVDequantizeParams& p, const KVCodecProblem& pb, Stream stream) {
  using namespace kv_codec;
  if (pb.num_blocks * pb.page_block_size == 0) return;
  const int device = p.quant_cache.device.index;
  const DeviceGuard guard(device);
  const Launch l = plan_launch(p.k_cache, p.quant_cache, pb, device, kDequantizeCtasPerSm);
  const auto* src = static_cast<const uint8_t*>(p.quant_cache.data);
  auto* dst = static_cast<uint8_t*>(p.k_cache.data);
  dispatch(pb.layout, bf16_alignment(p.k_cache, pb), [&](auto layout, auto align) {
    kv_dequantize_kernel<decltype(layout)::value, decltype(align)::value>
        <<<l.grid, kThreadsPerCta, 0, stream>>>(src, dst, l.a);
  });
  FLASHMLA_CUDA_CHECK_LAUNCH("kv_dequantize_kernel");
}

}  // namespace flashmla::cuda
