// Dense MHA prefill forward on sm_90a, warp-specialised (FLASHMLA_MHA_FWD=2): the first
// version's tile (kernel.cuh: 128 rows of a (sequence, kv head), key tiles of 128, the same
// S / softmax / P V steps and shared-memory layout) with
//   - a producer warpgroup that alone issues the cp.async copies (Q with tile 0, then K and V of
//     each tile into a two-stage ring): full[s] gets its 128 arrivals once a tile's copies have
//     landed (each producer thread waits for its own, then a proxy fence), empty[s] the eight
//     consumer warps' releases;
//   - the two consumer warpgroups taking turns to issue their wgmmas (two named barriers, FA3's
//     ping-pong), so that one warpgroup's softmax runs under the other's products:
//     A: S_t | B: S_t | A: P V_t | B: P V_t | A: S_t+1 ...
//   - setmaxnreg: 216 registers a consumer thread, 72 a producer thread (the launch's 384 x 168).
// scripts/mha_pingpong_protocol.py model-checks this barrier protocol on the CPU (run by the
// test command). Written in session 30 without a GPU: opt-in, not yet run.
#pragma once

#include <cstdint>

#include "cuda/common/attn_math.cuh"
#include "cuda/common/sm90_ptx.cuh"
#include "cuda/mha_prefill/config.h"
#include "cuda/mha_prefill/copies.cuh"
#include "cuda/mha_prefill/kernel.cuh"
#include "cuda/mha_prefill/tiling.h"

