// sm_90a sparse MLA attention over gathered keys (SPEC.md §4 sparse decode, §5 sparse prefill).
// Included by sparse_decode.cu and sparse_prefill.cu, which instantiate it with their gatherer
// (gather.cuh: bf16 rows, V3.2 or MODEL1 FP8 tokens).
//
// Grid: one CTA per (query token, kv head, tile of <= 64 query heads), the head tiles of a token
// adjacent; 256 threads = two consumer warpgroups in lockstep. No split over the keys: the
// production shapes have b * s_q * head tiles >= 2 CTAs per SM (docs/sparse-design.md). A CTA
// loads its Q tile, then walks its selected keys in tiles of 64 (the main scope's, then the
// extra scope's; a scope's last tile is padded with invalid entries), double-buffered: while
// tile it is computed, tile it + 1's keys are in flight (gather.cuh), and tile it + 2's indices.
// Crossover (kPair: sparse decode with exactly two head tiles, FlashMLA's scheme; opt-in, measured
// 8-9 % slower than a CTA alone, docs/sparse-design.md): the two CTAs of a token form a cluster;
// each gathers and dequantizes half of every key tile into both CTAs' shared memory, and a
// cluster barrier instead of __syncthreads ends each tile.
// Per tile, as in the dense lockstep kernel:
//   S_w   = Q K[32 w, 32 w + 32)^T          wgmma m64n32k16 x (d_qk / 16), warpgroup w
//   S    += bias (-inf for invalid keys); row max over both halves (shared memory)
//   P     -> shared memory (bf16, 128-byte swizzle), both halves; online softmax in log2 domain
//   O_w  += P V[:, 256 w, 256 w + 256)      wgmma m64n256k16 x 4, V = the tile's first 512 dims
// Epilogue: out = O / l (times the sink factor), lse (natural log; +inf when nothing was
// attended, out = 0 then), max_logits (prefill; -inf when nothing was attended).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "cuda/common/attn_math.cuh"
#include "cuda/common/cuda_check.h"
#include "cuda/common/lockstep_tile.cuh"
#include "cuda/common/sm90_ptx.cuh"
#include "cuda/common/wgmma_ops.cuh"
#include "cuda/sparse/config.h"
#include "cuda/sparse/gather.cuh"
#include "cuda/sparse/params.h"

