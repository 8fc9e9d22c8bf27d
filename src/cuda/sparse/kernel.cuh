// sm_90a sparse MLA attention over gathered keys (SPEC.md §4 sparse decode, §5 sparse prefill).
// Included by sparse_decode.cu and sparse_prefill.cu, which instantiate it with their gatherer
// (gather.cuh: bf16 rows, V3.2 or MODEL1 FP8 tokens).
//
// Grid: one CTA per (query token, kv head, tile of <= 64 query heads), the head tiles of a token
// adjacent; 256 threads = two consumer warpgroups in lockstep. By default no split over the
// keys: the production shapes have b * s_q * head tiles >= 2 CTAs per SM (docs/sparse-design.md;
// the split below is opt-in). A CTA
// loads its Q tile, then walks its selected keys in tiles of 64 (the main scope's, then the
// extra scope's; a scope's last tile is padded with invalid entries), double-buffered: while
// tile it is computed, tile it + 1's keys are in flight (gather.cuh), and tile it + 2's indices.
// Crossover (kPair: sparse decode with exactly two head tiles, FlashMLA's scheme; opt-in, measured
// 8-9 % slower than a CTA alone, docs/sparse-design.md): the two CTAs of a token form a cluster;
// each gathers and dequantizes half of every key tile into both CTAs' shared memory, and a
// cluster barrier instead of __syncthreads ends each tile.
// Split (kSplit; opt-in until measured, FLASHMLA_SPARSE_SPLIT): a cluster of 2^split_log2 CTAs
// shares one work item; each walks a contiguous part of its key tiles, then the partial results
// (unnormalised O, running max, row sums) fold into rank 0 through distributed shared memory
// (fold_split), which writes the output. No workspace and no second kernel.
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

#include <climits>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "cuda/common/attn_math.cuh"
#include "cuda/common/cuda_check.h"
#include "cuda/common/lockstep_tile.cuh"
#include "cuda/common/per_device_cache.h"
#include "cuda/common/sm90_ptx.cuh"
#include "cuda/common/wgmma_ops.cuh"
#include "cuda/cuda_backend.h"
#include "cuda/sparse/config.h"
#include "cuda/sparse/gather.cuh"
#include "cuda/sparse/params.h"
#include "cuda/sparse/split_plan.h"

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

// The epilogue: out / lse / max_logits of this thread's two rows (see the file header), with m
// the max the exponents were taken against and max_log2 the row max to report (both log2
// domain; the same but in the seesaw kernel, whose running max is lazy). In the accumulator
// layout a lane holds 2 columns of each 8-column group of its row; with 16-byte aligned out rows
// the quad exchanges values so that each lane stores 16 contiguous bytes.
__device__ __forceinline__ void write_rows(const GatherParams& p, const float (&o)[128],
                                           const float (&m)[2], const float (&max_log2)[2],
                                           const float* row_sum_smem,
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
        p.max_logits[ml_offset + head * p.ml_stride_head] =
            empty ? -INFINITY : max_log2[h] * kLn2;
    }
  }
}

// The lockstep step's scores for one key tile: S_w = Q K[32 wg, 32 wg + 32)^T, scaled into the
// log2 domain with the stage's bias row added (invalid keys at -inf), and the quad-reduced row
// maxima in mx.
template <int kQAtoms>
__device__ __forceinline__ void lockstep_scores(float (&s)[16], float (&mx)[2], float scale_log2,
                                                uint64_t desc_q, uint32_t stage_addr,
                                                const float* stage_bias, int wg, int quad_col) {
  lockstep::qk_half<__nv_bfloat16, kQAtoms>(
      s, desc_q, sm90::make_smem_desc(stage_addr + wg * kTokensPerWarpgroup * 128, 16, 1024));
  const float* bias = stage_bias + wg * kTokensPerWarpgroup + 2 * quad_col;
  mx[0] = mx[1] = -INFINITY;
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float& x = s[4 * j + e];
      x = fmaf(x, scale_log2, bias[8 * j + (e & 1)]);
      mx[e / 2] = fmaxf(mx[e / 2], x);
    }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 2));
  }
}

// One work item: (query token, kv head, tile of <= 64 query heads) and the selected keys it
// attends to, each scope's row of indices and the entries that count (scalars, not arrays: a
// runtime-indexed array would live in local memory). Resolved alike by every kernel and role.
struct WorkItem {
  int64_t outer, inner;  // the query token = outer * inner_count + inner
  int kvh, tile;
  int row_base, valid_rows, head0;
  const int32_t* idx_row0;
  const int32_t* idx_row1;
  int count0, count1;
  int tiles0, n_tiles;   // key tiles of the main scope, of both

