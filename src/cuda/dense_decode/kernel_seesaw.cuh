// sm_90a dense MLA decode, TMA path: the "seesaw" schedule (page sizes that are multiples of
// 64). Included by kernel.cuh; shares its loaders and the SmemPlan.
//
// Same tiles and data layout as main_kernel (warpgroup w computes S for tokens [32w, 32w + 32) of
// each 64-token tile and owns O[:, 256w, 256w + 256)), but the two warpgroups no longer run in
// lockstep. Online softmax is applied to the two token halves in turn:
//   WG0: S_a -> m_a = max(m, rowmax S_a), P_a = exp2(S_a - m_a)  -> publish (m_a, P_a)
//        O_L = O_L * 2^(m - m_a) + P_a V_a,L   | wait (m_b, P_b)
//        O_L = O_L * 2^(m_a - m_b) + P_b V_b,L
//   WG1: S_b, rowmax            | wait (m_a, P_a): O_R = O_R * 2^(m - m_a) + P_a V_a,R (issued)
//        m_b = max(m_a, rowmax S_b), P_b = exp2(S_b - m_b) -> publish (m_b, P_b)
//        O_R = O_R * 2^(m_a - m_b) + P_b V_b,R
// which is exactly online softmax over the tile, while one warpgroup's exponentials and
// rescales run under the other's wgmma (KERNEL-NOTES.md, "seesaw"). WG1 trails WG0 by about half
// a tile; its thread 128 refills each KV stage (TMA) once both warpgroups released it.
//
// Hand-offs (named barriers of 256 threads: one warpgroup arrives, the other syncs):
//   kBarA  WG0 -> WG1   m_a and P_a are in shared memory
//   kBarB  WG1 -> WG0   m_b and P_b are in shared memory
//   kBarC  WG1 -> WG0   WG1's P_a V_a,R finished: P_a / m_a may be overwritten (next tile)
#pragma once

namespace flashmla::cuda::mla_decode {

inline constexpr int kBarA = 1;
inline constexpr int kBarB = 2;
inline constexpr int kBarC = 3;
inline constexpr int kBarWg0 = 4;  // 128 threads: a warpgroup's P rows are all in smem
inline constexpr int kBarWg1 = 5;
inline constexpr int kProducerThread = 128;  // first thread of WG1

// O[:, this warpgroup's half] *= scale per row; skipped warp-wide when every scale is 1.
__device__ __forceinline__ void rescale_o(float (&o)[128], float s0, float s1) {
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_RESCALE)  // diagnostic build: O never rescaled
  return;
#endif
  if (__all_sync(0xffffffff, s0 == 1.0f && s1 == 1.0f)) return;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    o[4 * j + 0] *= s0;
    o[4 * j + 1] *= s0;
    o[4 * j + 2] *= s1;
    o[4 * j + 3] *= s1;
  }
}

// Issues O_w += P[:, 32 half, 32 half + 32) V[32 half .. +32 tokens, 256 w .. +256 dims).
template <typename T>
__device__ __forceinline__ void issue_pv_half(float (&o)[128], uint64_t desc_p, uint32_t stage_addr,
                                              int wg, int half) {
  const uint64_t desc_v =
      sm90::make_smem_desc(stage_addr + wg * (kDimVPerWarpgroup / kAtomDims) * kAtomBytes,
                           kAtomBytes, 1024);
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 2; ++kk)
    sm90::wgmma_m64n256k16_ss_tb<T>(o, sm90::desc_advance(desc_p, (2 * half + kk) * 32),
                                    sm90::desc_advance(desc_v, (2 * half + kk) * 16 * 128), 1);
  sm90::wgmma_commit();
}

