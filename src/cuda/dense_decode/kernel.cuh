// sm_90a dense MLA decode, split-KV main kernels (SPEC.md §2). Included only by
// instantiations/*.cu. This file: the loaders (TMA tiles, cp.async gathers, Q), the epilogue, the
// lockstep kernel and the launcher; kernel_seesaw.cuh and kernel_pair.cuh: the two kernels of the
// TMA path (page sizes that are multiples of 64).
//
// Grid (q_tiles, h_kv, num_parts); 256 threads = two consumer warpgroups. A CTA walks the chunks
// of its part (decode_schedule.h); for each chunk it loads its 64-row Q tile, then streams the
// chunk's 64-token KV tiles through shared memory (TMA boxes when the page size is a multiple of
// 64, else 16-byte cp.async gathers through the block table; rows past the request's end are
// zeroed either way), computes S = Q K^T and O += P V with wgmma and online softmax in the log2
// domain, and finally writes out/lse (request not split) or float32 partials (split request,
// merged by the combine kernel). Which kernel runs: docs/dense-decode-design.md ("Which kernel
// runs"); main_kernel here runs both warpgroups in lockstep per tile (the cp.async path):
//   S_w   = Q K[32w, 32w+32)^T          wgmma m64n32k16 x (d_qk / 16), warpgroup w
//   row max over both halves (shared memory), online softmax
//   P     -> shared memory (16-bit, 128-byte swizzle), both halves
//   O_w  += P V[:, 256w, 256w+256)      wgmma m64n256k16 x 4, V = the K tile's first 512 dims
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "core/decode_schedule.h"
#include "cuda/common/attn_math.cuh"
#include "cuda/common/cuda_check.h"
#include "cuda/common/lockstep_tile.cuh"
#include "cuda/common/sm90_ptx.cuh"
#include "cuda/common/wgmma_ops.cuh"
#include "cuda/dense_decode/config.h"
#include "cuda/dense_decode/kernel.h"
#include "cuda/dense_decode/traits.h"
#include "cuda/dense_decode/trace.cuh"

namespace flashmla::cuda::mla_decode {

// The lockstep step (cuda/common/lockstep_tile.cuh) is written for this tile shape.
static_assert(lockstep::same_tile_shape(kRowsPerTile, kTokensPerTile, kTokensPerWarpgroup,
                                        kThreads, kAtomBytes, kBarRowMax, kBarP),
              "dense decode tiles differ from the lockstep step's");

// One side of a hand-off between the two warpgroups of the pair and seesaw kernels: `bar.arrive`
// (the other side syncs), or, with FLASHMLA_DENSE_DECODE_SYNC_HANDOFFS=1, `bar.sync` on both
// sides (slower; both schedules take their hand-offs in the same order in both warpgroups, so it
// cannot deadlock). The variant exists for compute-sanitizer racecheck, which does not credit
// `bar.arrive` with ordering the arriving side's earlier shared-memory accesses.
__device__ __forceinline__ void hand_off(const MainParams& p, int bar) {
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_HANDOFF)
  return;
#endif
  if (p.sync_handoffs) sm90::named_barrier_sync(bar, kThreads);
  else sm90::named_barrier_arrive(bar, kThreads);
}

// Keys row my_row[h] of the CTA's q tile may see: [0, limit[h]) (causal: query i sees keys
// j <= len - s_q + i). Padding rows past valid_rows see nothing.
template <typename I>
__device__ __forceinline__ void row_limits(const MainParams& p, I len, const int (&my_row)[2],
                                           int valid_rows, int row_base, I (&limit)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    limit[h] = 0;
    if (my_row[h] < valid_rows) {
      const int i = static_cast<int>(p.group_div.div(static_cast<uint32_t>(row_base + my_row[h])));
      limit[h] = p.causal ? len - p.s_q + i + 1 : len;
      limit[h] = limit[h] < 0 ? 0 : limit[h];
    }
  }
}