  // Block -> item; the head tiles of a token are adjacent blocks, so the second one's gathers of
  // the same keys tend to hit L2.
  __device__ __forceinline__ WorkItem(const GatherParams& p, uint32_t blk) {
    tile = static_cast<int>(blk % static_cast<uint32_t>(p.head_tiles));
    const uint32_t rest = blk / static_cast<uint32_t>(p.head_tiles);
    kvh = static_cast<int>(rest % static_cast<uint32_t>(p.h_kv));
    const uint32_t token = rest / static_cast<uint32_t>(p.h_kv);
    outer = p.inner_div.div(token);
    inner = token - outer * p.inner;
    row_base = tile * kRowsPerTile;
    valid_rows = min(kRowsPerTile, p.group - row_base);
    head0 = kvh * p.group + row_base;
    count0 = count1 = 0;
    idx_row0 = scope_row(p.scope[0], &count0);
    idx_row1 = p.num_scopes > 1 ? scope_row(p.scope[1], &count1) : idx_row0;
    tiles0 = (count0 + kTokensPerTile - 1) / kTokensPerTile;
    n_tiles = tiles0 + (count1 + kTokensPerTile - 1) / kTokensPerTile;
  }

  __device__ __forceinline__ const int32_t* scope_row(const Scope& sc, int* count) const {
    int n = sc.topk;
    if (sc.topk_length != nullptr) {
      const int len = __ldg(sc.topk_length + outer * sc.topk_length_stride);
      n = len < 0 ? 0 : (len < n ? len : n);  // device lengths are not checked on the host
    }
    *count = n;
    return sc.indices + outer * sc.idx_stride_outer + inner * sc.idx_stride_inner +
           kvh * sc.idx_stride_kvh;
  }
  // Entry `key` of key tile `it`: its index, -1 past the scope's count.
  __device__ __forceinline__ int32_t index(int it, int key) const {
    const bool first = it < tiles0;
    const int e = (first ? it : it - tiles0) * kTokensPerTile + key;
    return e < (first ? count0 : count1) ? __ldg((first ? idx_row0 : idx_row1) + e) : -1;
  }
  __device__ __forceinline__ const Scope& scope(const GatherParams& p, int it) const {
    return it < tiles0 ? p.scope[0] : p.scope[1];
  }
  __device__ __forceinline__ int64_t q_offset(const GatherParams& p) const {
    return outer * p.q_stride_outer + inner * p.q_stride_inner + head0 * p.q_stride_head;
  }
};

// write_rows for a work item's rows and outputs.
__device__ __forceinline__ void write_item_rows(const GatherParams& p, const WorkItem& item,
                                                const float (&o)[128], const float (&m)[2],
                                                const float (&max_log2)[2],
                                                const float* row_sum_smem,
                                                const int (&my_row)[2], int wg, int quad_col) {
  write_rows(p, o, m, max_log2, row_sum_smem, my_row, item.valid_rows, item.head0,
             item.outer * p.out_stride_outer + item.inner * p.out_stride_inner,
             item.outer * p.lse_stride_outer + item.inner * p.lse_stride_inner,
             item.outer * p.ml_stride_outer + item.inner * p.ml_stride_inner, wg, quad_col);
}