template <typename T, int kDqk>
__global__ void __launch_bounds__(kThreads, 1)
    seesaw_kernel(const __grid_constant__ MainParams p, const __grid_constant__ CUtensorMap tmap,
                const __grid_constant__ CUtensorMap qmap, const __grid_constant__ CUtensorMap) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Plan = SmemPlan<kDqk>;
  constexpr int kQAtoms = Plan::kQAtoms;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = align_smem_1024(smem_raw);
  float* m_a_smem = reinterpret_cast<float*>(smem + Plan::kRowMax);  // [64] WG0 -> WG1
  float* m_b_smem = m_a_smem + kRowsPerTile;                          // [64] WG1 -> WG0
  float* row_sum_smem = reinterpret_cast<float*>(smem + Plan::kRowSum);  // [2][64]
  const uint32_t q_addr = sm90::smem_addr(smem + Plan::kQ);
  const uint32_t k_addr = sm90::smem_addr(smem + Plan::kK);
  const uint32_t p_addr = sm90::smem_addr(smem + Plan::kP);
  uint8_t* p_smem = smem + Plan::kP;

  const int tid = threadIdx.x;
  const int wg = tid / 128;
  const int warp = (tid / 32) % 4;
  const int lane = tid % 32;
  const int quad_row = lane / 4;
  const int quad_col = lane % 4;
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

  const uint64_t desc_q = sm90::make_smem_desc(q_addr, 16, 1024);
  const uint64_t desc_p = sm90::make_smem_desc(p_addr, 16, 1024);

  // full[stage]: TMA completion of the stage's tile; empty[stage]: one arrival per warpgroup.
  const uint32_t full_bar = sm90::smem_addr(smem + Plan::kBars);
  const uint32_t empty_bar = full_bar + 8 * kKvStages;
  const uint64_t policy =
      p.kv_evict_normal ? sm90::l2_policy_evict_normal() : sm90::l2_policy_evict_first();
  if (tid == 0) {
    for (int st = 0; st < kKvStages; ++st) sm90::mbarrier_init(full_bar + 8 * st, 1);
    for (int st = 0; st < kKvStages; ++st) sm90::mbarrier_init(empty_bar + 8 * st, kWarpgroups);
    sm90::fence_mbarrier_init();
  }
  uint32_t full_phase = 0;   // bit s: parity of the next completion of stage s's full barrier
  uint32_t empty_phase = 3;  // producer: parity to wait for before refilling stage s
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
    const int32_t* table = p.block_table + req * p.bt_stride[0];
    // The first tile's table entry is fetched beside the length, not after it (within the
    // table: the chunk's tiles and the clamped length's).
    const int64_t tok_first = int64_t{ch.tile_begin} * kTokensPerTile;
    if (tid == kProducerThread && ch.tile_begin < ch.tile_end && tok_first < p.max_len)
      sm90::prefetch_l1(table + (tok_first / p.page_block_size) * p.bt_stride[1]);
    const int64_t len = sched::clamped_len(p.seqlens[req * p.seqlens_stride], p.max_len);

    int64_t limit[2];
    row_limits(p, len, my_row, valid_rows, row_base, limit);
    int64_t min_limit = len, max_limit = len;
    if (p.causal) {
      min_limit = len - p.s_q + row_base / p.group + 1;
      min_limit = min_limit < 0 ? 0 : min_limit;
      max_limit = len - p.s_q + (row_base + valid_rows - 1) / p.group + 1;
      max_limit = max_limit < 0 ? 0 : max_limit;
    }
    const int64_t tok_begin = int64_t{ch.tile_begin} * kTokensPerTile;
    int64_t tok_end = int64_t{ch.tile_end} * kTokensPerTile;
    tok_end = tok_end < max_limit ? tok_end : max_limit;
    const int n_tiles = tok_end > tok_begin
                            ? static_cast<int>((tok_end - tok_begin + kTokensPerTile - 1) /
                                               kTokensPerTile)
                            : 0;

    // The previous chunk is done with every buffer.
    __syncthreads();
    if (n_tiles > 0) {
      load_q_tile<kDqk>(p, req, kvh, row_base, valid_rows, q_addr);
      if (tid == kProducerThread) {
        produce(table, tok_begin, stage_of_tile0);
        if (n_tiles > 1) produce(table, tok_begin + kTokensPerTile, stage_of_tile0 ^ 1);
      }
    }
    sm90::cp_async_commit();
    sm90::cp_async_wait<0>();
    sm90::fence_proxy_async();
    __syncthreads();  // Q visible to the tensor cores

    float o[128];