// Issues the 16-byte copies of one 64-token KV tile of request `req`, kv head `kvh`, tokens
// [tok0, tok0 + 64) into a swizzled stage; tokens >= len are zero-filled (nothing is read).
template <int kDqk>
__device__ __forceinline__ void load_kv_tile(const MainParams& p, const uint8_t* k_base,
                                             const int32_t* table, int64_t tok0, int64_t len,
                                             uint32_t stage_addr) {
  constexpr int kChunksPerToken = kDqk / kChunkElems;
  constexpr int kChunks = kTokensPerTile * kChunksPerToken;
  static_assert(kChunks % kThreads == 0, "every thread issues the same number of copies");
  const int page = p.page_block_size;
  // Fast path: the whole tile lies in one page (page sizes that are multiples of 64).
  const bool one_page = (tok0 / page) == ((tok0 + kTokensPerTile - 1) / page);
  int64_t page_row0 = 0;
  if (one_page && tok0 < len) {
    int64_t blk = table[(tok0 / page) * p.bt_stride[1]];
    blk = blk < 0 ? 0 : (blk >= p.num_blocks ? p.num_blocks - 1 : blk);
    page_row0 = blk * p.k_stride[0] + (tok0 % page) * p.k_stride[1];
  }
#pragma unroll 2
  for (int it = 0; it < kChunks / kThreads; ++it) {
    const int idx = static_cast<int>(threadIdx.x) + it * kThreads;
    const int token = idx / kChunksPerToken;
    const int chunk = idx % kChunksPerToken;
    const int64_t t = tok0 + token;
    const uint8_t* src = k_base;
    int bytes = 0;
    if (t < len) {
      int64_t row;
      if (one_page) {
        row = page_row0 + token * p.k_stride[1];
      } else {
        int64_t blk = table[(t / page) * p.bt_stride[1]];
        blk = blk < 0 ? 0 : (blk >= p.num_blocks ? p.num_blocks - 1 : blk);
        row = blk * p.k_stride[0] + (t % page) * p.k_stride[1];
      }
      src = k_base + (row + chunk * kChunkElems) * 2;
      bytes = 16;
    }
    const uint32_t dst = stage_addr + (chunk / kChunksPerAtomRow) * kAtomBytes +
                         sm90::swizzle128_offset(token, chunk % kChunksPerAtomRow);
    sm90::cp_async_16(dst, src, bytes);
  }
}

// TMA path (page sizes that are multiples of 64): one thread issues one 64-token x 64-dim box per
// atom column, all completing on the stage's mbarrier. (One barrier per atom, to start Q K^T on
// the first atom that lands, measured slower: docs/perf-journal.md, v3.) The box copies whole page
// rows, so tokens past the request's end arrive as whatever the cache holds there; zero_tail()
// clears them.
template <int kDqk>
__device__ __forceinline__ void tma_kv_tile(const MainParams& p, const void* tmap,
                                            const int32_t* table, int kvh, int64_t tok0,
                                            uint32_t stage_addr, uint32_t full_bar,
                                            uint64_t policy) {
  constexpr int kQAtoms = kDqk / kAtomDims;
  const int page = p.page_block_size;
  int64_t blk = table[(tok0 / page) * p.bt_stride[1]];
  blk = blk < 0 ? 0 : (blk >= p.num_blocks ? p.num_blocks - 1 : blk);
  sm90::mbarrier_arrive_expect_tx(full_bar, kQAtoms * kAtomBytes);
#pragma unroll
  for (int a = 0; a < kQAtoms; ++a) {
    sm90::tma_load_4d(stage_addr + a * kAtomBytes, tmap, full_bar, a * kAtomDims,
                      static_cast<int>(tok0 % page), kvh, static_cast<int>(blk), policy);
  }
}

