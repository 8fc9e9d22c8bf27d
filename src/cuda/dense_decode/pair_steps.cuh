// Building blocks of the pair kernel (kernel_pair.cuh): buffer-part loads through TMA and their
// "empty" barriers, the S and P V wgmma groups, the
// softmax pieces on accumulator fragments, the P stores and the tail zeroing. Included by
// kernel_pair.cuh.
#pragma once

namespace flashmla::cuda::mla_decode {

inline constexpr int kBarScale0 = 6;
inline constexpr int kBarScale1 = 7;
inline constexpr int kBarS0Issued = 8;  // WG0 -> WG1: the next S0 is issued
inline constexpr int kBarWarpgroup = 10;  // + wg: the 128 threads of one warpgroup
inline constexpr int kBarConsumers = 12;  // the two consumer warpgroups (with a producer)
inline constexpr int kVAtomsPerHalf = kDimVPerWarpgroup / kAtomDims;  // 4

// Cache block and first row of a request's 64-token block starting at token `tok` (block ids
// clamped into the cache: a bad block id cannot send the copy engine outside k_cache). Token
// indices fit in 32 bits (lengths are int32); page size 64, the common case, is a shift, others
// a FastDiv.
// The loader threads read these a while before the copy, off the critical path.
struct BlockAddr {
  int blk, row;
};
// The page (block-table column) of token t.
__device__ __forceinline__ int page_of(const MainParams& p, int t) {
  return p.page_block_size == kTokensPerTile
             ? t / kTokensPerTile
             : static_cast<int>(p.page_div.div(static_cast<uint32_t>(t)));
}
// The block-table entry of token t of request req.
__device__ __forceinline__ const int32_t* block_entry(const MainParams& p, int req, int t) {
  const int pg = page_of(p, t);
  return p.block_table + int64_t{req} * p.bt_stride[0] + int64_t{pg} * p.bt_stride[1];
}
__device__ __forceinline__ BlockAddr block_addr(const MainParams& p, int req, int t) {
  const int page = p.page_block_size;
  const int pg = page_of(p, t);
  int64_t b = *block_entry(p, req, t);
  b = b < 0 ? 0 : (b >= p.num_blocks ? p.num_blocks - 1 : b);
#if defined(FLASHMLA_DENSE_DECODE_PROBE_L2_ONLY)  // diagnostic: every copy reads block 0 or 1
  b = p.num_blocks > 1 ? pg % 2 : 0;
#endif
  return {static_cast<int>(b), t - pg * page};
}

// The CTA's q tile and part (grid (q tile, kv head, part)). Diagnostic builds with
// -DFLASHMLA_DENSE_DECODE_PROBE_SMID_ROLES=1 (=2) take them from the SM id instead, a part's q
// tiles on consecutive (strided) SM ids: an experiment on where a part's CTAs sit, valid only
// with one CTA per SM, all SMs in the grid and one kv head.
#if defined(FLASHMLA_DENSE_DECODE_PROBE_SMID_ROLES)
__device__ __forceinline__ uint32_t sm_id() {
  uint32_t v;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(v));
  return v;
}
__device__ __forceinline__ uint32_t cta_qtile() {
  return FLASHMLA_DENSE_DECODE_PROBE_SMID_ROLES == 1 ? sm_id() % gridDim.x
                                                     : sm_id() / gridDim.z;
}
__device__ __forceinline__ uint32_t cta_part() {
  return FLASHMLA_DENSE_DECODE_PROBE_SMID_ROLES == 1 ? sm_id() / gridDim.x
                                                     : sm_id() % gridDim.z;
}
#else
__device__ __forceinline__ uint32_t cta_qtile() { return blockIdx.x; }
__device__ __forceinline__ uint32_t cta_part() { return blockIdx.z; }
#endif

// The pair kernel's cross-warpgroup waits (diagnostic builds can drop them to time the two
// warpgroups' streams uncoupled; results are then garbage).
__device__ __forceinline__ void pair_sync(int bar) {
#if !defined(FLASHMLA_DENSE_DECODE_PROBE_NO_HANDOFF)
  sm90::named_barrier_sync(bar, kThreads);
#endif
}