namespace flashmla::cuda::mha {

inline constexpr int kWsThreads = 384;  // consumer warpgroups 0 and 1, producer warpgroup 2
inline constexpr int kWsConsumerRegs = 216, kWsProducerRegs = 72;
static_assert(2 * 128 * kWsConsumerRegs + 128 * kWsProducerRegs == kWsThreads * 168,
              "setmaxnreg must redistribute exactly the launch's registers");
inline constexpr int kBarTurnA = 1, kBarTurnB = 2;  // named barriers: a warpgroup's turn

// The first version's plan plus the ring's barriers: full[2], empty[2].
template <int kDqk>
struct WsSmemPlan {
  using Base = SmemPlan<kDqk>;
  static constexpr int kBars = Base::kBytes;
  static constexpr int kLaunchBytes = kBars + 4 * 8 + 1024;
  static_assert(kLaunchBytes <= 227 * 1024, "shared memory plan exceeds the sm_90 limit");
};

// The producer warpgroup: two of the first version's 256 copy slots a thread.
template <int kDqk>
__device__ void ws_produce(const Params& p, const Sequence& sq, const TilePlan& tp, int kvh,
                           uint32_t base, uint32_t full, uint32_t empty, int pt) {
  using Plan = SmemPlan<kDqk>;
  static_assert(kPasses * kRowsPerPass * 128 == Plan::kKeyAtomBytes,
                "load_keys' tile layout is the first version's K / V stage layout");
  const RowSource qs{static_cast<const uint16_t*>(p.q), p.q_stride_tok, p.q_stride_head};
  const RowSource ks{static_cast<const uint16_t*>(p.k), p.k_stride_tok, p.k_stride_head};
  const RowSource vs{static_cast<const uint16_t*>(p.v), p.v_stride_tok, p.v_stride_head};
  // One slot at a time (not unrolled): a slot's 20-28 source addresses fit the producer's
  // registers, two slots' did not.
#pragma unroll 1
  for (int v = 0; v < 2; ++v)
    load_rows128<kDqk>(qs, sq.q0, tp.rows, tp.row0, kvh, p.group, base + Plan::kQ,
                       CopySlot(pt + 128 * v));
  for (int it = 0; it <= tp.n_tiles; ++it) {
    if (it >= 1) {  // the previous tile (and Q with tile 0) landed: hand it over
      sm90::cp_async_wait<0>();
      sm90::fence_proxy_async();
      sm90::mbarrier_arrive(full + 8 * ((it - 1) & 1));
    }
    if (it == tp.n_tiles) break;
    const int s = it & 1;
    if (it >= 2) sm90::mbarrier_wait(empty + 8 * s, ((it >> 1) - 1) & 1);
    const uint32_t stage = base + Plan::kStage0 + s * Plan::kStageBytes;
    const int key0 = it * kKeys;
#pragma unroll 1
    for (int v = 0; v < 2; ++v) {
      const CopySlot cs(pt + 128 * v);
      load_keys<kDqk, kPasses, false>(ks, sq.k0 + key0, sq.s_k - key0, kvh, stage, cs);
      load_keys<kDimV, kPasses, false>(vs, sq.k0 + key0, sq.s_k - key0, kvh,
                                       stage + Plan::kKBytes, cs);
    }
    sm90::cp_async_commit();
  }
}

template <typename T, int kDqk>
__global__ void __launch_bounds__(kWsThreads, 1) mha_fwd_ws_kernel(const __grid_constant__ Params p) {
  using Plan = SmemPlan<kDqk>;
  extern __shared__ uint8_t smem_raw[];
  const uint32_t base = sm90::smem_addr(align_smem_1024(smem_raw));
  const uint32_t full = base + WsSmemPlan<kDqk>::kBars, empty = full + 16;
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32, quad_col = lane % 4;
  const int kvh = blockIdx.y;
  if (static_cast<int>(blockIdx.z) == p.b) {
    if (tid < kThreads) clear_tail_rows<T>(p, kvh, tid);
    return;
  }
  const Sequence sq = sequence_bounds(p.cu_q, p.cu_k, blockIdx.z, p.total_q, p.total_k);
  const TilePlan tp = plan_tile(sq, p.causal != 0, p.group, blockIdx.x, gridDim.x);
  if (tp.row0 >= tp.rows) return;
  if (tid == 0) {
    for (int s = 0; s < 2; ++s) {
      sm90::mbarrier_init(full + 8 * s, 128);  // the producer's threads
      sm90::mbarrier_init(empty + 8 * s, 8);   // lane 0 of each consumer warp
    }
    sm90::fence_mbarrier_init();
  }
  __syncthreads();  // barriers initialised (the last CTA-wide barrier)

  if (wg == 2) {
    sm90::setmaxnreg_dec<kWsProducerRegs>();
    if (tp.n_tiles > 0) ws_produce<kDqk>(p, sq, tp, kvh, base, full, empty, tid - kThreads);
    return;
  }
  sm90::setmaxnreg_inc<kWsConsumerRegs>();

  const ThreadRows r(sq, tp, p.group, p.causal != 0, kvh, tid);
  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  if (tp.n_tiles > 0) {
    const int bar_mine = wg == 0 ? kBarTurnA : kBarTurnB;
    const int bar_other = wg == 0 ? kBarTurnB : kBarTurnA;
    const uint64_t desc_q = sm90::make_smem_desc(base + Plan::kQ + wg * Plan::kQWgBytes, 16, 1024);
    if (wg == 1) sm90::named_barrier_arrive(kBarTurnA, kThreads);  // A issues first
    for (int it = 0; it < tp.n_tiles; ++it) {
      const int s = it & 1;
      const uint32_t stage = base + Plan::kStage0 + s * Plan::kStageBytes;
      sm90::mbarrier_wait(full + 8 * s, (it >> 1) & 1);
      sm90::fence_proxy_async();  // the producer fenced its copies too; this side costs nothing

      float sc[64];
      sm90::named_barrier_sync(bar_mine, kThreads);
      issue_qk<T, kDqk>(sc, desc_q, stage);
      sm90::named_barrier_arrive(bar_other, kThreads);
      sm90::wgmma_wait<0>();
      sm90::fence_regs(sc);

      uint32_t pb[32];
      online_softmax<T>(sc, tp, it, r.limit, quad_col, p.scale_log2, m, l, o, pb);

      sm90::named_barrier_sync(bar_mine, kThreads);
      issue_pv<T, kDqk>(o, pb, stage);
      // B's last P V is the last turn: no arrival that A would never sync on.
      if (!(wg == 1 && it == tp.n_tiles - 1)) sm90::named_barrier_arrive(bar_other, kThreads);
      sm90::wgmma_wait<0>();
      sm90::fence_regs(o);
      __syncwarp();
      if (lane == 0) sm90::mbarrier_arrive(empty + 8 * s);  // this warp is done with the stage
    }
  }
  store_rows<T>(p, sq, r, quad_col, o, m, l);
}

}  // namespace flashmla::cuda::mha