namespace flashmla::cuda::sparse {

// The lockstep step (cuda/common/lockstep_tile.cuh) is written for this tile shape.
static_assert(lockstep::same_tile_shape(kRowsPerTile, kTokensPerTile, kTokensPerWarpgroup,
                                        kThreads, kAtomBytes, kBarRowMax, kBarP),
              "sparse tiles differ from the lockstep step's");

// Loads the 64-row Q tile of (token, kv head, head tile); rows past `valid_rows` are zeros. Four
// threads per row, reading 64 bytes side by side: cp.async copies, or, for q rows that are not
// 16-byte aligned (a strided view), 2-byte loads and shared-memory stores (once per CTA).
template <int kDqk>
__device__ __forceinline__ void load_q_tile(const GatherParams& p, int64_t q_offset,
                                            int valid_rows, uint32_t q_addr) {
  constexpr int kChunksPerRow = kDqk / kChunkElems;
  constexpr int kThreadsPerRow = kThreads / kRowsPerTile;
  static_assert(kChunksPerRow % kThreadsPerRow == 0, "every thread issues the same copies");
  const int row = static_cast<int>(threadIdx.x) / kThreadsPerRow;
  const int first = static_cast<int>(threadIdx.x) % kThreadsPerRow;
  const uint8_t* src = static_cast<const uint8_t*>(p.q);
  const bool valid = row < valid_rows;
  if (valid) src += (q_offset + row * p.q_stride_head) * 2;
  if (p.q_vec16) {
#pragma unroll 6
    for (int k = 0; k < kChunksPerRow / kThreadsPerRow; ++k) {
      const int chunk = first + k * kThreadsPerRow;
      sm90::cp_async_16(q_addr + stage_offset(row, chunk), valid ? src + chunk * 16 : src,
                        valid ? 16 : 0);
    }
    return;
  }
  const uint16_t* src16 = reinterpret_cast<const uint16_t*>(src);
  for (int k = 0; k < kChunksPerRow / kThreadsPerRow; ++k) {
    const int chunk = first + k * kThreadsPerRow;
    sm90::st_shared_16(q_addr + stage_offset(row, chunk),
                       valid ? load_unaligned16(src16 + chunk * kChunkElems)
                             : make_uint4(0, 0, 0, 0));
  }
}

// The epilogue: out / lse / max_logits of this thread's two rows (see the file header). In the
// accumulator layout a lane holds 2 columns of each 8-column group of its row; with 16-byte
// aligned out rows the quad exchanges values so that each lane stores 16 contiguous bytes.
__device__ __forceinline__ void write_rows(const GatherParams& p, const float (&o)[128],
                                           const float (&m)[2], const float* row_sum_smem,
                                           const int (&my_row)[2], int valid_rows, int head0,
                                           int64_t out_offset, int64_t lse_offset,
                                           int64_t ml_offset, int wg, int quad_col) {
  const bool stat_lane = wg == 0 && quad_col == 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = my_row[h];
    const int head = head0 + row;
    const float sum = row_sum_smem[row] + row_sum_smem[kRowsPerTile + row];
    const bool empty = !(sum > 0.0f);
    const float lse = empty ? INFINITY : (m[h] + fast_log2(sum)) * kLn2;
    float factor = empty ? 0.0f : fast_rcp(sum);
    if (p.attn_sink != nullptr && !empty && row < valid_rows) {
      // exp(+inf) = inf makes an infinite sink give exactly 0.
      factor *= 1.0f / (1.0f + expf(p.attn_sink[head * p.sink_stride] - lse));
    }
    __nv_bfloat16* out = static_cast<__nv_bfloat16*>(p.out) + out_offset +
                         head * p.out_stride_head + wg * kDimVPerWarpgroup;
    if (p.out_vec16) {
      uint32_t v[8][4];  // column groups 4 g .. 4 g + 3: lane q stores group 4 g + q
#pragma unroll
      for (int g = 0; g < 8; ++g) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int e = 4 * (4 * g + k) + 2 * h;
          v[g][k] = pack2<__nv_bfloat16>(o[e] * factor, o[e + 1] * factor);
        }
        quad_transpose(v[g], quad_col);
      }
      if (row < valid_rows) {
#pragma unroll
        for (int g = 0; g < 8; ++g)
          *reinterpret_cast<uint4*>(out + 8 * (4 * g + quad_col)) =
              make_uint4(v[g][0], v[g][1], v[g][2], v[g][3]);
      }
    } else if (row < valid_rows && p.out_vec4) {
#pragma unroll
      for (int j = 0; j < 32; ++j)
        *reinterpret_cast<uint32_t*>(out + 2 * quad_col + 8 * j) =
            pack2<__nv_bfloat16>(o[4 * j + 2 * h] * factor, o[4 * j + 2 * h + 1] * factor);
    } else if (row < valid_rows) {  // rows only 2-byte aligned (a strided view)
      for (int j = 0; j < 32; ++j) {
        out[2 * quad_col + 8 * j] = __float2bfloat16_rn(o[4 * j + 2 * h] * factor);
        out[2 * quad_col + 8 * j + 1] = __float2bfloat16_rn(o[4 * j + 2 * h + 1] * factor);
      }
    }
    if (row < valid_rows && stat_lane) {
      p.lse[lse_offset + head * p.lse_stride_head] = lse;
      if (p.max_logits != nullptr)
        p.max_logits[ml_offset + head * p.ml_stride_head] = empty ? -INFINITY : m[h] * kLn2;
    }
  }
}