// CTA-wide sync of the consumer warpgroups (the producer warpgroup never joins).
template <bool kProducer>
__device__ __forceinline__ void consumers_sync() {
  if constexpr (kProducer) sm90::named_barrier_sync(kBarConsumers, kThreads);
  else __syncthreads();
}

// Buffer parts, the index of their "empty" barrier: atoms [0, 4) (V_L), [4, 8) (V_R) and the
// RoPE atom 8 (d_qk = 576; only S reads it, so it is refilled as soon as S is done) of K0, K1.
inline constexpr int kK0Lo = 0;
inline constexpr int kK0Hi = 1;
inline constexpr int kK1Lo = 2;
inline constexpr int kK1Hi = 3;
inline constexpr int kK0Rope = 4;
inline constexpr int kK1Rope = 5;
inline constexpr int kBufferParts = 6;

// How KV blocks reach shared memory (the pair kernel's kLoads template parameter):
//   kLoadsProducer  a third warpgroup loads (default): two of its lanes, one per buffer, walk the
//                   CTA's blocks, wait for each buffer part's "empty" barrier (one arrival: the
//                   consumer warpgroup that read the part last, right after its wgmma wait) and
//                   refill it at once; consumers only arrive. The loads run ahead across chunk
//                   boundaries, and no compute lane issues copies (session 4: the loader lane's
//                   work was on its warpgroup's critical path).
//   kLoadsInline    the loader lane of each consumer warpgroup (lane 0 of warp 0) refills a part
//                   right after its own last read of it: program order is the whole protocol, no
//                   empty barriers (A/B: 9-13 % slower).
// (2-CTA clusters of a part's q tiles with multicast copies, with or without the producer, were
// modes 1 and 3 until session 18: 1.4-1.5x slower in sessions 5 and 16, a part refilled only
// after both CTAs released it; removed.)
// With kLoadsProducer the Q tiles come by TMA too where a Q tensor map exists (p.q_tma; group
// sizes that divide 64 or are multiples of it): the producer's otherwise idle warp 2 loads them
// (pair_q_loader); else the consumers copy them with cp.async. A run-time switch, not a fifth
// mode: the instantiation without the copies' code lost 0.7 % on D3 / D4 to its register
// allocation (session 15: the Q descriptor's base left the uniform registers, an R2UR before
// every S).
// Each load is used and released exactly once, so the barriers' phases stay in step across
// chunks. Only the rarely used variants pay for their code: each is its own instantiation.
enum LoadMode : int { kLoadsInline = 0, kLoadsProducer = 2 };

template <int kLoads>
__host__ __device__ constexpr bool has_producer() {
  return kLoads == kLoadsProducer;
}

// Part `h` is no longer read by this CTA's consumers (one lane per release).
template <int kLoads>
__device__ __forceinline__ void release_half(uint32_t empty, int h) {
  if constexpr (kLoads == kLoadsInline) return;
  sm90::mbarrier_arrive(empty + 8 * h);
}

// Atoms [kFirst, kLast) of the 64-token block at `at` into a buffer whose atom barriers start at
// `bars`: waits until part `h` is free (producer), arms every atom's barrier, copies them (kBox
// atom columns of V per copy through `vmap`, on the barrier of the box's first atom).
template <int kLoads, int kFirst, int kLast, int kBox>
__device__ __forceinline__ void load_half(const MainParams& p, const CUtensorMap* tmap, int kvh,
                                          uint32_t empty, uint32_t& loads, int h, BlockAddr at,
                                          uint32_t buf_addr, uint32_t bars,
                                          const CUtensorMap* vmap) {
  if constexpr (kLoads != kLoadsInline)  // a fresh barrier passes
    sm90::mbarrier_wait(empty + 8 * h, ((loads >> h) & 1) ^ 1);
  loads ^= 1u << h;
  const int blk = at.blk, row = at.row;
  const bool evict_normal = p.kv_evict_normal;
  const uint64_t policy =
      evict_normal ? sm90::l2_policy_evict_normal() : sm90::l2_policy_evict_first();
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_COPY)  // diagnostic build: barriers complete at once
#pragma unroll
  for (int a = kFirst; a < kLast; ++a) sm90::mbarrier_arrive(bars + 8 * a);
  return;