// Zeroes the rows [first_row, 64) of a landed stage (the tokens past the request's end), so that
// P V never multiplies garbage (0 * NaN = NaN).
template <int kDqk>
__device__ __forceinline__ void zero_tail(uint8_t* stage, int first_row) {
  constexpr int kQAtoms = kDqk / kAtomDims;
  const int rows = kTokensPerTile - first_row;
  const int total = rows * kQAtoms * kChunksPerAtomRow;  // 16-byte chunks
  for (int idx = threadIdx.x; idx < total; idx += kThreads) {
    const int a = idx / (rows * kChunksPerAtomRow);
    const int rem = idx % (rows * kChunksPerAtomRow);
    const int row = first_row + rem / kChunksPerAtomRow;
    *reinterpret_cast<uint4*>(stage + a * kAtomBytes + row * 128 +
                              (rem % kChunksPerAtomRow) * 16) = make_uint4(0, 0, 0, 0);
  }
}

// Issues the copies of the 64-row Q tile; rows past `valid_rows` are zero-filled. Four threads
// per row, so the row's source (a runtime division by the group size) is computed once.
template <int kDqk>
__device__ __forceinline__ void load_q_tile(const MainParams& p, int64_t req, int kvh,
                                            int row_base, int valid_rows, uint32_t q_addr) {
  constexpr int kChunksPerRow = kDqk / kChunkElems;
  constexpr int kThreadsPerRow = kThreads / kRowsPerTile;
  static_assert(kChunksPerRow % kThreadsPerRow == 0, "every thread issues the same copies");
  const int row = static_cast<int>(threadIdx.x) / kThreadsPerRow;
  const int first = static_cast<int>(threadIdx.x) % kThreadsPerRow;
  const uint8_t* src = static_cast<const uint8_t*>(p.q);
  int bytes = 0;
  if (row < valid_rows) {
    const int r = row_base + row;
    const int i = r / p.group;
    const int h = kvh * p.group + r % p.group;
    src += (req * p.q_stride[0] + i * p.q_stride[1] + h * p.q_stride[2]) * 2;
    bytes = 16;
  }
#pragma unroll 6
  for (int k = 0; k < kChunksPerRow / kThreadsPerRow; ++k) {
    const int chunk = first + k * kThreadsPerRow;  // the row's threads read 64 B side by side
    const uint32_t dst = q_addr + (chunk / kChunksPerAtomRow) * kAtomBytes +
                         sm90::swizzle128_offset(row, chunk % kChunksPerAtomRow);
    sm90::cp_async_16(dst, bytes != 0 ? src + chunk * 16 : src, bytes);
  }
}

