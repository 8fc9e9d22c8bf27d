// sm_90a dense MLA decode, TMA path: the "pair" schedule (page sizes that are multiples of 64).
// Included by kernel.cuh after its loaders and epilogue.
//
// The CTA walks a chunk's 64-token blocks two at a time: block b in buffer K0, block b + 1 in K1.
// Warpgroup 0 computes S0 = Q K0^T, warpgroup 1 S1 = Q K1^T, each a whole 64 x 64 block (wgmma
// N = 64, the shape that keeps shared-memory reads at the tensor rate); WG0 owns O[:, 0:256)
// (O_L), WG1 owns O[:, 256:512) (O_R). With m the running row max (shared memory, kept lazily:
// running_max() in pair_steps.cuh) and every exponent in the log2 domain, one step is
//   WG0: m0 = max(m, rowmax S0), P0 = 2^(S0 - m0) -> regs + smem;  O_L = O_L 2^(m - m0) + P0 V0_L
//   WG1: O_R = O_R 2^(m - m0) + P0 V0_R                                               (P0: smem)
//   WG1: m1 = max(m0, rowmax S1), P1 = 2^(S1 - m1) -> regs + smem; O_R = O_R 2^(m0 - m1) + P1 V1_R
//   WG0:                                                      O_L = O_L 2^(m0 - m1) + P1 V1_L
// i.e. exact online softmax over 128 tokens, while one warpgroup's exponentials run under the
// other's wgmmas (KERNEL-NOTES.md, "seesaw", after FlashMLA's published schedule; here WG1 takes
// P0 before its own softmax, so K0's V_R half is free a softmax earlier). When the max stayed
// put in all of WG1's rows (2^(m0 - m1) = 1, the usual case with the lazy max) its P1 V1_R
// queues behind P0 V0_R without waiting for it.
// A producer warpgroup (kLoadsProducer, pair_steps.cuh) issues every copy (the Q tiles too where
// a Q tensor map exists, pair_q_loader; else the consumers copy Q): every atom column of a
// buffer has its own "full" mbarrier, every buffer part (V_L = atoms 0-3, V_R = atoms 4-7, RoPE
// atom 8) an "empty" one on which the consumer warpgroup that read it last arrives: the RoPE atoms
// at the start of a step (S is done), K0's V_L after P0 V0_L, K0's V_R after P0 V0_R, K1's V_R
// after P1 V1_R, K1's V_L after P1 V1_L. The next step's S is issued at the end of a step, one
// commit group per atom, RoPE atom first, so it waits only for the atom it reads next (WG1 reads
// V_R before V_L: its V_R is refilled first). Q's RoPE atom lives in registers (wgmma with A from
// registers), which leaves its 8 KB of shared memory free for P1.
//
// Hand-offs (named barriers over the 256 consumer threads: one warpgroup arrives, the other
// syncs):
//   kBarScale0  WG0 -> WG1  m0, 2^(m - m0) and P0 are in shared memory
//   kBarScale1  WG1 -> WG0  m1, 2^(m0 - m1) and P1 are in shared memory
//   kBarS0Issued WG0 -> WG1 the next S0 is issued: S1 goes into the tensor pipe behind it
// A P buffer is rewritten only after its reader's wgmma completed: P0 of the next step waits for
// S0 of block b + 2, whose V_R half is copied only after WG1 released it past P0 V0_R; P1 of the
// next step waits for m0 of the next step, which WG0 publishes after its P1 V1_L is done.
#pragma once

#include "cuda/dense_decode/pair_steps.cuh"