#endif
#if defined(FLASHMLA_DENSE_DECODE_PROBE_SKIP_PARTS)  // diagnostic: these parts are never copied
  // (bit 0: V_L atoms, bit 1: V_R atoms, bit 2: the RoPE atom)
  if ((FLASHMLA_DENSE_DECODE_PROBE_SKIP_PARTS >> (kFirst / kVAtomsPerHalf)) & 1) {
#pragma unroll
    for (int a = kFirst; a < kLast; ++a) sm90::mbarrier_arrive(bars + 8 * a);
    return;
  }
#endif
#if defined(FLASHMLA_DENSE_DECODE_PROBE_DOUBLE_PARTS)  // diagnostic: these parts copied twice
  // (same mask as SKIP_PARTS; the second copy writes the same bytes again: results stay right,
  // the shared-memory writes and L2 -> SM traffic of those parts double)
  constexpr int kCopies =
      (FLASHMLA_DENSE_DECODE_PROBE_DOUBLE_PARTS >> (kFirst / kVAtomsPerHalf)) & 1 ? 2 : 1;
#else
  constexpr int kCopies = 1;
#endif
  if constexpr (kBox > 1 && kFirst < kDimV / kAtomDims) {  // V atoms, boxes of several
#pragma unroll
    for (int a = kFirst; a < kLast; a += kBox) {
      sm90::mbarrier_arrive_expect_tx(bars + 8 * a, kBox * kAtomBytes);
      sm90::tma_load_5d(buf_addr + a * kAtomBytes, vmap, bars + 8 * a, 0, row, a, kvh, blk,
                        policy);
    }
    return;
  }
#pragma unroll
  for (int a = kFirst; a < kLast; ++a)
    sm90::mbarrier_arrive_expect_tx(bars + 8 * a, kCopies * kAtomBytes);
#pragma unroll
  for (int a = kFirst; a < kLast; ++a)
#pragma unroll
    for (int r = 0; r < kCopies; ++r)
      sm90::tma_load_4d(buf_addr + a * kAtomBytes, tmap, bars + 8 * a, a * kAtomDims, row, kvh,
                        blk, policy);
}

// A consumer warpgroup's last read of buffer part `h` is done (one lane): release it; with inline
// loads the releasing lane also copies the next block (`next`, at `next_at`) into it.
template <int kLoads, int kFirst, int kLast, int kBox>
__device__ __forceinline__ void part_done(const MainParams& p, const CUtensorMap* tmap, int kvh,
                                          uint32_t empty, uint32_t& loads, int h, bool next,
                                          BlockAddr next_at, uint32_t buf_addr, uint32_t bars,
                                          const CUtensorMap* vmap) {
  release_half<kLoads>(empty, h);
  if constexpr (!has_producer<kLoads>())
    if (next) load_half<kLoads, kFirst, kLast, kBox>(p, tmap, kvh, empty, loads, h, next_at,
                                                     buf_addr, bars, vmap);
}

// The blocks a CTA visits in one chunk (the consumers and the producer compute it alike).
// Token counts are 32-bit (lengths are int32): registers are scarce in both roles.
struct ChunkSpan {
  int req, len;
  int tok_begin;  // first key of the chunk's first block
  int min_limit;  // causal: the smallest row limit of the CTA (mask needed from here on)
  int n_blocks;
};
__device__ __forceinline__ ChunkSpan chunk_span(const MainParams& p, const sched::Chunk& ch,
                                                int row_base) {
  ChunkSpan sp;
  sp.req = ch.req;
  sp.len = static_cast<int>(
      sched::clamped_len(p.seqlens[int64_t{sp.req} * p.seqlens_stride], p.max_len));
  // Blocks to visit: up to the last key any row of the tile sees (keys past a row's own limit
  // are masked).
  int max_limit = sp.len;
  sp.min_limit = sp.len;
  if (p.causal) {
    const int row_end = min(p.rows, static_cast<int>(cta_qtile() + 1u) * kRowsPerTile);
    sp.min_limit = sp.len - p.s_q + static_cast<int>(p.group_div.div(row_base)) + 1;
    sp.min_limit = sp.min_limit < 0 ? 0 : sp.min_limit;
    max_limit = sp.len - p.s_q + static_cast<int>(p.group_div.div(row_end - 1)) + 1;
    max_limit = max_limit < 0 ? 0 : max_limit;
  }
  sp.tok_begin = ch.tile_begin * kTokensPerTile;
  const int64_t tile_end = int64_t{ch.tile_end} * kTokensPerTile;
  const int tok_end = tile_end < max_limit ? static_cast<int>(tile_end) : max_limit;
  sp.n_blocks = tok_end > sp.tok_begin
                    ? (tok_end - sp.tok_begin + kTokensPerTile - 1) / kTokensPerTile
                    : 0;
  return sp;
}