// The split kernel's fold: the partial states (o, m, l) of a cluster's CTAs, each over its own
// part of one work item's keys, merge into rank 0 in log2(split) rounds. In round d (1, 2, 4),
// rank r with r % 2d == d stores its state into rank r - d's shared memory (the Q and KV stage
// region, SmemPlan::kFold*), which folds it into its own: with M = max(m_a, m_b), o = o_a
// 2^(m_a - M) + o_b 2^(m_b - M), likewise l. Each thread holds the same accumulator elements in
// every CTA, so a thread folds its peer thread's values only. Every CTA takes part in every
// cluster barrier; the caller has finished all reads of the Q and KV stages.
template <int kDqk>
__device__ __forceinline__ void fold_split(float (&o)[128], float (&m)[2], float (&l)[2],
                                           uint8_t* smem, uint32_t rank, int split_log2) {
  using Plan = SmemPlan<kDqk>;
  const int tid = threadIdx.x;
  const uint32_t base = sm90::smem_addr(smem);
  for (int r = 0; r < split_log2; ++r) {
    const uint32_t d = 1u << r;
    // The receivers' regions are free: every CTA has left its key loop (round 0) or folded the
    // previous round's state.
    sm90::cluster_sync();
    if ((rank & (2 * d - 1)) == d) {
      const uint32_t dst = sm90::map_shared_rank(base, rank - d);
#pragma unroll
      for (int j = 0; j < 32; ++j)
        sm90::st_cluster_16(dst + Plan::kFoldO + (j * kThreads + tid) * 16,
                            make_uint4(__float_as_uint(o[4 * j]), __float_as_uint(o[4 * j + 1]),
                                       __float_as_uint(o[4 * j + 2]),
                                       __float_as_uint(o[4 * j + 3])));
      sm90::st_cluster_16(dst + Plan::kFoldStats + tid * 16,
                          make_uint4(__float_as_uint(m[0]), __float_as_uint(m[1]),
                                     __float_as_uint(l[0]), __float_as_uint(l[1])));
    }
    sm90::cluster_sync();  // the senders' stores are visible
    if ((rank & (2 * d - 1)) == 0) {
      const float4* fold_o = reinterpret_cast<const float4*>(smem + Plan::kFoldO);
      const float4 st = reinterpret_cast<const float4*>(smem + Plan::kFoldStats)[tid];
      const float peer_m[2] = {st.x, st.y}, peer_l[2] = {st.z, st.w};
      float mine[2], theirs[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float m_new = fmaxf(m[h], peer_m[h]);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // both empty: scales 0, no NaN
        mine[h] = fast_exp2(m[h] - m_use);
        theirs[h] = fast_exp2(peer_m[h] - m_use);
        m[h] = m_new;
        l[h] = l[h] * mine[h] + peer_l[h] * theirs[h];
      }
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        const float4 v = fold_o[j * kThreads + tid];
        o[4 * j + 0] = o[4 * j + 0] * mine[0] + v.x * theirs[0];
        o[4 * j + 1] = o[4 * j + 1] * mine[0] + v.y * theirs[0];
        o[4 * j + 2] = o[4 * j + 2] * mine[1] + v.z * theirs[1];
        o[4 * j + 3] = o[4 * j + 3] * mine[1] + v.w * theirs[1];
      }
    }
  }
}

