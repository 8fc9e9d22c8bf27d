// sm_90a sparse decode with a producer warpgroup (opt-in until measured: FLASHMLA_SPARSE_PRODUCER=1;
// docs/sparse-design.md). Included by sparse_decode.cu after kernel.cuh, whose pieces it reuses.
//
// The plain kernel's 256 threads gather, dequantize and compute in lockstep, so the tensor cores
// wait while all of them convert FP8 (~3,000 of a decode tile's ~8,900 cycles, session 28).
// Here a third warpgroup (the producer, 88 registers after setmaxnreg) fills the stage the
// consumers are not reading, in two passes of 32 keys per tile with the FP8 gatherers of
// gather.cuh (4 threads a key, begin() then finish() per pass) and prefetches the next tile's
// keys into L2 while the first pass's loads are in flight. The two consumer warpgroups (208
// registers) run the lockstep step (cuda/common/lockstep_tile.cuh) on full stages only.
//
// Stage protocol (two stages, s = it % 2, per-stage mbarriers):
//   full[s]   128 arrivals: every producer thread, after its stores of tile it and a proxy fence
//             (its generic shared-memory stores visible to the consumers' wgmmas); the
//             consumers wait with parity (it / 2) % 2.
//   empty[s]  8 arrivals: lane 0 of every consumer warp once its P V of tile it is complete (the
//             last read of the stage and its bias row); the producer waits with parity
//             (it / 2) % 2 ^ 1 before filling tile it (a fresh barrier passes: tiles 0 and 1).
// Between the consumer warpgroups the step's named barriers order the rest: a warpgroup reaches
// tile it + 1's row-max barrier only after its own P V of tile it, so P and the row maxima are
// rewritten only after both warpgroups read them.
#pragma once

#include "cuda/sparse/kernel.cuh"