// S (+)= Q[:, atoms] K[:, atoms]^T for atoms [kFirst, kLast): waits for each atom's barrier, then
// issues its four k-steps as one commit group (a wait between groups does not serialize them).
// Atom 8 (RoPE, d_qk = 576) takes A from the registers q8. A V box (kBox atoms) is waited for
// once, on its first atom's barrier.
template <typename T, int kQAtoms, int kFirst, int kLast, int kBox>
__device__ __forceinline__ void issue_qk_atoms(float (&s)[32], const uint32_t (&q8)[16],
                                               uint64_t desc_q, uint64_t desc_k, uint32_t bars,
                                               uint32_t parity, bool zero_first) {
#pragma unroll
  for (int a = kFirst; a < kLast; ++a) {
    if (a >= kDimV / kAtomDims || a % kBox == 0) sm90::mbarrier_wait(bars + 8 * a, parity);
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_MMA)  // diagnostic build: loads and waits only
    continue;
#endif
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kAtomDims / 16; ++kk) {
      const int scale_d = (a == kFirst && kk == 0 && zero_first) ? 0 : 1;
      const uint64_t desc_b = sm90::desc_advance(desc_k, a * kAtomBytes + kk * 32);
      if (kQAtoms > kDimV / kAtomDims && a == kQAtoms - 1)
        sm90::wgmma_m64n64k16_rs<T>(s, q8 + 4 * kk, desc_b, scale_d);
      else
        sm90::wgmma_m64n64k16_ss<T>(s, sm90::desc_advance(desc_q, a * kAtomBytes + kk * 32),
                                    desc_b, scale_d);
    }
    sm90::wgmma_commit();
  }
}

// Descriptor of the V half `half` of a buffer as the MN-major B operand of P V (LBO: next atom).
__device__ __forceinline__ uint64_t v_half_desc(uint32_t buf_addr, int half) {
  return sm90::make_smem_desc(buf_addr + half * kVAtomsPerHalf * kAtomBytes, kAtomBytes, 1024);
}

// O_half += P V[:, 256 half, 256 half + 256) with P in registers (A fragments).
template <typename T>
__device__ __forceinline__ void issue_pv_rs(float (&o)[128], const uint32_t (&pb)[16],
                                            uint32_t buf_addr, int half) {
  const uint64_t desc_v = v_half_desc(buf_addr, half);
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_MMA)
  return;
#endif
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kTokensPerTile / 16; ++kk)
    sm90::wgmma_m64n256k16_rs_tb<T>(o, pb + 4 * kk, sm90::desc_advance(desc_v, kk * 16 * 128),
                                    1);
  sm90::wgmma_commit();
}

// O_half += P V[:, 256 half, 256 half + 256) with P in shared memory (one atom column).
template <typename T>
__device__ __forceinline__ void issue_pv_ss(float (&o)[128], uint32_t p_addr, uint32_t buf_addr,
                                            int half) {
  const uint64_t desc_p = sm90::make_smem_desc(p_addr, 16, 1024);
  const uint64_t desc_v = v_half_desc(buf_addr, half);
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_MMA)
  return;
#endif
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kTokensPerTile / 16; ++kk)
    sm90::wgmma_m64n256k16_ss_tb<T>(o, sm90::desc_advance(desc_p, kk * 32),
                                    sm90::desc_advance(desc_v, kk * 16 * 128), 1);
  sm90::wgmma_commit();
}