template <typename Gather, int kDqk, bool kPair, bool kSplit = false>
__global__ void __launch_bounds__(kThreads, 1)
    sparse_kernel(const __grid_constant__ GatherParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  static_assert(Gather::kThreadsPerKey == (kPair ? kThreadsPerKeyPair : kThreadsPerKeySolo),
                "the gatherer splits keys for the other mode");
  static_assert(!(kPair && kSplit), "the crossover pair and the split are separate kernels");
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

  // Split: a work item's 2^split_log2 CTAs are adjacent blocks, one cluster (its rank = the
  // block's place in it).
  const uint32_t blk = kSplit ? blockIdx.x >> p.split_log2 : blockIdx.x;
  const uint32_t rank = kSplit ? blockIdx.x & ((1u << p.split_log2) - 1u) : 0u;
  const WorkItem item(p, blk);
  const int tile = item.tile, kvh = item.kvh, valid_rows = item.valid_rows;
  const int n_tiles = item.n_tiles;
  // This CTA's key tiles [t_begin, t_end): all of them, or the split's rank-th contiguous part.
  const int t_begin = kSplit ? static_cast<int>((n_tiles * rank) >> p.split_log2) : 0;
  const int t_end = kSplit ? static_cast<int>((n_tiles * (rank + 1)) >> p.split_log2) : n_tiles;
  // The key this thread gathers in every tile: in a crossover pair, head tile r's CTA gathers
  // keys [32 r, 32 r + 32) (the cluster's CTAs are the token's head tiles, rank = tile).
  constexpr int kTpk = Gather::kThreadsPerKey;
  const KeyLane gather_lane{(kPair ? tile * kPairKeys : 0) + tid / kTpk, tid % kTpk};
  StageWriter<kPair> writer{0};
  if constexpr (kPair)
    writer.peer_delta = sm90::map_shared_rank(sm90::smem_addr(smem), tile ^ 1) -
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
  // This thread's entry of tile `it`.
  auto fetch_index = [&](int it) -> int32_t { return item.index(it, gather_lane.key); };
  auto scope_of = [&](int it) -> const Scope& { return item.scope(p, it); };

  load_q_tile<kDqk>(p, item.q_offset(p), valid_rows, q_addr);
  typename Gather::Regs regs;
  int32_t next_idx = t_end > t_begin ? fetch_index(t_begin) : -1;
  if (t_end > t_begin) {
    Gather::begin(scope_of(t_begin), kvh, next_idx, gather_lane, k_addr, bias_smem, regs);
    next_idx = t_end > t_begin + 1 ? fetch_index(t_begin + 1) : -1;
  }
  // A paired CTA writes into its peer's shared memory only once the peer runs (both CTAs of a
  // token see the same indices, so they agree on n_tiles and on every barrier below).
  if constexpr (kPair) sm90::cluster_sync();
  if (t_end > t_begin) Gather::finish(k_addr, bias_smem, regs, gather_lane, writer);
  sm90::cp_async_commit();
  end_tile();

  const uint64_t desc_q = sm90::make_smem_desc(q_addr, 16, 1024);
  const uint64_t desc_p = sm90::make_smem_desc(p_addr, 16, 1024);
  float o[128];
#pragma unroll
  for (int e = 0; e < 128; ++e) o[e] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // running max, log2 domain
  float l[2] = {0.0f, 0.0f};            // this thread's share of the row sums

  for (int it = t_begin; it < t_end; ++it) {
    const int stage = (it - t_begin) & 1;
    const uint32_t stage_addr = k_addr + stage * Plan::kTileBytes;
    const uint32_t next_addr = k_addr + (stage ^ 1) * Plan::kTileBytes;
    float* next_bias = bias_smem + (stage ^ 1) * kTokensPerTile;
    // Tile it + 1's keys in flight (its stage was last read by tile it - 1, finished before the
    // barrier that ended it), tile it + 2's index behind them.
    if (it + 1 < t_end) {
      Gather::begin(scope_of(it + 1), kvh, next_idx, gather_lane, next_addr, next_bias, regs);
      next_idx = it + 2 < t_end ? fetch_index(it + 2) : -1;
    }
    sm90::cp_async_commit();

    float s[16], mx[2];
    lockstep_scores<kQAtoms>(s, mx, p.scale_log2, desc_q, stage_addr,
                             bias_smem + stage * kTokensPerTile, wg, quad_col);
    lockstep::softmax_pv<__nv_bfloat16, false>(s, mx, o, m, l, row_max_smem, p_smem, desc_p,
                                               stage_addr, wg, quad_col, my_row);

    // Tile it + 1's stage completed (FP8: dequantized from the registers) while this tile's
    // P V runs on the tensor cores (it reads the other stage), visible to the tensor cores and
    // to every thread after the barrier.
    if (it + 1 < t_end) Gather::finish(next_addr, next_bias, regs, gather_lane, writer);
    lockstep::wait_pv(o);
    end_tile();
  }

  if constexpr (kSplit) {
    fold_split<kDqk>(o, m, l, smem, rank, p.split_log2);
    if (rank != 0) return;  // rank 0 holds the item's whole result
  }
  lockstep::publish_row_sums(l, row_sum_smem, wg, quad_col, my_row);
  __syncthreads();
  write_item_rows(p, item, o, m, m, row_sum_smem, my_row, wg, quad_col);
#endif
}

// The launch configuration of every sparse kernel: one CTA per (query token, kv head, head
// tile), times 2^split_log2 for the split kernel; a cluster of `cluster` CTAs (1: none).
struct LaunchShape {
  int64_t blocks;
  unsigned cluster;
};

template <typename Kernel>
cudaLaunchConfig_t launch_config(Kernel kernel, const LaunchShape& shape, int smem_bytes,
                                 cudaStream_t stream, cudaLaunchAttribute* attr) {
  FLASHMLA_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(shape.blocks));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = static_cast<size_t>(smem_bytes);
  cfg.stream = stream;
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = shape.cluster;
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = shape.cluster > 1 ? 1 : 0;
  return cfg;
}

// Launches `kernel` (a kernel of one CTA per work item and no cluster) with `threads` threads
// and `smem_bytes` of dynamic shared memory.
template <typename Kernel>
void launch_per_item(Kernel kernel, const GatherParams& p, int threads, int smem_bytes,
                     cudaStream_t stream) {
  const int64_t items = p.num_tokens * p.h_kv * p.head_tiles;
  if (items == 0) return;
  cudaLaunchAttribute attr{};
  cudaLaunchConfig_t cfg = launch_config(kernel, LaunchShape{items, 1}, smem_bytes, stream, &attr);
  cfg.blockDim = dim3(threads);
  FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, p));
}