// Epilogue of a chunk: O / l and lse, straight to out/lse (request not split) or to the chunk's
// float32 partial slot. Rows with nothing attended get out 0 and lse +inf (partials: -inf).
// In the accumulator layout a lane holds 2 columns of each 8-column group of its row. 16-bit out
// rows that are 16-byte aligned: the quad first exchanges values (shuffles) so that each lane
// stores 16 contiguous bytes, a quarter of the store instructions (v20: D1 -1 %, D4 -3 %, L5
// -3 %); else 4-byte stores. Partials: 8-byte stores (a quad still fills whole 32-byte sectors).
// The code is kept short and branch-free per row: it runs once per chunk, and in the latency
// cases every CTA runs it with a cold instruction cache (ncu, L2: most of the kernel's
// instruction-fetch stalls sat here when each store had its own branch and address).
template <typename T>
__device__ __forceinline__ void write_output(const MainParams& p, const float (&o)[128],
                                             const float (&m)[2], const float* row_sum_smem,
                                             const int (&my_row)[2], int valid_rows, int row_base,
                                             int kvh, int wg, int quad_col, int64_t req,
                                             int slot) {
  // Per row (all lanes; a quad shares its row, so rows past the tile skip as a quad): 1 / l on
  // the SFU (l >= 1 unless empty: the row's max term is 2^0), lse, and the (query, head) of the
  // row.
  float inv[2], lse[2];
  bool valid[2];
  int query[2], head[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = my_row[h];
    valid[h] = row < valid_rows;
    const float sum = row_sum_smem[row] + row_sum_smem[kRowsPerTile + row];
    const bool empty = !(sum > 0.0f);
    inv[h] = empty ? 0.0f : fast_rcp(sum);
    lse[h] = empty ? (slot < 0 ? INFINITY : -INFINITY) : (m[h] + fast_log2(sum)) * kLn2;
    const int r = row_base + row;
    query[h] = static_cast<int>(p.group_div.div(static_cast<uint32_t>(r)));
    head[h] = kvh * p.group + (r - query[h] * p.group);
  }
  const bool lse_lane = wg == 0 && quad_col == 0;
  if (slot >= 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t prow = (int64_t{slot} * p.s_q + query[h]) * p.h_q + head[h];
      float* out = p.o_partial + prow * kDimV + wg * kDimVPerWarpgroup + 2 * quad_col;
      if (valid[h]) {
#pragma unroll
        for (int j = 0; j < 32; ++j)
          *reinterpret_cast<float2*>(out + 8 * j) =
              make_float2(o[4 * j + 2 * h] * inv[h], o[4 * j + 2 * h + 1] * inv[h]);
        if (lse_lane) p.lse_partial[prow] = lse[h];
      }
    }
    return;
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    T* out = static_cast<T*>(p.out) + req * p.out_stride[0] + query[h] * p.out_stride[1] +
             head[h] * p.out_stride[2] + wg * kDimVPerWarpgroup;
    if (p.out_vec16) {
      uint32_t v[8][4];  // column groups 4 g .. 4 g + 3: lane q stores group 4 g + q
#pragma unroll
      for (int g = 0; g < 8; ++g) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int e = 4 * (4 * g + k) + 2 * h;
          v[g][k] = pack2<T>(o[e] * inv[h], o[e + 1] * inv[h]);
        }
        quad_transpose(v[g], quad_col);
      }
      if (valid[h]) {
#pragma unroll
        for (int g = 0; g < 8; ++g)
          *reinterpret_cast<uint4*>(out + 8 * (4 * g + quad_col)) =
              make_uint4(v[g][0], v[g][1], v[g][2], v[g][3]);
      }
    } else if (valid[h]) {
#pragma unroll
      for (int j = 0; j < 32; ++j)
        *reinterpret_cast<uint32_t*>(out + 2 * quad_col + 8 * j) =
            pack2<T>(o[4 * j + 2 * h] * inv[h], o[4 * j + 2 * h + 1] * inv[h]);
    }
    if (valid[h] && lse_lane)
      p.lse[req * p.lse_stride[0] + head[h] * p.lse_stride[1] + query[h] * p.lse_stride[2]] =
          lse[h];
  }
}

// S_w into the log2 domain with keys at or past each row's limit masked (-inf; tiles below every
// row's limit skip the mask), and this warpgroup's quad-reduced row maxima. `col0` is the key
// index of this thread's first column.
__device__ __forceinline__ void scale_mask_rowmax_half(float (&s)[16], float scale, bool need_mask,
                                                       const int64_t (&limit)[2], int64_t col0,
                                                       float (&mx)[2]) {
  mx[0] = mx[1] = -INFINITY;
  if (!need_mask) {
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      s[e] *= scale;
      mx[(e / 2) & 1] = fmaxf(mx[(e / 2) & 1], s[e]);
    }
  } else {
    int rel[2];  // limits relative to this thread's first column, in [-1, 64]
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t d = limit[h] - col0;
      rel[h] = d < 0 ? -1 : (d > kTokensPerTile ? kTokensPerTile : static_cast<int>(d));
    }
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2;
        float& x = s[4 * j + e];
        x = 8 * j + (e & 1) < rel[h] ? x * scale : -INFINITY;
        mx[h] = fmaxf(mx[h], x);
      }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 2));
  }
}