#pragma unroll
    for (int e = 0; e < 128; ++e) o[e] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY};  // running max (log2 domain), identical in both WGs
    float l[2] = {0.0f, 0.0f};            // this thread's share of its warpgroup's row sums

    for (int it = 0; it < n_tiles; ++it) {
      const int stage = (stage_of_tile0 + it) & 1;
      const uint32_t stage_addr = k_addr + stage * Plan::kTileBytes;
      const int64_t tile_tok0 = tok_begin + int64_t{it} * kTokensPerTile;
      const uint32_t stage_full = full_bar + 8 * stage;
      const uint32_t parity = (full_phase >> stage) & 1;
      const bool tail = tile_tok0 + kTokensPerTile > len;
      if (tail) {  // last tile of the request: clear its tail
        // WG0 takes the kBarC hand-off (normally taken after S) before the CTA-wide barrier:
        // with bar.sync hand-offs WG1 waits in kBarC for WG0, which must not wait for WG1 here.
        if (wg == 0 && it > 0) sm90::named_barrier_sync(kBarC, kThreads);
        sm90::mbarrier_wait(stage_full, parity);
        zero_tail<kDqk>(smem + Plan::kK + stage * Plan::kTileBytes,
                        static_cast<int>(len - tile_tok0));
        sm90::fence_proxy_async();
        __syncthreads();
      }

      // S_w = Q K[32 wg, 32 wg + 32)^T; scaled, masked, row max of this warpgroup's 32 keys.
      float s[16];
      {
        const uint64_t desc_k =
            sm90::make_smem_desc(stage_addr + wg * kTokensPerWarpgroup * 128, 16, 1024);
        sm90::mbarrier_wait(stage_full, parity);
        lockstep::qk_half<T, kQAtoms>(s, desc_q, desc_k);
        full_phase ^= 1u << stage;
      }
      float mx[2];
      scale_mask_rowmax_half(s, p.scale_log2, tile_tok0 + kTokensPerTile > min_limit, limit,
                             tile_tok0 + wg * kTokensPerWarpgroup + 2 * quad_col, mx);

      // P = exp2(S - max) of this warpgroup's keys into the P tile (and the row sums).
      auto exp_and_store = [&](const float (&mu)[2], float (&rowsum)[2]) {
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float p0 = fast_exp2(s[4 * j + 2 * h] - mu[h]);
            const float p1 = fast_exp2(s[4 * j + 2 * h + 1] - mu[h]);
            rowsum[h] += p0 + p1;
            const int tok = wg * kTokensPerWarpgroup + 8 * j + 2 * quad_col;
            *reinterpret_cast<uint32_t*>(p_smem + sm90::swizzle128_offset(my_row[h], tok / 8) +
                                         (tok % 8) * 2) = pack2<T>(p0, p1);
          }
      };

      if (wg == 0) {
        float m_a[2], mu_a[2], alpha[2], rowsum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          m_a[h] = fmaxf(m[h], mx[h]);
          mu_a[h] = m_a[h] == -INFINITY ? 0.0f : m_a[h];  // nothing seen yet: P = 0, no NaN
          alpha[h] = fast_exp2(m[h] - mu_a[h]);
        }
        // WG1 is done with the previous P_a / m_a.
        if (it > 0 && !tail) sm90::named_barrier_sync(kBarC, kThreads);
        exp_and_store(mu_a, rowsum);
        if (quad_col == 0) {
          m_a_smem[my_row[0]] = m_a[0];
          m_a_smem[my_row[1]] = m_a[1];
        }
        sm90::fence_proxy_async();
        sm90::named_barrier_sync(kBarWg0, 128);  // all four warps' rows of P_a, for our wgmma
        hand_off(p, kBarA);
        rescale_o(o, alpha[0], alpha[1]);
#pragma unroll
        for (int h = 0; h < 2; ++h) l[h] = l[h] * alpha[h] + rowsum[h];
        issue_pv_half<T>(o, desc_p, stage_addr, wg, 0);

        sm90::named_barrier_sync(kBarB, kThreads);
        float beta[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float m_b = m_b_smem[my_row[h]];
          beta[h] = fast_exp2(m_a[h] - (m_b == -INFINITY ? 0.0f : m_b));
          m[h] = m_b;
          l[h] *= beta[h];
        }
        sm90::wgmma_wait<0>();
        sm90::fence_regs(o);
        rescale_o(o, beta[0], beta[1]);
        issue_pv_half<T>(o, desc_p, stage_addr, wg, 1);
        sm90::wgmma_wait<0>();
        sm90::fence_regs(o);
        if (tid == 0) sm90::mbarrier_arrive(empty_bar + 8 * stage);
      } else {
        sm90::named_barrier_sync(kBarA, kThreads);
        float m_a[2], mu_a[2], m_b[2], mu_b[2], rowsum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          m_a[h] = m_a_smem[my_row[h]];
          mu_a[h] = m_a[h] == -INFINITY ? 0.0f : m_a[h];
          m_b[h] = fmaxf(m_a[h], mx[h]);
          mu_b[h] = m_b[h] == -INFINITY ? 0.0f : m_b[h];
        }
        rescale_o(o, fast_exp2(m[0] - mu_a[0]), fast_exp2(m[1] - mu_a[1]));
        issue_pv_half<T>(o, desc_p, stage_addr, wg, 0);  // runs under the exponentials below
        exp_and_store(mu_b, rowsum);
        if (quad_col == 0) {
          m_b_smem[my_row[0]] = m_b[0];
          m_b_smem[my_row[1]] = m_b[1];
        }
        sm90::fence_proxy_async();
        sm90::named_barrier_sync(kBarWg1, 128);  // all four warps' rows of P_b, for our wgmma
        hand_off(p, kBarB);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          l[h] = l[h] * fast_exp2(m[h] - mu_b[h]) + rowsum[h];
          m[h] = m_b[h];
        }
        sm90::wgmma_wait<0>();
        sm90::fence_regs(o);
        if (it + 1 < n_tiles) hand_off(p, kBarC);
        rescale_o(o, fast_exp2(m_a[0] - mu_b[0]), fast_exp2(m_a[1] - mu_b[1]));
        issue_pv_half<T>(o, desc_p, stage_addr, wg, 1);
        sm90::wgmma_wait<0>();
        sm90::fence_regs(o);
        if (tid == kProducerThread) {
          sm90::mbarrier_arrive(empty_bar + 8 * stage);
          if (it + 2 < n_tiles) produce(table, tile_tok0 + 2 * kTokensPerTile, stage);
        }
      }
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