// Launches the kernel over every (query token, kv head, head tile); kPair (exactly two head
// tiles) in clusters of a token's two CTAs, kSplit in clusters of 2^p.split_log2 CTAs per item.
template <typename Gather, int kDqk, bool kPair = false, bool kSplit = false>
void launch(const GatherParams& p, cudaStream_t stream) {
  auto* kernel = &sparse_kernel<Gather, kDqk, kPair, kSplit>;
  const int64_t items = p.num_tokens * p.h_kv * p.head_tiles;
  if (items == 0) return;
  LaunchShape shape{items, 1};
  if constexpr (kPair) {
    if (p.head_tiles != 2)
      throw std::logic_error("sparse crossover kernel launched without two head tiles");
    shape.cluster = 2;
  }
  if constexpr (kSplit) {
    if (p.split_log2 < 1 || p.split_log2 > kMaxSplitLog2)
      throw std::logic_error("sparse split kernel launched without a split of 2 to 8");
    shape.blocks = items << p.split_log2;
    shape.cluster = 1u << p.split_log2;
  }
  cudaLaunchAttribute attr{};
  const cudaLaunchConfig_t cfg =
      launch_config(kernel, shape, SmemPlan<kDqk>::kBytes, stream, &attr);
  if (shape.cluster == 1) {  // the plain kernel: the triple-chevron launch, as measured
    kernel<<<cfg.gridDim, cfg.blockDim, cfg.dynamicSmemBytes, stream>>>(p);
    FLASHMLA_CUDA_CHECK_LAUNCH("sparse attention kernel");
  } else {
    FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, p));
  }
}

// How many clusters of 2^split_log2 CTAs of the split kernel (CTAs of the plain kernel for
// split_log2 0) the current device runs at once: the driver's occupancy figures, cached per
// device (stored plus one: the cache takes 0 for "not queried").
template <typename Gather, int kDqk>
int resident_clusters(int split_log2) {
  static PerDeviceCache cache[kMaxSplitLog2 + 1];
  int device = 0;
  FLASHMLA_CUDA_CHECK(cudaGetDevice(&device));
  return cache[split_log2].get(device, [split_log2](int dev) {
    constexpr int kSmem = SmemPlan<kDqk>::kBytes;
    int resident = 0;
    if (split_log2 == 0) {
      auto* kernel = &sparse_kernel<Gather, kDqk, false, false>;
      FLASHMLA_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
      int per_sm = 0;
      FLASHMLA_CUDA_CHECK(
          cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, kSmem));
      resident = per_sm * device_sm_count(dev);
    } else {
      auto* kernel = &sparse_kernel<Gather, kDqk, false, true>;
      const LaunchShape shape{int64_t{1} << split_log2, 1u << split_log2};
      cudaLaunchAttribute attr{};
      cudaLaunchConfig_t cfg = launch_config(kernel, shape, kSmem, nullptr, &attr);
      // A size the device cannot co-schedule may be refused rather than counted as 0: either
      // way the planner skips it.
      if (cudaOccupancyMaxActiveClusters(&resident, kernel, &cfg) != cudaSuccess) {
        cudaGetLastError();  // leave no error behind for the next check
        resident = 0;
      }
    }
    return resident + 1;
  }) - 1;
}

// Launches the plain kernel or the split one. `split_request`: 1 none, 2 / 4 / 8 that split
// (fewer when an item has fewer key tiles: every CTA gets at least one), 0 the split
// choose_split predicts fastest from the device's resident clusters. `tiles` is an item's most
// key tiles.
template <typename Gather, int kDqk>
void launch_split(GatherParams p, int split_request, int tiles, cudaStream_t stream) {
  const int64_t items = p.num_tokens * p.h_kv * p.head_tiles;
  int split_log2 = 0;
  if (split_request == 0 && items > 0) {
    int clusters[kMaxSplitLog2 + 1];
    for (int s = 0; s <= kMaxSplitLog2; ++s) clusters[s] = resident_clusters<Gather, kDqk>(s);
    split_log2 = choose_split_log2(items, tiles, clusters);
  } else {
    while ((2 << split_log2) <= split_request && split_log2 < kMaxSplitLog2 &&
           (2 << split_log2) <= tiles)
      ++split_log2;
  }
  // The split grid must fit the launch limit too (set_common checked the plain one).
  while (split_log2 > 0 && (items << split_log2) > INT_MAX) --split_log2;
  p.split_log2 = split_log2;
  if (split_log2 == 0) launch<Gather, kDqk>(p, stream);
  else launch<Gather, kDqk, false, true>(p, stream);
}

}  // namespace flashmla::cuda::sparse