template <typename T, int kDqk>
__global__ void __launch_bounds__(kThreads, 1)
    main_kernel(const __grid_constant__ MainParams p, const __grid_constant__ CUtensorMap tmap,
                const __grid_constant__ CUtensorMap qmap, const __grid_constant__ CUtensorMap) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Plan = SmemPlan<kDqk>;
  constexpr int kQAtoms = Plan::kQAtoms;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = align_smem_1024(smem_raw);
  float* row_max_smem = reinterpret_cast<float*>(smem + Plan::kRowMax);  // [2][64]
  float* row_sum_smem = reinterpret_cast<float*>(smem + Plan::kRowSum);  // [2][64]
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

  sm90::grid_dependency_trigger();  // the combine kernel may be scheduled (it waits for us)
  const int part = blockIdx.z;  // grid (q tile, kv head, part)
  const int kvh = blockIdx.y;
  const int row_base = blockIdx.x * kRowsPerTile;
  const int valid_rows = min(kRowsPerTile, p.rows - row_base);

  const sched::View view{const_cast<int32_t*>(p.sched_meta), p.b, p.num_parts};
  sm90::prefetch_l1(view.part_first() + part);  // beside part_begin, not after it
  const int c_begin = view.part_begin()[part];
  const int c_end = view.part_begin()[part + 1];
  const uint8_t* k_base = static_cast<const uint8_t*>(p.k_cache) + kvh * p.k_stride[2] * 2;

  // Descriptors (K-major Q / K / P, MN-major V); per-step offsets are added below.
  const uint64_t desc_q = sm90::make_smem_desc(q_addr, 16, 1024);
  const uint64_t desc_p = sm90::make_smem_desc(p_addr, 16, 1024);

  // TMA path barriers. full[stage]: armed by thread 0 with the tile's bytes, completed by the
  // copy engine. empty[stage]: one arrival per warpgroup once its P V of the stage is done;
  // thread 0 waits on it before refilling the stage.
  const uint32_t full_bar = sm90::smem_addr(smem + Plan::kBars);
  const uint32_t empty_bar = full_bar + 8 * kKvStages;
  const bool use_tma = p.use_tma != 0;
  const uint64_t policy =
      p.kv_evict_normal ? sm90::l2_policy_evict_normal() : sm90::l2_policy_evict_first();
  if (use_tma && tid == 0) {
    for (int st = 0; st < kKvStages; ++st) sm90::mbarrier_init(full_bar + 8 * st, 1);
    for (int st = 0; st < kKvStages; ++st) sm90::mbarrier_init(empty_bar + 8 * st, kWarpgroups);
    sm90::fence_mbarrier_init();
  }
  uint32_t full_phase = 0;   // bit s: parity of the next completion of stage s's full barrier
  uint32_t empty_phase = 3;  // bit s (thread 0): parity to wait for before refilling stage s;
                             //   starts at 1 = "previous phase complete" for a fresh barrier
  int stage_of_tile0 = 0;    // stages continue across chunks so barrier phases stay in step
  auto produce = [&](const int32_t* table, int64_t tok0, int st) {
    sm90::mbarrier_wait(empty_bar + 8 * st, (empty_phase >> st) & 1);
    empty_phase ^= 1u << st;
    tma_kv_tile<kDqk>(p, &tmap, table, kvh, tok0, k_addr + st * Plan::kTileBytes,
                      full_bar + 8 * st, policy);
  };

  for (int c = c_begin; c < c_end; ++c) {
    const sched::Chunk ch = *view.part_chunk(part, c_begin, c);
    const int64_t req = ch.req;
    const int64_t len = sched::clamped_len(p.seqlens[req * p.seqlens_stride], p.max_len);
    const int32_t* table = p.block_table + req * p.bt_stride[0];

    int64_t limit[2];
    row_limits(p, len, my_row, valid_rows, row_base, limit);
    // Tiles entirely below every valid row's limit need no mask (padding rows are never
    // written, so their scores need none either).
    int64_t min_limit = len;
    if (p.causal) {
      min_limit = len - p.s_q + row_base / p.group + 1;
      min_limit = min_limit < 0 ? 0 : min_limit;
    }
    int64_t max_limit = len;
    if (p.causal) {
      const int i_last = (row_base + valid_rows - 1) / p.group;
      max_limit = len - p.s_q + i_last + 1;
      max_limit = max_limit < 0 ? 0 : max_limit;
    }
    const int64_t tok_begin = int64_t{ch.tile_begin} * kTokensPerTile;
    int64_t tok_end = int64_t{ch.tile_end} * kTokensPerTile;
    tok_end = tok_end < max_limit ? tok_end : max_limit;
    const int n_tiles = tok_end > tok_begin
                            ? static_cast<int>((tok_end - tok_begin + kTokensPerTile - 1) /
                                               kTokensPerTile)
                            : 0;

    // The previous chunk is done with every buffer (its copies landed: it waited for them).
    __syncthreads();
    if (n_tiles > 0) {
      load_q_tile<kDqk>(p, req, kvh, row_base, valid_rows, q_addr);
      if (!use_tma)
        load_kv_tile<kDqk>(p, k_base, table, tok_begin, len,
                           k_addr + stage_of_tile0 * Plan::kTileBytes);
      else if (tid == 0)
        produce(table, tok_begin, stage_of_tile0);
    }
    sm90::cp_async_commit();

    float o[128];
#pragma unroll
    for (int e = 0; e < 128; ++e) o[e] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY};  // running max, log2 domain
    float l[2] = {0.0f, 0.0f};            // this thread's share of the row sums

    for (int it = 0; it < n_tiles; ++it) {
      const int stage = (stage_of_tile0 + it) & 1;
      const uint32_t stage_addr = k_addr + stage * Plan::kTileBytes;
      const int64_t tile_tok0 = tok_begin + int64_t{it} * kTokensPerTile;
      if (!use_tma) {
        // Wait for tile `it` (and Q); after the barrier every thread is also done with tile
        // it - 1, so its stage may be overwritten.
        sm90::cp_async_wait<0>();
        sm90::fence_proxy_async();
        __syncthreads();
        if (it + 1 < n_tiles)
          load_kv_tile<kDqk>(p, k_base, table, tile_tok0 + kTokensPerTile, len,
                             k_addr + (stage ^ 1) * Plan::kTileBytes);
        sm90::cp_async_commit();
      } else {
        if (it == 0) {  // Q landed and is visible to the tensor cores
          sm90::cp_async_wait<0>();
          sm90::fence_proxy_async();
          __syncthreads();
        }
        // Refill the other stage once both warpgroups released it (P V of tile it - 1).
        if (tid == 0 && it + 1 < n_tiles)
          produce(table, tile_tok0 + kTokensPerTile, stage ^ 1);
        if (tile_tok0 + kTokensPerTile > len) {  // last tile of the request: clear the tail
          sm90::mbarrier_wait(full_bar + 8 * stage, (full_phase >> stage) & 1);
          zero_tail<kDqk>(smem + Plan::kK + stage * Plan::kTileBytes,
                          static_cast<int>(len - tile_tok0));
          sm90::fence_proxy_async();
          __syncthreads();
        }
      }

      // S_w = Q K[32 wg, 32 wg + 32)^T over d_qk, scaled, masked, row maxima.
      float s[16];
      {
        const uint64_t desc_k = sm90::make_smem_desc(
            stage_addr + wg * kTokensPerWarpgroup * 128, 16, 1024);
        if (use_tma) sm90::mbarrier_wait(full_bar + 8 * stage, (full_phase >> stage) & 1);
        lockstep::qk_half<T, kQAtoms>(s, desc_q, desc_k);
        full_phase ^= 1u << stage;
      }
      float mx[2];
      scale_mask_rowmax_half(s, p.scale_log2, tile_tok0 + kTokensPerTile > min_limit, limit,
                             tile_tok0 + wg * kTokensPerWarpgroup + 2 * quad_col, mx);
      lockstep::softmax_pv<T>(s, mx, o, m, l, row_max_smem, p_smem, desc_p, stage_addr, wg,
                              quad_col, my_row);
      // This warpgroup no longer reads the stage.
      if (use_tma && tid % 128 == 0) sm90::mbarrier_arrive(empty_bar + 8 * stage);
    }

    stage_of_tile0 = (stage_of_tile0 + n_tiles) & 1;

    lockstep::publish_row_sums(l, row_sum_smem, wg, quad_col, my_row);
    __syncthreads();

    write_output<T>(p, o, m, row_sum_smem, my_row, valid_rows, row_base, kvh, wg, quad_col, req,
                    ch.slot);
  }