namespace flashmla::cuda::mla_decode {

// Threads of the pair kernel: two consumer warpgroups, plus the producer warpgroup.
template <int kLoads>
__host__ __device__ constexpr int pair_threads() {
  return has_producer<kLoads>() ? kThreads + 128 : kThreads;
}
// Registers per thread after the producer hands its share to the consumers (setmaxnreg). The
// CTA's pool is what it was launched with, 384 x 168 (the 64K file rounded down to a multiple of
// 8 per thread), not the whole file: a request beyond it waits forever. 232 / 40 is the split
// where neither role spills (240 / 24 spilled the producer's chunk walk).
inline constexpr int kConsumerRegs = 232;
inline constexpr int kProducerRegs = 40;
static_assert(2 * 128 * kConsumerRegs + 128 * kProducerRegs == 384 * 168,
              "setmaxnreg must redistribute exactly the CTA's launch registers");

// The Q loader (p.q_tma): lane 0 of the producer's warp 2, idle otherwise, loads every chunk's
// Q tile (kQAtoms boxes of 64 rows x 64 dims through the Q tensor map; rows past the last query
// are the copy engine's zero fill) as soon as the consumers released the previous one on q_empty
// (they arrive after the row-sum sync, when both warpgroups' last wgmmas, the readers of Q and of
// P1 in Q's RoPE atom, are done). So the next chunk's Q streams in under the previous chunk's
// output stores, and no consumer thread holds TMA operands (that cost the step ~100
// uniform-register copies, session 14). Every chunk loads its tile, even one without blocks, so
// the part's k-th tile completes q_full's phase k, whose parity the consumers take from the
// chunk's index within the part.
template <int kDqk>
__device__ __forceinline__ void pair_q_loader(const MainParams& p, const CUtensorMap* qmap,
                                              uint32_t smem_base) {
  using Plan = PairSmemPlan<kDqk>;
  const sched::View view{const_cast<int32_t*>(p.sched_meta), p.b, p.num_parts};
  // (a part's first chunk from part_first: fetched beside part_begin, not after it)
  sm90::prefetch_l1(view.part_first() + cta_part());
  const int c_begin = view.part_begin()[cta_part()];
  const int c_end = view.part_begin()[cta_part() + 1];
  // Box origin: the tile's first row is (query row_base / group, head row_base % group); the
  // map's box covers 64 rows from there (make_q_tensor_map).
  const int row_base = cta_qtile() * kRowsPerTile;
  const int query0 = static_cast<int>(p.group_div.div(row_base));
  const int head0 = row_base - query0 * p.group;
  const uint32_t full = smem_base + Plan::kQFull;
  const uint32_t empty = smem_base + Plan::kQEmpty;
  const uint64_t policy = sm90::l2_policy_evict_first();
  for (int c = c_begin; c < c_end; ++c) {
    sm90::mbarrier_wait(empty, ((c - c_begin) & 1) ^ 1);  // a fresh barrier passes
#if defined(FLASHMLA_DENSE_DECODE_PROBE_Q_ONCE)  // diagnostic: later chunks reuse the first Q
    if (c > c_begin) {
      sm90::mbarrier_arrive(full);
      continue;
    }
#endif
    sm90::mbarrier_arrive_expect_tx(full, Plan::kQAtoms * kAtomBytes);
    const int req = view.part_chunk(cta_part(), c_begin, c)->req;
#pragma unroll 1
    for (int a = 0; a < Plan::kQAtoms; ++a)
      sm90::tma_load_5d(smem_base + Plan::kQ + a * kAtomBytes, qmap, full, a * kAtomDims, head0,
                        blockIdx.y, query0, req, policy);
  }
}

// The producer warpgroup's loop (kLoadsProducer): lane 0 of warp 0 loads the even blocks of every
// chunk into K0, lane 0 of warp 1 the odd ones into K1, each part as soon as the consumers
// released it (parts in the order they are released: K0 RoPE, V_L, V_R; K1 RoPE, V_R, V_L).
// Everything it needs is computed here, after the register hand-over: values live across it
// would have to fit the producer's 24 registers.
template <int kDqk, int kLoads, int kBox>
__device__ __forceinline__ void pair_producer(const MainParams& p, const CUtensorMap* tmap,
                                              const CUtensorMap* vmap, uint32_t smem_base,
                                              int buf) {
  using Plan = PairSmemPlan<kDqk>;
  constexpr int kQAtoms = Plan::kQAtoms;
  constexpr int kHalf = kVAtomsPerHalf;
  constexpr int kV = kDimV / kAtomDims;
  const sched::View view{const_cast<int32_t*>(p.sched_meta), p.b, p.num_parts};
  sm90::prefetch_l1(view.part_first() + cta_part());  // beside part_begin, not after it
  const int c_begin = view.part_begin()[cta_part()];
  const int c_end = view.part_begin()[cta_part() + 1];
  const int row_base = cta_qtile() * kRowsPerTile;
  const int kvh = blockIdx.y;
  const uint32_t k_addr = smem_base + (buf == 0 ? Plan::kK0 : Plan::kK1);
  const uint32_t bars = smem_base + Plan::kBars + buf * 8 * kQAtoms;
  const uint32_t empty = smem_base + Plan::kEmpty;
  const int lo = buf == 0 ? kK0Lo : kK1Lo, hi = buf == 0 ? kK0Hi : kK1Hi;
  const int rope = buf == 0 ? kK0Rope : kK1Rope;
  uint32_t loads = 0;
  for (int c = c_begin; c < c_end; ++c) {
    const sched::Chunk ch = *view.part_chunk(cta_part(), c_begin, c);
    // The page index of the chunk's first block does not depend on the request's length: its
    // line is fetched beside the length (chunk_span), not after it. (Within the table: the
    // chunk's tiles and the clamped length's.)
    const int tok_first = (ch.tile_begin + buf) * kTokensPerTile;
    if (ch.tile_begin + buf < ch.tile_end && tok_first < p.max_len)
      sm90::prefetch_l1(block_entry(p, ch.req, tok_first));
    const ChunkSpan sp = chunk_span(p, ch, row_base);
    for (int k = buf; k < sp.n_blocks; k += 2) {
      const BlockAddr at = block_addr(p, sp.req, sp.tok_begin + k * kTokensPerTile);
      if constexpr (Plan::kRopeInRegs)
        load_half<kLoads, kV, kQAtoms, kBox>(p, tmap, kvh, empty, loads, rope, at, k_addr,
            bars, vmap);
      if (buf == 0) {
        load_half<kLoads, 0, kHalf, kBox>(p, tmap, kvh, empty, loads, lo, at, k_addr, bars, vmap);
        load_half<kLoads, kHalf, kV, kBox>(p, tmap, kvh, empty, loads, hi, at, k_addr, bars, vmap);
      } else {
        load_half<kLoads, kHalf, kV, kBox>(p, tmap, kvh, empty, loads, hi, at, k_addr, bars, vmap);
        load_half<kLoads, 0, kHalf, kBox>(p, tmap, kvh, empty, loads, lo, at, k_addr, bars, vmap);
      }
    }
  }
}

// kBox: atom columns per V copy (1, or kVBoxAtoms for the V-box form; config.h).
template <typename T, int kDqk, int kLoads, int kBox>
__global__ void __launch_bounds__(pair_threads<kLoads>(), 1)
    pair_kernel(const __grid_constant__ MainParams p, const __grid_constant__ CUtensorMap tmap,
                const __grid_constant__ CUtensorMap qmap,
                const __grid_constant__ CUtensorMap vmap) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Plan = PairSmemPlan<kDqk>;
  constexpr int kQAtoms = Plan::kQAtoms;
  constexpr int kHalf = kVAtomsPerHalf;  // atoms [0, 4) = V_L, [4, 8) = V_R, 8 = RoPE
  constexpr int kV = kDimV / kAtomDims;  // 8
  constexpr bool kRope = Plan::kRopeInRegs;
  // Commit groups of an S issued ahead of its V atoms (the RoPE atom).
  constexpr int kGroupsBeforeV = kRope ? 1 : 0;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = align_smem_1024(smem_raw);
  constexpr bool kProducer = has_producer<kLoads>();
  sm90::grid_dependency_trigger();  // the combine kernel may be scheduled (it waits for us)
  PAIR_TRACE_KERNEL(0);
  {
    const uint32_t bars = sm90::smem_addr(smem + Plan::kBars);
    const uint32_t empty = sm90::smem_addr(smem + Plan::kEmpty);
    if (threadIdx.x == 0) {
      for (int a = 0; a < 2 * kQAtoms; ++a) sm90::mbarrier_init(bars + 8 * a, 1);
      for (int h = 0; h < kBufferParts; ++h)
        sm90::mbarrier_init(empty + 8 * h, 1);
      if (kLoads == kLoadsProducer && p.q_tma) {
        const uint32_t q_full = sm90::smem_addr(smem + Plan::kQFull);
        sm90::mbarrier_init(q_full, 1);
        sm90::mbarrier_init(sm90::smem_addr(smem + Plan::kQEmpty), 1);
      }
      sm90::fence_mbarrier_init();
    }
  }
  if constexpr (kProducer) {
    __syncthreads();  // barriers initialised before the producer's first copy
    if (threadIdx.x >= kThreads) {
      sm90::setmaxnreg_dec<kProducerRegs>();
      const int warp = (threadIdx.x - kThreads) / 32;
      if (threadIdx.x % 32 == 0 && warp < 2)
        pair_producer<kDqk, kLoads, kBox>(p, &tmap, &vmap, sm90::smem_addr(smem), warp);
      if (kLoads == kLoadsProducer && p.q_tma && threadIdx.x % 32 == 0 && warp == 2)
        pair_q_loader<kDqk>(p, &qmap, sm90::smem_addr(smem));
      return;
    }
    sm90::setmaxnreg_inc<kConsumerRegs>();
  }
  float* m_smem = reinterpret_cast<float*>(smem + Plan::kM);
  float* scale0_smem = reinterpret_cast<float*>(smem + Plan::kScale0);
  float* scale1_smem = reinterpret_cast<float*>(smem + Plan::kScale1);
  float* row_sum_smem = reinterpret_cast<float*>(smem + Plan::kRowSum);
  uint8_t* k0_smem = smem + Plan::kK0;
  uint8_t* k1_smem = smem + Plan::kK1;
  const uint32_t q_addr = sm90::smem_addr(smem + Plan::kQ);
  const uint32_t k0_addr = sm90::smem_addr(k0_smem);
  const uint32_t k1_addr = sm90::smem_addr(k1_smem);
  const uint32_t p0_addr = sm90::smem_addr(smem + Plan::kP0);
  const uint32_t p1_addr = sm90::smem_addr(smem + Plan::kP1);
  const uint32_t bars0 = sm90::smem_addr(smem + Plan::kBars);
  const uint32_t bars1 = bars0 + 8 * kQAtoms;