// A thread's two row maxima reduced over its quad (the lanes of a row) and scaled into the log2
// domain (scale > 0, so the max commutes with the scaling).
__device__ __forceinline__ void quad_rowmax_scaled(float (&mx)[2], float scale) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 2));
    mx[h] *= scale;
  }
}

// Q's RoPE atom (the atom column at rope_addr, 64 rows) as the A fragments of the four k-steps
// of its S wgmmas (q8[4 kk .. 4 kk + 3]: rows 16 warp .. + 15, dims 16 kk .. + 15), or zeros
// without one (kRope false: d_qk 512).
template <bool kRope>
__device__ __forceinline__ void load_q_rope_fragments(uint32_t (&q8)[16], uint32_t rope_addr,
                                                      int warp, int lane) {
  if constexpr (kRope) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t r[4];
      const int row = 16 * warp + lane % 16, chunk = 2 * kk + lane / 16;
      sm90::ldmatrix_x4(r, rope_addr + sm90::swizzle128_offset(row, chunk));
#pragma unroll
      for (int i = 0; i < 4; ++i) q8[4 * kk + i] = r[i];
    }
  } else {
#pragma unroll
    for (int i = 0; i < 16; ++i) q8[i] = 0;
  }
}

// Masks keys at or past each row's limit in S (one 64 x 64 block, accumulator layout, raw
// scores; -inf by a select, so garbage scores of rows past the end never survive) and returns the
// quad-reduced row maxima in the log2 domain (scale > 0, so the max commutes with the scaling).
__device__ __forceinline__ void mask_rowmax(float (&s)[32], float scale, bool need_mask,
                                            const int (&limit)[2], int tok0, int quad_col,
                                            float (&mx)[2]) {
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_SOFTMAX)  // diagnostic build: no softmax math
  mx[0] = mx[1] = 0.0f;
  return;
#endif
  mx[0] = mx[1] = -INFINITY;
  if (!need_mask) {
#pragma unroll
    for (int e = 0; e < 32; ++e) mx[(e / 2) & 1] = fmaxf(mx[(e / 2) & 1], s[e]);
  } else {
    int rel[2];  // limits relative to this thread's first column, in [-1, 64]
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int d = limit[h] - (tok0 + 2 * quad_col);
      rel[h] = d < 0 ? -1 : (d > kTokensPerTile ? kTokensPerTile : d);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2;
        float& x = s[4 * j + e];
        x = 8 * j + (e & 1) < rel[h] ? x : -INFINITY;
        mx[h] = fmaxf(mx[h], x);
      }
  }
  quad_rowmax_scaled(mx, scale);
}

// The running row max after one more block, kept lazily: the max in shared memory moves only when
// a block's max mx exceeds it by more than kLazyMax (log2 units), so P = 2^(S - m) <= 2^kLazyMax
// (exact in fp32 sums and 16-bit P alike: only the exponent grows) and in the steady state the
// max stays put: sc = 1, O needs no rescale, and warpgroup 1 need not wait for its in-flight
// P0 V0_R before adding P1 V1_R. Returns the exponent offset mu (0 while nothing is seen: P = 0,
// no NaN) and sc = 2^(m - mu); one lane per quad writes the new max and sc for the other
// warpgroup.
inline constexpr float kLazyMax = 8.0f;
__device__ __forceinline__ void running_max(float* m_smem, float* scale_smem,
                                            const int (&my_row)[2], int quad_col,
                                            const float (&mx)[2], float (&mu)[2],
                                            float (&sc)[2]) {
  float m_new[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float m_old = m_smem[my_row[h]];
    m_new[h] = mx[h] > m_old + kLazyMax ? mx[h] : m_old;
    mu[h] = m_new[h] == -INFINITY ? 0.0f : m_new[h];
    sc[h] = m_new[h] == m_old ? 1.0f : fast_exp2(m_old - mu[h]);
  }
  __syncwarp();  // every lane of the quad has read the old max
  if (quad_col == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      m_smem[my_row[h]] = m_new[h];
      scale_smem[my_row[h]] = sc[h];
    }
  }
}