template <typename Gather, int kDqk, bool kPair>
__global__ void __launch_bounds__(kThreads, 1)
    sparse_kernel(const __grid_constant__ GatherParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  static_assert(Gather::kThreadsPerKey == (kPair ? kThreadsPerKeyPair : kThreadsPerKeySolo),
                "the gatherer splits keys for the other mode");
  using Plan = SmemPlan<kDqk>;
  constexpr int kQAtoms = Plan::kQAtoms;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = align_smem_1024(smem_raw);
  float* row_max_smem = reinterpret_cast<float*>(smem + Plan::kRowMax);  // [2][64]
  float* row_sum_smem = reinterpret_cast<float*>(smem + Plan::kRowSum);  // [2][64]
  float* bias_smem = reinterpret_cast<float*>(smem + Plan::kBias);       // [stage][64]
  const uint32_t q_addr = sm90::smem_addr(smem + Plan::kQ);
  const uint32_t k_addr = sm90::smem_addr(smem + Plan::kK);
  const uint32_t p_addr = sm90::smem_addr(smem + Plan::kP);
  uint8_t* p_smem = smem + Plan::kP;

  const int tid = threadIdx.x;
  const int wg = tid / 128;                 // warpgroup: key half of S, column half of O
  const int warp = (tid / 32) % 4;          // warp in warpgroup: rows [16 warp, 16 warp + 16)
  const int lane = tid % 32;
  const int quad_row = lane / 4;            // accumulator layout: rows g and g + 8,
  const int quad_col = lane % 4;            //   columns 8 j + 2 t + {0, 1}
  const int my_row[2] = {16 * warp + quad_row, 16 * warp + quad_row + 8};

  // Block -> (token, kv head, head tile); the head tiles of a token are adjacent blocks, so the
  // second one's gathers of the same keys tend to hit L2.
  const uint32_t blk = blockIdx.x;
  const uint32_t tile = blk % static_cast<uint32_t>(p.head_tiles);
  const uint32_t rest = blk / static_cast<uint32_t>(p.head_tiles);
  const int kvh = static_cast<int>(rest % static_cast<uint32_t>(p.h_kv));
  const uint32_t token = rest / static_cast<uint32_t>(p.h_kv);
  const int64_t outer = p.inner_div.div(token);
  const int64_t inner = token - outer * p.inner;
  const int row_base = static_cast<int>(tile) * kRowsPerTile;
  const int valid_rows = min(kRowsPerTile, p.group - row_base);
  const int head0 = kvh * p.group + row_base;

  // Each scope's row of indices for this (token, kv head) and the entries that count (scalars,
  // not arrays: a runtime-indexed array would live in local memory).
  auto scope_row = [&](const Scope& sc, int* count) -> const int32_t* {
    int n = sc.topk;
    if (sc.topk_length != nullptr) {
      const int len = __ldg(sc.topk_length + outer * sc.topk_length_stride);
      n = len < 0 ? 0 : (len < n ? len : n);  // device lengths are not checked on the host
    }
    *count = n;
    return sc.indices + outer * sc.idx_stride_outer + inner * sc.idx_stride_inner +
           kvh * sc.idx_stride_kvh;
  };
  int count0 = 0, count1 = 0;
  const int32_t* idx_row0 = scope_row(p.scope[0], &count0);
  const int32_t* idx_row1 = p.num_scopes > 1 ? scope_row(p.scope[1], &count1) : idx_row0;
  const int tiles0 = (count0 + kTokensPerTile - 1) / kTokensPerTile;
  const int n_tiles = tiles0 + (count1 + kTokensPerTile - 1) / kTokensPerTile;
  // The key this thread gathers in every tile: in a crossover pair, head tile r's CTA gathers
  // keys [32 r, 32 r + 32) (the cluster's CTAs are the token's head tiles, rank = tile).
  constexpr int kTpk = Gather::kThreadsPerKey;
  const KeyLane gather_lane{(kPair ? static_cast<int>(tile) * kPairKeys : 0) + tid / kTpk,
                            tid % kTpk};
  StageWriter<kPair> writer{0};
  if constexpr (kPair)
    writer.peer_delta = sm90::map_shared_rank(sm90::smem_addr(smem), tile ^ 1u) -
                        sm90::smem_addr(smem);
  // Ends a tile: this CTA's (and, paired, the peer's) stage writes visible to both warpgroups
  // and to the tensor cores.
  auto end_tile = [] {
    sm90::cp_async_wait<0>();
    if constexpr (kPair) {
      sm90::fence_proxy_async_cluster();
      sm90::cluster_sync();
    } else {
      sm90::fence_proxy_async();
      __syncthreads();
    }
  };
  // This thread's entry of tile `it`: its index, -1 past the scope's count.
  const int my_key = gather_lane.key;
  auto fetch_index = [&](int it) -> int32_t {
    const bool first = it < tiles0;
    const int e = (first ? it : it - tiles0) * kTokensPerTile + my_key;
    return e < (first ? count0 : count1) ? __ldg((first ? idx_row0 : idx_row1) + e) : -1;
  };
  auto scope_of = [&](int it) -> const Scope& { return it < tiles0 ? p.scope[0] : p.scope[1]; };

  load_q_tile<kDqk>(p,
                    outer * p.q_stride_outer + inner * p.q_stride_inner + head0 * p.q_stride_head,
                    valid_rows, q_addr);
  typename Gather::Regs regs;
  int32_t next_idx = n_tiles > 0 ? fetch_index(0) : -1;
  if (n_tiles > 0) {
    Gather::begin(scope_of(0), kvh, next_idx, gather_lane, k_addr, bias_smem, regs);
    next_idx = n_tiles > 1 ? fetch_index(1) : -1;
  }
  // A paired CTA writes into its peer's shared memory only once the peer runs (both CTAs of a
  // token see the same indices, so they agree on n_tiles and on every barrier below).
  if constexpr (kPair) sm90::cluster_sync();
  if (n_tiles > 0) Gather::finish(k_addr, bias_smem, regs, gather_lane, writer);
  sm90::cp_async_commit();
  end_tile();

  const uint64_t desc_q = sm90::make_smem_desc(q_addr, 16, 1024);
  const uint64_t desc_p = sm90::make_smem_desc(p_addr, 16, 1024);
  float o[128];
#pragma unroll
  for (int e = 0; e < 128; ++e) o[e] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // running max, log2 domain
  float l[2] = {0.0f, 0.0f};            // this thread's share of the row sums

  for (int it = 0; it < n_tiles; ++it) {
    const int stage = it & 1;
    const uint32_t stage_addr = k_addr + stage * Plan::kTileBytes;
    const uint32_t next_addr = k_addr + (stage ^ 1) * Plan::kTileBytes;
    float* next_bias = bias_smem + (stage ^ 1) * kTokensPerTile;
    // Tile it + 1's keys in flight (its stage was last read by tile it - 1, finished before the
    // barrier that ended it), tile it + 2's index behind them.
    if (it + 1 < n_tiles) {
      Gather::begin(scope_of(it + 1), kvh, next_idx, gather_lane, next_addr, next_bias, regs);
      next_idx = it + 2 < n_tiles ? fetch_index(it + 2) : -1;
    }
    sm90::cp_async_commit();

    // S_w = Q K[32 wg, 32 wg + 32)^T, scaled into the log2 domain, invalid keys at -inf.
    float s[16];
    lockstep::qk_half<__nv_bfloat16, kQAtoms>(s, desc_q,
                     sm90::make_smem_desc(stage_addr + wg * kTokensPerWarpgroup * 128, 16, 1024));
    const float* bias =
        bias_smem + stage * kTokensPerTile + wg * kTokensPerWarpgroup + 2 * quad_col;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float& x = s[4 * j + e];
        x = fmaf(x, p.scale_log2, bias[8 * j + (e & 1)]);
        mx[e / 2] = fmaxf(mx[e / 2], x);
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 2));
    }
    lockstep::softmax_pv<__nv_bfloat16, false>(s, mx, o, m, l, row_max_smem, p_smem, desc_p,
                                               stage_addr, wg, quad_col, my_row);

    // Tile it + 1's stage completed (FP8: dequantized from the registers) while this tile's
    // P V runs on the tensor cores (it reads the other stage), visible to the tensor cores and
    // to every thread after the barrier.
    if (it + 1 < n_tiles) Gather::finish(next_addr, next_bias, regs, gather_lane, writer);
    lockstep::wait_pv(o);
    end_tile();
  }

  lockstep::publish_row_sums(l, row_sum_smem, wg, quad_col, my_row);
  __syncthreads();
  write_rows(p, o, m, row_sum_smem, my_row, valid_rows, head0,
             outer * p.out_stride_outer + inner * p.out_stride_inner,
             outer * p.lse_stride_outer + inner * p.lse_stride_inner,
             outer * p.ml_stride_outer + inner * p.ml_stride_inner, wg, quad_col);
#endif
}

// Launches the kernel over every (query token, kv head, head tile); kPair (exactly two head
// tiles) in clusters of a token's two CTAs.
template <typename Gather, int kDqk, bool kPair = false>
void launch(const GatherParams& p, cudaStream_t stream) {
  auto* kernel = &sparse_kernel<Gather, kDqk, kPair>;
  constexpr int kSmem = SmemPlan<kDqk>::kBytes;
  FLASHMLA_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const int64_t blocks = p.num_tokens * p.h_kv * p.head_tiles;
  if (blocks == 0) return;
  if constexpr (!kPair) {
    kernel<<<static_cast<unsigned>(blocks), kThreads, kSmem, stream>>>(p);
    FLASHMLA_CUDA_CHECK_LAUNCH("sparse attention kernel");
  } else {
    if (p.head_tiles != 2)
      throw std::logic_error("sparse crossover kernel launched without two head tiles");
    cudaLaunchAttribute cluster{};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = 2;
    cluster.val.clusterDim.y = 1;
    cluster.val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(blocks));
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = kSmem;
    cfg.stream = stream;
    cfg.attrs = &cluster;
    cfg.numAttrs = 1;
    FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, p));
  }
}

}  // namespace flashmla::cuda::sparse