#endif
}

}  // namespace flashmla::cuda::mla_decode

#include "cuda/dense_decode/kernel_seesaw.cuh"
#include "cuda/dense_decode/kernel_pair.cuh"

namespace flashmla::cuda::mla_decode {


template <typename T, int kDqk>
void launch_main(const MainParams& p, const CUtensorMap& tmap, const CUtensorMap& qmap,
                 const CUtensorMap& vmap, cudaStream_t stream) {
  // TMA path: the pair kernel (or, for A/B timing, the seesaw / lockstep kernels); other page
  // sizes: the lockstep kernel with cp.async gathers.
  auto* kernel = &main_kernel<T, kDqk>;
  int smem = SmemPlan<kDqk>::kBytes;
  int threads = kThreads;
  if (p.use_tma && p.variant == kVariantPair) {
    if (p.inline_loads) {
      kernel = &pair_kernel<T, kDqk, kLoadsInline, 1>;
    } else {
      kernel = p.v_box ? &pair_kernel<T, kDqk, kLoadsProducer, kVBoxAtoms>
                       : &pair_kernel<T, kDqk, kLoadsProducer, 1>;
      threads = pair_threads<kLoadsProducer>();
    }
    smem = PairSmemPlan<kDqk>::kBytes;
  } else if (p.use_tma && p.variant == kVariantSeesaw) {
    kernel = &seesaw_kernel<T, kDqk>;
  }
  // Raising the dynamic shared-memory limit is idempotent and cheap; done every launch so a
  // second device is covered too.
  FLASHMLA_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const int q_tiles = (p.rows + kRowsPerTile - 1) / kRowsPerTile;
  cudaLaunchConfig_t cfg{};
  // The q tiles of a part are adjacent CTAs: they read the same KV blocks at about the same
  // time, so the second read hits in L2.
  cfg.gridDim = dim3(q_tiles, p.h_kv, p.num_parts);
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
#if defined(FLASHMLA_DENSE_DECODE_TRACE)
  if (trace_this_launch(p)) {
    MainParams traced = p;
    long long* buf = nullptr;
    FLASHMLA_CUDA_CHECK(cudaMalloc(&buf, kTraceSlots * sizeof(long long)));
    FLASHMLA_CUDA_CHECK(cudaMemset(buf, 0, kTraceSlots * sizeof(long long)));
    traced.trace = buf;
    FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, traced, tmap, qmap, vmap));
    FLASHMLA_CUDA_CHECK(cudaStreamSynchronize(stream));
    print_trace(buf);
    FLASHMLA_CUDA_CHECK(cudaFree(buf));
    return;
  }
#endif
  FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, p, tmap, qmap, vmap));
  FLASHMLA_CUDA_CHECK_LAUNCH("dense_decode main_kernel");
}

}  // namespace flashmla::cuda::mla_decode