// P = 2^(S scale - mu) in place (float), its 16-bit A fragments in pb, and its row sums added to
// sum.
template <typename T>
__device__ __forceinline__ void exp_to_fragments(float (&s)[32], float scale, const float (&mu)[2],
                                                 uint32_t (&pb)[16], float (&sum)[2]) {
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_SOFTMAX)
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) pb[2 * j + h] = pack2<T>(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]);
  return;
#endif
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_EXP)  // diagnostic build: no MUFU work
      const float p0 = fmaf(s[4 * j + 2 * h], scale, -mu[h]);
      const float p1 = fmaf(s[4 * j + 2 * h + 1], scale, -mu[h]);
#else
      const float p0 = fast_exp2(fmaf(s[4 * j + 2 * h], scale, -mu[h]));
      const float p1 = fast_exp2(fmaf(s[4 * j + 2 * h + 1], scale, -mu[h]));
#endif
      s[4 * j + 2 * h] = p0;
      s[4 * j + 2 * h + 1] = p1;
      sum[h] += p0 + p1;
      pb[2 * j + h] = pack2<T>(p0, p1);  // accumulator pair (j, h) = A fragment register 2 j + h
    }
}

// Writes A fragments of a 64 x 64 P into one swizzled atom column.
__device__ __forceinline__ void store_fragments(uint8_t* p_smem, const uint32_t (&pb)[16],
                                                const int (&my_row)[2], int quad_col) {
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_PSTORE)  // diagnostic build: P never stored
  return;
#endif
#if defined(FLASHMLA_DENSE_DECODE_PSTORE_STSM)  // A/B: four stmatrix.x4 instead of 16 STS.32
  // Fragment register 2 j + h is 8 x 8 matrix (h, j) of the warp's 16 rows (h: rows + 8 h, j:
  // the 16-byte column chunk); instruction g stores matrices (0, 2g), (1, 2g), (0, 2g+1),
  // (1, 2g+1), lanes 8k .. 8k + 7 addressing the rows of the k-th.
  {
    const int lane = threadIdx.x % 32;
    const int k = lane / 8;
    const int row = my_row[0] - lane / 4 + 8 * (k & 1) + lane % 8;
    const uint32_t base = sm90::smem_addr(p_smem);
#pragma unroll
    for (int g = 0; g < 4; ++g)
      sm90::stmatrix_x4(base + sm90::swizzle128_offset(row, 2 * g + (k >> 1)), pb[4 * g],
                        pb[4 * g + 1], pb[4 * g + 2], pb[4 * g + 3]);
    return;
  }
#endif
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      *reinterpret_cast<uint32_t*>(p_smem + sm90::swizzle128_offset(my_row[h], j) +
                                   4 * quad_col) = pb[2 * j + h];
}

// Zeroes rows [first_row, 64) of the four V atoms of one half of a buffer (tokens past the
// request's end: P is 0 there, but 0 * NaN is NaN), by the 128 threads of warpgroup wg, and makes
// the zeros visible to that warpgroup's wgmmas. Out of line: the step calls it in four places
// and it runs at most once per chunk; inlined (with a division by the run-time row count) it was
// 650 of the step loop's 2,836 SASS instructions, and inlined without the division it moved the
// V-box kernel's loop (D4, L5 +1 %, perf-journal.md, session 21).
static __device__ __noinline__ void zero_v_tail(uint8_t* buf, int half, int first_row, int wg) {
  // Thread t zeroes 16-byte chunks k = t, t + 128, ... of rows [first_row, 64) in each of the
  // four atom columns (rows are contiguous 128-byte lines; no division by a run-time count:
  // this runs at most once per chunk, from a cold instruction cache)
  const int total = (kTokensPerTile - first_row) * kChunksPerAtomRow;  // per atom column
  uint8_t* base = buf + half * kVAtomsPerHalf * kAtomBytes + first_row * 128;
  for (int k = threadIdx.x % 128; k < total; k += 128) {
#pragma unroll
    for (int a = 0; a < kVAtomsPerHalf; ++a)
      *reinterpret_cast<uint4*>(base + a * kAtomBytes + k * 16) = make_uint4(0, 0, 0, 0);
  }
  sm90::fence_proxy_async();
  sm90::named_barrier_sync(kBarWarpgroup + wg, 128);
}

}  // namespace flashmla::cuda::mla_decode