  const int tid = threadIdx.x;
  const int wg = tid / 128;
  const int t128 = tid % 128;
  const int warp = t128 / 32;
  const int lane = tid % 32;
  const int quad_col = lane % 4;
  const int my_row[2] = {16 * warp + lane / 4, 16 * warp + lane / 4 + 8};

  const int part = cta_part();  // grid (q tile, kv head, part)
  const int kvh = blockIdx.y;
  const int row_base = cta_qtile() * kRowsPerTile;
  const int valid_rows = min(kRowsPerTile, p.rows - row_base);

  const sched::View view{const_cast<int32_t*>(p.sched_meta), p.b, p.num_parts};
  sm90::prefetch_l1(view.part_first() + part);  // beside part_begin, not after it
  const int c_begin = view.part_begin()[part];
  const int c_end = view.part_begin()[part + 1];

  const uint64_t desc_q = sm90::make_smem_desc(q_addr, 16, 1024);
  const uint64_t desc_k0 = sm90::make_smem_desc(k0_addr, 16, 1024);
  const uint64_t desc_k1 = sm90::make_smem_desc(k1_addr, 16, 1024);
  const uint32_t empty = sm90::smem_addr(smem + Plan::kEmpty);
  uint32_t loads = 0;  // threads 0 and 128 (inline loads): parity bits of their halves' loads
  // Parity of the next completion of this warpgroup's buffer (WG0: K0, WG1: K1). Every load of
  // a buffer is consumed by exactly one S of its warpgroup, so phases stay in step across chunks.
  uint32_t parity = 0;
  const bool q_tma = kLoads == kLoadsProducer && p.q_tma;