namespace flashmla::cuda::sparse {

// The producer warpgroup's loop (thread ptid of 128): every key tile of the item, in passes of 32
// keys, into stage it % 2 once the consumers released it.
template <typename Gather, int kDqk>
__device__ __forceinline__ void produce(const GatherParams& p, const WorkItem& item, int ptid,
                                        uint32_t k_addr, float* bias_smem, uint32_t full,
                                        uint32_t empty) {
  using Plan = SmemPlan<kDqk>;
  constexpr int kTpk = Gather::kThreadsPerKey;
  static_assert(kProducerPasses == 2, "a pass's index is one of two scalars");
  const StageWriter<false> writer{0};
  // This thread's key of pass q is q * 32 + key0 (scalars, not arrays: the pass loop is not
  // unrolled, so that one pass's registers are live at a time, and a runtime-indexed array
  // would live in local memory).
  const int key0 = ptid / kTpk, part = ptid % kTpk;
  int32_t idx0 = item.n_tiles > 0 ? item.index(0, key0) : -1;
  int32_t idx1 = item.n_tiles > 0 ? item.index(0, key0 + kProducerKeysPerPass) : -1;
  for (int it = 0; it < item.n_tiles; ++it) {
    const int s = it & 1;
    sm90::mbarrier_wait(empty + 8 * s, ((it >> 1) & 1) ^ 1);
    const bool has_next = it + 1 < item.n_tiles;
    const int32_t next0 = has_next ? item.index(it + 1, key0) : -1;
    const int32_t next1 = has_next ? item.index(it + 1, key0 + kProducerKeysPerPass) : -1;
    const uint32_t stage = k_addr + s * Plan::kTileBytes;
    float* bias = bias_smem + s * kTokensPerTile;
#pragma unroll 1
    for (int q = 0; q < kProducerPasses; ++q) {
      // (opaque to the compiler: the pass's shared-memory offsets are recomputed in the loop
      // instead of hoisted out of it into ~40 registers, which spilled)
      int key = q * kProducerKeysPerPass + key0, lane_part = part;
      asm volatile("" : "+r"(key), "+r"(lane_part));
      const KeyLane lane{key, lane_part};
      typename Gather::Regs regs;
      Gather::begin(item.scope(p, it), item.kvh, q == 0 ? idx0 : idx1, lane, stage, bias, regs);
      if (q == 0 && has_next) {  // the next tile's keys toward L2 under this pass's loads
        const Scope& next_sc = item.scope(p, it + 1);
        Gather::prefetch(next_sc, next0, KeyLane{key0, part});
        Gather::prefetch(next_sc, next1, KeyLane{key0 + kProducerKeysPerPass, part});
      }
      Gather::finish(stage, bias, regs, lane, writer);
    }
    sm90::fence_proxy_async();
    sm90::mbarrier_arrive(full + 8 * s);
    idx0 = next0;
    idx1 = next1;
  }
}

template <typename Gather, int kDqk>
__global__ void __launch_bounds__(kThreadsWithProducer, 1)
    sparse_producer_kernel(const __grid_constant__ GatherParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  static_assert(Gather::kThreadsPerKey == kThreadsPerKeySolo, "passes of 32 keys, 4 lanes each");
  using Plan = SmemPlan<kDqk>;
  constexpr int kQAtoms = Plan::kQAtoms;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = align_smem_1024(smem_raw);
  float* bias_smem = reinterpret_cast<float*>(smem + Plan::kBias);  // [stage][64]
  const uint32_t k_addr = sm90::smem_addr(smem + Plan::kK);
  const uint32_t full = sm90::smem_addr(smem + Plan::kFull);    // + 8 s
  const uint32_t empty = sm90::smem_addr(smem + Plan::kEmpty);  // + 8 s
  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int s = 0; s < kKvStages; ++s) {
      sm90::mbarrier_init(full + 8 * s, kProducerThreads);
      sm90::mbarrier_init(empty + 8 * s, kThreads / 32);
    }
    sm90::fence_mbarrier_init();
  }
  __syncthreads();  // the barriers are initialised (the last CTA-wide barrier)
  const WorkItem item(p, blockIdx.x);

  if (tid >= kThreads) {
    sm90::setmaxnreg_dec<kProducerRegs>();
    produce<Gather, kDqk>(p, item, tid - kThreads, k_addr, bias_smem, full, empty);
    return;
  }
  sm90::setmaxnreg_inc<kConsumerRegs>();

  float* row_max_smem = reinterpret_cast<float*>(smem + Plan::kRowMax);  // [2][64]
  float* row_sum_smem = reinterpret_cast<float*>(smem + Plan::kRowSum);  // [2][64]
  const uint32_t q_addr = sm90::smem_addr(smem + Plan::kQ);
  const uint32_t p_addr = sm90::smem_addr(smem + Plan::kP);
  uint8_t* p_smem = smem + Plan::kP;
  const int wg = tid / 128;                 // warpgroup: key half of S, column half of O
  const int warp = (tid / 32) % 4;          // warp in warpgroup: rows [16 warp, 16 warp + 16)
  const int lane = tid % 32;
  const int quad_col = lane % 4;            // accumulator layout: rows g and g + 8,
  const int my_row[2] = {16 * warp + lane / 4, 16 * warp + lane / 4 + 8};

  load_q_tile<kDqk>(p, item.q_offset(p), item.valid_rows, q_addr);
  sm90::cp_async_commit();
  sm90::cp_async_wait<0>();
  sm90::fence_proxy_async();
  sm90::named_barrier_sync(kBarConsumers, kThreads);  // Q visible to both warpgroups' wgmmas

  const uint64_t desc_q = sm90::make_smem_desc(q_addr, 16, 1024);
  const uint64_t desc_p = sm90::make_smem_desc(p_addr, 16, 1024);
  float o[128];
#pragma unroll
  for (int e = 0; e < 128; ++e) o[e] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};  // running max, log2 domain
  float l[2] = {0.0f, 0.0f};            // this thread's share of the row sums

  for (int it = 0; it < item.n_tiles; ++it) {
    const int s = it & 1;
    const uint32_t stage_addr = k_addr + s * Plan::kTileBytes;
    sm90::mbarrier_wait(full + 8 * s, (it >> 1) & 1);

    float sc[16], mx[2];
    lockstep_scores<kQAtoms>(sc, mx, p.scale_log2, desc_q, stage_addr,
                             bias_smem + s * kTokensPerTile, wg, quad_col);
    lockstep::softmax_pv<__nv_bfloat16, true>(sc, mx, o, m, l, row_max_smem, p_smem, desc_p,
                                              stage_addr, wg, quad_col, my_row);
    // This warp's reads of the stage (S, P V) and of its bias row are complete.
    __syncwarp();
    if (lane == 0) sm90::mbarrier_arrive(empty + 8 * s);
  }

  lockstep::publish_row_sums(l, row_sum_smem, wg, quad_col, my_row);
  sm90::named_barrier_sync(kBarConsumers, kThreads);
  write_item_rows(p, item, o, m, m, row_sum_smem, my_row, wg, quad_col);
#endif
}

// Launches the producer kernel over every (query token, kv head, head tile).
template <typename Gather, int kDqk>
void launch_producer(const GatherParams& p, cudaStream_t stream) {
  launch_per_item(&sparse_producer_kernel<Gather, kDqk>, p, kThreadsWithProducer,
                  SmemPlan<kDqk>::kBytesWithProducer, stream);
}

}  // namespace flashmla::cuda::sparse