  for (int c = c_begin; c < c_end; ++c) {
    const sched::Chunk ch = *view.part_chunk(part, c_begin, c);
    PAIR_TRACE_CHUNK(0);
    const ChunkSpan sp = chunk_span(p, ch, row_base);
    const int req = sp.req;
    const int len = sp.len;

    int limit[2];
    row_limits(p, len, my_row, valid_rows, row_base, limit);
    const int min_limit = sp.min_limit;
    const int tok_begin = sp.tok_begin;
    const int n_blocks = sp.n_blocks;

    consumers_sync<kProducer>();  // the previous chunk is done with Q (and, inline, every buffer)
    if (!kProducer && n_blocks > 0) {
      const BlockAddr at0 = tid % 128 == 0 ? block_addr(p, req, tok_begin) : BlockAddr{0, 0};
      const BlockAddr at1 = tid % 128 == 0 && n_blocks > 1
                                ? block_addr(p, req, tok_begin + kTokensPerTile)
                                : BlockAddr{0, 0};
      if (tid == 0) {
        if constexpr (kRope)
          load_half<kLoads, kV, kQAtoms, kBox>(p, &tmap, kvh, empty, loads, kK0Rope, at0, k0_addr,
              bars0, &vmap);
        load_half<kLoads, 0, kHalf, kBox>(p, &tmap, kvh, empty, loads, kK0Lo, at0, k0_addr, bars0,
                                    &vmap);
        if (n_blocks > 1)
          load_half<kLoads, 0, kHalf, kBox>(p, &tmap, kvh, empty, loads, kK1Lo, at1, k1_addr, bars1,
                                      &vmap);
      } else if (tid == 128) {
        load_half<kLoads, kHalf, kV, kBox>(p, &tmap, kvh, empty, loads, kK0Hi, at0, k0_addr, bars0,
                                     &vmap);
        if (n_blocks > 1) {
          if constexpr (kRope)
            load_half<kLoads, kV, kQAtoms, kBox>(p, &tmap, kvh, empty, loads, kK1Rope, at1,
                                                 k1_addr, bars1, &vmap);
          load_half<kLoads, kHalf, kV, kBox>(p, &tmap, kvh, empty, loads, kK1Hi, at1, k1_addr,
                                             bars1, &vmap);
        }
      }
    }
    if (q_tma) {
      // (the part's k-th tile completes q_full's phase k)
      sm90::mbarrier_wait(sm90::smem_addr(smem + Plan::kQFull), (c - c_begin) & 1);
      PAIR_TRACE_CHUNK(7);
    } else {
      // (the Q tiles of later chunks were issued before the previous chunk's output stores)
      if (c == c_begin && n_blocks > 0)
        load_q_tile<kDqk>(p, req, kvh, row_base, valid_rows, q_addr);
      sm90::cp_async_commit();
      sm90::cp_async_wait<0>();
      PAIR_TRACE_CHUNK(7);
      sm90::fence_proxy_async();
    }
    if (tid < kRowsPerTile) m_smem[tid] = -INFINITY;
    consumers_sync<kProducer>();  // Q visible to the tensor cores, running max reset
    PAIR_TRACE_CHUNK(1);

    float o[128];
#pragma unroll
    for (int e = 0; e < 128; ++e) o[e] = 0.0f;
    float l[2] = {0.0f, 0.0f};  // this thread's share of its warpgroup's row sums
    float s[32];
    uint32_t pb[16];
    uint32_t q8[16];
    load_q_rope_fragments<Plan::kRopeInRegs>(q8, q_addr + (kQAtoms - 1) * kAtomBytes, warp,
                                             lane);

    // First S of each warpgroup: WG0 block 0, WG1 block 1.
    if (wg < n_blocks) {
      if (wg == 0) {
        issue_qk_atoms<T, kQAtoms, kV, kQAtoms, kBox>(s, q8, desc_q, desc_k0, bars0, parity, true);
        issue_qk_atoms<T, kQAtoms, 0, kV, kBox>(s, q8, desc_q, desc_k0, bars0, parity, !kRope);
      } else {
        issue_qk_atoms<T, kQAtoms, kV, kQAtoms, kBox>(s, q8, desc_q, desc_k1, bars1, parity, true);
        issue_qk_atoms<T, kQAtoms, kHalf, kV, kBox>(s, q8, desc_q, desc_k1, bars1, parity, !kRope);
        issue_qk_atoms<T, kQAtoms, 0, kHalf, kBox>(s, q8, desc_q, desc_k1, bars1, parity, false);
      }
      parity ^= 1;
    }
    sm90::wgmma_wait<0>();
    sm90::fence_regs(s);
    PAIR_TRACE_CHUNK(2);

    for (int b = 0; b < n_blocks; b += 2) {
      const bool has1 = b + 1 < n_blocks;
      const bool next0 = b + 2 < n_blocks;
      const bool next1 = b + 3 < n_blocks;
      const int tok0 = tok_begin + b * kTokensPerTile;
      const int tok1 = tok0 + kTokensPerTile;
      BlockAddr next0_at{0, 0}, next1_at{0, 0};  // loader threads: blocks b + 2 and b + 3
      if (!kProducer && t128 == 0) {
        if (next0) next0_at = block_addr(p, req, tok0 + 2 * kTokensPerTile);
        if (next1) next1_at = block_addr(p, req, tok1 + 2 * kTokensPerTile);
      }
      if (wg == 0) {
        PAIR_TRACE(0);
        if constexpr (kRope)  // S0 is done with K0's RoPE atom
          if (t128 == 0)
            part_done<kLoads, kV, kQAtoms, kBox>(p, &tmap, kvh, empty, loads, kK0Rope,
                next0, next0_at, k0_addr, bars0, &vmap);
        // ---- softmax of S0 against the running max; P0 to shared memory for WG1 ----
        float mx[2], mu[2], sc[2], sum[2] = {0.0f, 0.0f};
        mask_rowmax(s, p.scale_log2, tok0 + kTokensPerTile > min_limit, limit, tok0, quad_col,
                    mx);
        running_max(m_smem, scale0_smem, my_row, quad_col, mx, mu, sc);
        exp_to_fragments<T>(s, p.scale_log2, mu, pb, sum);
#pragma unroll
        for (int h = 0; h < 2; ++h) l[h] = l[h] * sc[h] + sum[h];
        store_fragments(smem + Plan::kP0, pb, my_row, quad_col);
#if !defined(FLASHMLA_DENSE_DECODE_PROBE_NO_PFENCE)
        sm90::fence_proxy_async();
#endif
        hand_off(p, kBarScale0);
        PAIR_TRACE(1);
        rescale_o(o, sc[0], sc[1]);

        // ---- O_L += P0 V0_L ----
        if (tok0 + kTokensPerTile > len) zero_v_tail(k0_smem, 0, len - tok0, 0);
        issue_pv_rs<T>(o, pb, k0_addr, 0);
        PAIR_TRACE(2);
        sm90::wgmma_wait<0>();
        sm90::fence_regs(o);
        sm90::fence_regs(pb);
        PAIR_TRACE(3);
        if (t128 == 0)
          part_done<kLoads, 0, kHalf, kBox>(p, &tmap, kvh, empty, loads, kK0Lo,
              next0, next0_at, k0_addr, bars0, &vmap);

        // ---- O_L = O_L 2^(m0 - m1) + P1 V1_L ----
        pair_sync(kBarScale1);
        PAIR_TRACE(4);
        float sc1[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) sc1[h] = scale1_smem[my_row[h]];
        rescale_o(o, sc1[0], sc1[1]);
#pragma unroll
        for (int h = 0; h < 2; ++h) l[h] *= sc1[h];
        if (has1) {
          if (tok1 + kTokensPerTile > len) zero_v_tail(k1_smem, 0, len - tok1, 0);
          issue_pv_ss<T>(o, p1_addr, k1_addr, 0);
          PAIR_TRACE(7);
        }

        // ---- next S0 (block b + 2): its RoPE atom queues behind P1 V1_L; K1's first half goes
        // back to the producer as soon as P1 V1_L is done, before S0 waits for K0's V halves ----
        if (next0)
          issue_qk_atoms<T, kQAtoms, kV, kQAtoms, kBox>(s, q8, desc_q, desc_k0, bars0, parity,
                                                        true);
        if (has1) {
          if (next0) sm90::wgmma_wait<kGroupsBeforeV>();  // the RoPE group may stay in flight
          else sm90::wgmma_wait<0>();
          PAIR_TRACE(9);
          if (t128 == 0)
            part_done<kLoads, 0, kHalf, kBox>(p, &tmap, kvh, empty, loads, kK1Lo,
                next1, next1_at, k1_addr, bars1, &vmap);
        }
        if (next0) {
          issue_qk_atoms<T, kQAtoms, 0, kV, kBox>(s, q8, desc_q, desc_k0, bars0, parity, !kRope);
          parity ^= 1;
          hand_off(p, kBarS0Issued);  // WG1 may queue its S1 behind it now
          PAIR_TRACE(10);
        }
        sm90::wgmma_wait<0>();
        sm90::fence_regs(o);
        sm90::fence_regs(s);
        PAIR_TRACE(11);
      } else {
        PAIR_TRACE(0);
        if constexpr (kRope)  // S1 is done with K1's RoPE atom
          if (has1 && t128 == 0)
            part_done<kLoads, kV, kQAtoms, kBox>(p, &tmap, kvh, empty, loads, kK1Rope,
                next1, next1_at, k1_addr, bars1, &vmap);
        // ---- O_R = O_R 2^(m - m0) + P0 V0_R (P0 against m0, from shared memory) ----
        pair_sync(kBarScale0);
        PAIR_TRACE(1);
        float f0[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) f0[h] = scale0_smem[my_row[h]];
        rescale_o(o, f0[0], f0[1]);
        if (tok0 + kTokensPerTile > len) zero_v_tail(k0_smem, 1, len - tok0, 1);
        issue_pv_ss<T>(o, p0_addr, k0_addr, 1);
        PAIR_TRACE(2);

        // ---- softmax of S1 against m0 under it (no block b + 1: every column masked, P1 = 0,
        // the max stays m0; one straight path keeps the wgmma in flight) ----
        float mx[2], mu[2], f1[2], sum[2] = {0.0f, 0.0f};
        int lim1[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) lim1[h] = has1 ? limit[h] : -kTokensPerTile;
        mask_rowmax(s, p.scale_log2, !has1 || tok1 + kTokensPerTile > min_limit, lim1, tok1,
                    quad_col, mx);
        running_max(m_smem, scale1_smem, my_row, quad_col, mx, mu, f1);
        exp_to_fragments<T>(s, p.scale_log2, mu, pb, sum);
#pragma unroll
        for (int h = 0; h < 2; ++h) l[h] = l[h] * f0[h] * f1[h] + sum[h];
        store_fragments(smem + Plan::kP1, pb, my_row, quad_col);
#if !defined(FLASHMLA_DENSE_DECODE_PROBE_NO_PFENCE)
        sm90::fence_proxy_async();
#endif
        hand_off(p, kBarScale1);
        PAIR_TRACE(3);

        // ---- O_R = O_R 2^(m0 - m1) + P1 V1_R: if the max stayed put in every row of the
        // warpgroup (the usual case, running_max), P1 V1_R queues behind the in-flight P0 V0_R;
        // else O_R is rescaled once P0 V0_R is done ----
        // (racecheck does not model barrier.red: the bar.sync hand-off build always rescales)
        const bool rescale =
            p.sync_handoffs ||
            sm90::named_barrier_or(kBarWarpgroup + 1, 128, f1[0] != 1.0f || f1[1] != 1.0f);
        // (Each path issues its own P1 V1_R: no accumulator write may reach a wgmma issue on a
        // path where another wgmma on O is in flight, or ptxas serializes them all, C7515.)
        if (has1 && tok1 + kTokensPerTile > len) zero_v_tail(k1_smem, 1, len - tok1, 1);
        if (rescale || !has1) {
          sm90::wgmma_wait<0>();
          sm90::fence_regs(o);
          rescale_o(o, f1[0], f1[1]);
          if (has1) issue_pv_rs<T>(o, pb, k1_addr, 1);
        } else {
          issue_pv_rs<T>(o, pb, k1_addr, 1);
          sm90::wgmma_wait<1>();  // P0 V0_R
        }
        PAIR_TRACE(5);
        if (t128 == 0)
          part_done<kLoads, kHalf, kV, kBox>(p, &tmap, kvh, empty, loads, kK0Hi,
              next0, next0_at, k0_addr, bars0, &vmap);
        if (has1) {
          sm90::wgmma_wait<0>();
          sm90::fence_regs(o);
          sm90::fence_regs(pb);
          PAIR_TRACE(6);
          if (t128 == 0)
            part_done<kLoads, kHalf, kV, kBox>(p, &tmap, kvh, empty, loads, kK1Hi,
                next1, next1_at, k1_addr, bars1, &vmap);
        }

        // ---- next S1 (block b + 3): the RoPE atom, V_R (refilled first), then V_L ----
        // S1 queues behind the next S0 in the tensor pipe, never beside it: S0 then completes
        // first and WG0's softmax runs under S1 (issued together, the two interleave and both
        // complete late, with the pipe idle during WG0's softmax: -9 % D4 compute-only).
        if (next0) pair_sync(kBarS0Issued);
        if (next1) {
          issue_qk_atoms<T, kQAtoms, kV, kQAtoms, kBox>(s, q8, desc_q, desc_k1, bars1, parity,
                                                        true);
          issue_qk_atoms<T, kQAtoms, kHalf, kV, kBox>(s, q8, desc_q, desc_k1, bars1, parity,
                                                      !kRope);
          issue_qk_atoms<T, kQAtoms, 0, kHalf, kBox>(s, q8, desc_q, desc_k1, bars1, parity, false);
          parity ^= 1;
          PAIR_TRACE(8);
        }
        sm90::wgmma_wait<0>();
        sm90::fence_regs(o);
        sm90::fence_regs(s);
        sm90::fence_regs(pb);
        PAIR_TRACE(9);
      }
    }

    PAIR_TRACE_CHUNK(3);
    // Row sums: across the quad, then across the two warpgroups; final max from shared memory.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l[h] += __shfl_xor_sync(0xffffffff, l[h], 1);
      l[h] += __shfl_xor_sync(0xffffffff, l[h], 2);
      if (quad_col == 0) row_sum_smem[wg * kRowsPerTile + my_row[h]] = l[h];
    }
    consumers_sync<kProducer>();
    PAIR_TRACE_CHUNK(5);
    const float m_final[2] = {m_smem[my_row[0]], m_smem[my_row[1]]};
    // The next chunk's Q copies go out before this chunk's output stores: both warpgroups'
    // last wgmmas (the readers of Q and of P1, which lives in Q's RoPE atom) are done.
    if (q_tma) {  // the Q loader may refill Q now
      if (tid == 0) sm90::mbarrier_arrive(sm90::smem_addr(smem + Plan::kQEmpty));
    } else if (c + 1 < c_end) {
      const ChunkSpan next = chunk_span(p, view.chunks()[c + 1], row_base);
      if (next.n_blocks > 0) load_q_tile<kDqk>(p, next.req, kvh, row_base, valid_rows, q_addr);
    }
    PAIR_TRACE_CHUNK(6);
#if !defined(FLASHMLA_DENSE_DECODE_PROBE_NO_OUTPUT)  // diagnostic: the stores' share
    write_output<T>(p, o, m_final, row_sum_smem, my_row, valid_rows, row_base, kvh, wg, quad_col,
                    req, ch.slot);
#else  // a store that never happens keeps O live, so the steps compile as in the real kernel
    if (o[0] == 12345.0f && m_final[0] == 1.0f) reinterpret_cast<float*>(p.out)[tid] = o[tid & 127];
#endif
    PAIR_TRACE_CHUNK(4);
  }
  PAIR_TRACE_KERNEL(1);
#endif
}

}  // namespace flashmla::cuda::mla_decode
