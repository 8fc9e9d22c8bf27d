// sm_90a sparse prefill with the dense pair kernel's two-block step (opt-in until measured:
// FLASHMLA_SPARSE_SEESAW=1; docs/sparse-design.md, "Next" 3). Included by sparse_prefill.cu.
//
// The lockstep kernel (kernel.cuh) computes S for 32 keys a warpgroup, so Q is read from shared
// memory once per 32 keys, and runs S, the softmax and P V one after the other with the tensor
// cores idle in between: a prefill tile costs ~5,800 cycles against ~2,100 of tensor work
// (H200, session 27). This kernel runs the dense pair kernel's schedule instead
// (cuda/dense_decode/kernel_pair.cuh has the full derivation): warpgroup 0 computes S for key
// block b from buffer K0, warpgroup 1 for block b + 1 from K1, each a whole 64 x 64 S; the
// running max (kept lazily) and P cross through shared memory so that each warpgroup adds both
// blocks into its 256 columns of O, one warpgroup's softmax running under the other's wgmmas.
// The step is the pair kernel's, built from its pieces (pair_steps.cuh), with two changes:
//   - keys are gathered: a producer warpgroup (warps 0-1 fill K0 with the even blocks, warps 2-3
//     K1 with the odd ones) copies each buffer part (V_L = atoms 0-3, V_R = atoms 4-7, the RoPE
//     atom 8) with cp.async as soon as the consumers release it (the pair kernel's "empty"
//     barriers and release points), 8 threads per key row of an atom (128 contiguous bytes),
//     and signals each atom's "full" barrier with cp.async.mbarrier.arrive.noinc (64 arrivals
//     when the copies land) plus one plain arrival from lane 0 of each of its two warps (66);
//   - masks come from the keys' validity (index in range and within topk_length), a 64-bit row
//     per buffer that the producer writes (warp ballots) before its plain arrivals on the
//     buffer's first part; a consumer warpgroup reads it right after its S and before it
//     releases that part. Invalid keys' rows are zero-filled by the copies.
// max_logits must be the true row max, which the lazy running max is not: each warpgroup also
// keeps the exact max of its blocks, combined in the epilogue.
#pragma once

#include "cuda/dense_decode/kernel.cuh"
#include "cuda/sparse/kernel.cuh"

namespace flashmla::cuda::sparse {

namespace md = mla_decode;

// Threads and registers: two consumer warpgroups and the producer warpgroup; setmaxnreg
// redistributes the launch's 384 x 168 as each producer type says (kConsumerRegs /
// kProducerRegs; the dense pair kernel's 232 / 40 spilled the gather producers).
inline constexpr int kSeesawThreads = md::pair_threads<md::kLoadsProducer>();
static_assert(kSeesawThreads == 384, "two consumer warpgroups and a producer warpgroup");
template <int kConsumer, int kProducer>
constexpr bool redistributes_launch_registers() {
  return 2 * 128 * kConsumer + 128 * kProducer == 384 * 168;
}

// Shared memory: the pair kernel's plan (Q, K0, K1, P0, P1, the running max and scale rows, the
// atom and part barriers) plus each buffer's validity row.
template <int kDqk>
struct SeesawSmemPlan : md::PairSmemPlan<kDqk> {
  using Base = md::PairSmemPlan<kDqk>;
  static constexpr int kValid = Base::kEnd;  // uint64 [2]: bit k = key k of the buffer's block
  static constexpr int kBytes = kValid + 2 * 8 + 1024;
  static_assert(kBytes <= 227 * 1024, "the seesaw kernel's plan exceeds 227 KB");
};

// Raw scores of one 64 x 64 block with invalid keys at -inf (by a select: scores of zero-filled
// rows never survive), and the quad-reduced row maxima in the log2 domain (md::mask_rowmax's
// contract, with a validity row instead of length limits).
__device__ __forceinline__ void mask_rowmax_valid(float (&s)[32], float scale, uint64_t valid,
                                                  int quad_col, float (&mx)[2]) {
  const uint32_t bits = static_cast<uint32_t>(valid >> (2 * quad_col));  // column 8 j + {0, 1}
  const uint32_t hi = static_cast<uint32_t>(valid >> (32 + 2 * quad_col));
  mx[0] = mx[1] = -INFINITY;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int h = e / 2;
      const int bit = (8 * j + (e & 1)) % 32;
      const uint32_t word = j < 4 ? bits : hi;
      float& x = s[4 * j + e];
      x = (word >> bit) & 1u ? x : -INFINITY;
      mx[h] = fmaxf(mx[h], x);
    }
  md::quad_rowmax_scaled(mx, scale);
}

// A warpgroup's softmax of its block: S masked by the validity row, the exact row max of the
// logits kept in tmax (max_logits), the lazy running max moved through m_smem (its scale for the
// other warpgroup in scale_smem, the own rescale in sc), P = 2^(S - mu) in pb with its row sums
// in sum, and P stored to p_smem for the other warpgroup's P V.
__device__ __forceinline__ void seesaw_softmax(float (&s)[32], float scale_log2, uint64_t valid,
                                               float (&tmax)[2], float* m_smem,
                                               float* scale_smem, uint8_t* p_smem,
                                               const int (&my_row)[2], int quad_col,
                                               uint32_t (&pb)[16], float (&sc)[2],
                                               float (&sum)[2]) {
  float mx[2], mu[2];
  sum[0] = sum[1] = 0.0f;
  mask_rowmax_valid(s, scale_log2, valid, quad_col, mx);
#pragma unroll
  for (int h = 0; h < 2; ++h) tmax[h] = fmaxf(tmax[h], mx[h]);
  md::running_max(m_smem, scale_smem, my_row, quad_col, mx, mu, sc);
  md::exp_to_fragments<__nv_bfloat16>(s, scale_log2, mu, pb, sum);
  md::store_fragments(p_smem, pb, my_row, quad_col);
}

// One side of a hand-off between the consumer warpgroups (md::hand_off's rule).
__device__ __forceinline__ void seesaw_hand_off(const GatherParams& p, int bar) {
  if (p.sync_handoffs) sm90::named_barrier_sync(bar, md::kThreads);
  else sm90::named_barrier_arrive(bar, md::kThreads);
}

// Buffer part h (md::kK0Lo ...) is no longer read by this warpgroup (lane 0 of its first warp).
__device__ __forceinline__ void release_part(uint32_t empty, int h, int t128) {
  if (t128 == 0) sm90::mbarrier_arrive(empty + 8 * h);
}

// Where a seesaw producer fills: the two buffers, their atom ("full") barriers, the parts'
// "empty" barriers and the buffers' validity rows.
struct SeesawBuffers {
  uint32_t k[2];
  uint32_t bars[2];
  uint32_t empty;
  uint64_t* valid_rows;  // [2]
};

// bf16 keys (sparse prefill). The producer warpgroup's halves serve one buffer each: warps 0-1
// K0 (blocks 0, 2, ...), warps 2-3 K1 (blocks 1, 3, ...), part by part in the order the
// consumers release them (K0: RoPE, V_L, V_R; K1: RoPE, V_R, V_L), each after its "empty"
// barrier, with cp.async; an atom's barrier completes with the half's 64 noinc arrivals (the
// copies landed) and one plain arrival from lane 0 of each of its two warps, whose release also
// publishes the validity row written before the block's first part.
template <int kDqk>
struct Bf16SeesawProducer {
  static constexpr int kThreadsPerBuffer = 64;
  static constexpr int kFullArrivals = kThreadsPerBuffer + 2;
  static constexpr int kConsumerRegs = 224, kProducerRegs = 56;
  __device__ __forceinline__ static void produce(const GatherParams& p, const WorkItem& item,
                                                 int ptid, const SeesawBuffers& sb);
};

// The producer half of buffer `buf` (thread pt of 64): thread (g, j) = (pt / 8, pt % 8) copies
// chunk j of every atom row of keys 8 g .. 8 g + 7 and reports key 8 g + j's validity.
template <int kDqk>
__device__ __forceinline__ void seesaw_produce_bf16(const GatherParams& p, const WorkItem& item,
                                                    int buf, int pt, uint32_t k_addr,
                                                    uint32_t bars, uint32_t empty,
                                                    uint64_t* valid_row) {
  constexpr int kQAtoms = kDqk / kAtomDims;
  constexpr int kV = kDimV / kAtomDims;   // 8
  constexpr int kHalf = kV / 2;           // 4
  constexpr bool kRope = kQAtoms > kV;
  const Scope& sc = p.scope[0];
  const int g = pt / 8, j = pt % 8, lane = pt % 32;
  const uint8_t* base = sc.cache + item.kvh * sc.kvh_stride + j * 16;
  const int lo = buf == 0 ? md::kK0Lo : md::kK1Lo, hi = buf == 0 ? md::kK0Hi : md::kK1Hi;
  const int rope = buf == 0 ? md::kK0Rope : md::kK1Rope;
  uint32_t loads = 0;  // parity bits of the parts' "empty" phases
  for (int blk = buf; blk < item.n_tiles; blk += 2) {
    bool first = true;
    // One part: atoms [a0, a1) of every key of the group. The group's indices are loaded per
    // part (L1 hits after the first) and its offsets recomputed (g made opaque to the compiler),
    // not kept across the parts' waits in the producer's few registers.
    auto copy_part = [&](int h, int a0, int a1) {
      sm90::mbarrier_wait(empty + 8 * h, ((loads >> h) & 1) ^ 1);  // a fresh barrier passes
      loads ^= 1u << h;
      int key0 = 8 * g;
      asm volatile("" : "+r"(key0));
      if (first) {  // the validity row, read by the consumers before they release this part
        const bool own_valid = index_valid(sc, item.index(blk, key0 + j));
        const uint32_t word = __ballot_sync(0xffffffff, own_valid);
        if (lane == 0) reinterpret_cast<uint32_t*>(valid_row)[pt / 32] = word;
        first = false;
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int32_t idx = item.index(blk, key0 + i);
        const bool ok = index_valid(sc, idx);
        const uint8_t* src = ok ? base + idx * sc.key_stride : base;  // 0 bytes read if not
        const uint32_t dst = k_addr + sm90::swizzle128_offset(key0 + i, j);
        for (int a = a0; a < a1; ++a)
          sm90::cp_async_16(dst + a * kAtomBytes, src + a * 128, ok ? 16 : 0);
      }
      for (int a = a0; a < a1; ++a) sm90::cp_async_mbarrier_arrive_noinc(bars + 8 * a);
      if (lane == 0)
        for (int a = a0; a < a1; ++a) sm90::mbarrier_arrive(bars + 8 * a);
    };
    if constexpr (kRope) copy_part(rope, kV, kQAtoms);
    if (buf == 0) {
      copy_part(lo, 0, kHalf);
      copy_part(hi, kHalf, kV);
    } else {
      copy_part(hi, kHalf, kV);
      copy_part(lo, 0, kHalf);
    }
  }
}

template <int kDqk>
__device__ __forceinline__ void Bf16SeesawProducer<kDqk>::produce(const GatherParams& p,
                                                                  const WorkItem& item, int ptid,
                                                                  const SeesawBuffers& sb) {
  const int buf = ptid / kThreadsPerBuffer;  // (selects, not indexing: no local memory)
  seesaw_produce_bf16<kDqk>(p, item, buf, ptid % kThreadsPerBuffer,
                            buf == 0 ? sb.k[0] : sb.k[1], buf == 0 ? sb.bars[0] : sb.bars[1],
                            sb.empty, sb.valid_rows + buf);
}

// FP8 V3.2 keys (sparse decode, d_qk 576). All 128 producer threads fill the parts of both
// buffers in the order the consumers release them within a step (K0 RoPE, K1 RoPE, K0 V_L,
// K0 V_R, K1 V_R, K1 V_L for blocks b, b + 1), each after its "empty" barrier, and complete each
// atom's barrier with one plain arrival per thread after their stores and a proxy fence (128):
//   RoPE part (bf16 in the cache): thread (g, c) = (t / 8, t % 8) copies 16-byte chunk c of keys
//     4 g .. 4 g + 3 and prefetches line c < 4 of the same tokens into L2 (the NoPE bytes the
//     V parts read next; the RoPE load itself brings lines 4-5); warps 0-1 also publish the
//     validity row (one key a lane, warp ballots), before their arrivals;
//   V parts (256 e4m3 bytes of atoms 4 h .. 4 h + 3): thread (g, c) = (t / 16, t % 16)
//     dequantizes 16-byte chunk c (16 values, one scale) of keys 8 g .. 8 g + 7 into two bf16
//     chunks (zeros for an invalid key).
template <Dequant kMode>
struct V32SeesawProducer {
  static constexpr int kFullArrivals = kProducerThreads;
  // Keys whose chunks are in flight at once, and the register split: 4 keys spilled the
  // producer at 56 registers, and the consumers spilled at 216 (their Q RoPE registers).
  static constexpr int kKeysPerNopeBatch = 2;
  static constexpr int kConsumerRegs = 224, kProducerRegs = 56;
  __device__ __forceinline__ static void produce(const GatherParams& p, const WorkItem& item,
                                                 int pt, const SeesawBuffers& sb) {
    uint32_t loads = 0;  // parity bits of the parts' "empty" phases
    auto wait_part = [&](int h) {
      sm90::mbarrier_wait(sb.empty + 8 * h, ((loads >> h) & 1) ^ 1);  // a fresh barrier passes
      loads ^= 1u << h;
    };
    auto arrive_atoms = [&](uint32_t bars, int a0, int a1) {
      sm90::fence_proxy_async();  // the stores visible to the consumers' wgmmas
      for (int a = a0; a < a1; ++a) sm90::mbarrier_arrive(bars + 8 * a);
    };
    // The token of key `key` of block `blk`, or null when the entry is invalid.
    auto token = [&](int blk, int key) -> const uint8_t* {
      const Scope& sc = item.scope(p, blk);
      const int32_t idx = item.index(blk, key);
      if (!index_valid(sc, idx)) return nullptr;
      uint32_t offset;
      const uint8_t* block = fp8_block(sc, idx, &offset);
      return block + offset * v32::kBytesPerToken;
    };
    auto rope_part = [&](int blk, int buf) {
      wait_part(buf == 0 ? md::kK0Rope : md::kK1Rope);
      const uint32_t k = buf == 0 ? sb.k[0] : sb.k[1];
      if (pt < kTokensPerTile) {  // the validity row, read before the consumers release RoPE
        const uint32_t word = __ballot_sync(0xffffffff, token(blk, pt) != nullptr);
        if (pt % 32 == 0) reinterpret_cast<uint32_t*>(sb.valid_rows + buf)[pt / 32] = word;
      }
      int g = pt / 8;
      asm volatile("" : "+r"(g));  // (offsets recomputed per part, not held in registers)
      const int c = pt % 8;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int key = 4 * g + i;
        const uint8_t* tok = token(blk, key);
        uint4 v = make_uint4(0, 0, 0, 0);
        if (tok != nullptr) {
          v = load_nc16(tok + v32::kRopeOffset + 16 * c);
          if (c < 4) sm90::prefetch_l2(tok + 128 * c);
        }
        sm90::st_shared_16(k + (kDimV / kAtomDims) * kAtomBytes + sm90::swizzle128_offset(key, c),
                           v);
      }
      arrive_atoms(buf == 0 ? sb.bars[0] : sb.bars[1], kDimV / kAtomDims, kDimV / kAtomDims + 1);
    };
    auto nope_part = [&](int blk, int buf, int half) {
      wait_part(buf == 0 ? (half == 0 ? md::kK0Lo : md::kK0Hi)
                         : (half == 0 ? md::kK1Lo : md::kK1Hi));
      const uint32_t k = buf == 0 ? sb.k[0] : sb.k[1];
      int g = pt / 16;
      asm volatile("" : "+r"(g));
      const int c = pt % 16;                       // the part's 16-byte e4m3 chunk
      const int chunk = 16 * half + c;             // of the token's 32
      const int atom = chunk / 4;                  // 16 values = two bf16 chunks of one atom
      const int tile = chunk * 16 / v32::kTile;    // its scale
#pragma unroll
      for (int i0 = 0; i0 < 8; i0 += kKeysPerNopeBatch) {
        uint4 raw[kKeysPerNopeBatch];
        float scale[kKeysPerNopeBatch];
        bool ok[kKeysPerNopeBatch];
#pragma unroll
        for (int i = 0; i < kKeysPerNopeBatch; ++i) {
          const uint8_t* tok = token(blk, 8 * g + i0 + i);
          ok[i] = tok != nullptr;
          raw[i] = ok[i] ? load_nc16(tok + v32::kNopeOffset + 16 * chunk) : make_uint4(0, 0, 0, 0);
          scale[i] = ok[i] ? __ldg(reinterpret_cast<const float*>(tok + v32::kScaleOffset) + tile)
                           : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < kKeysPerNopeBatch; ++i) {
          uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
          if (ok[i]) dequant16<kMode>(raw[i], scale[i], lo, hi);
          const uint32_t dst = k + atom * kAtomBytes;
          const int key = 8 * g + i0 + i;
          sm90::st_shared_16(dst + sm90::swizzle128_offset(key, 2 * (chunk % 4)), lo);
          sm90::st_shared_16(dst + sm90::swizzle128_offset(key, 2 * (chunk % 4) + 1), hi);
        }
      }
      arrive_atoms(buf == 0 ? sb.bars[0] : sb.bars[1], 4 * half, 4 * half + 4);
    };
    for (int b = 0; b < item.n_tiles; b += 2) {
      const bool has1 = b + 1 < item.n_tiles;
      rope_part(b, 0);
      if (has1) rope_part(b + 1, 1);
      nope_part(b, 0, 0);
      nope_part(b, 0, 1);
      if (has1) {
        nope_part(b + 1, 1, 1);
        nope_part(b + 1, 1, 0);
      }
    }
  }
};

template <typename Producer, int kDqk>
__global__ void __launch_bounds__(kSeesawThreads, 1)
    sparse_seesaw_kernel(const __grid_constant__ GatherParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using T = __nv_bfloat16;
  using Plan = SeesawSmemPlan<kDqk>;
  constexpr int kQAtoms = Plan::kQAtoms;
  constexpr int kHalf = md::kVAtomsPerHalf;  // atoms [0, 4) = V_L, [4, 8) = V_R, 8 = RoPE
  constexpr int kV = kDimV / kAtomDims;      // 8
  constexpr bool kRope = Plan::kRopeInRegs;
  constexpr int kGroupsBeforeV = kRope ? 1 : 0;  // commit groups of an S ahead of its V atoms
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = align_smem_1024(smem_raw);
  const uint32_t bars0 = sm90::smem_addr(smem + Plan::kBars);
  const uint32_t bars1 = bars0 + 8 * kQAtoms;
  const uint32_t empty = sm90::smem_addr(smem + Plan::kEmpty);
  uint64_t* valid_rows = reinterpret_cast<uint64_t*>(smem + Plan::kValid);  // [buffer]
  const uint32_t k0_addr = sm90::smem_addr(smem + Plan::kK0);
  const uint32_t k1_addr = sm90::smem_addr(smem + Plan::kK1);
  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int a = 0; a < 2 * kQAtoms; ++a)
      sm90::mbarrier_init(bars0 + 8 * a, Producer::kFullArrivals);
    for (int h = 0; h < md::kBufferParts; ++h) sm90::mbarrier_init(empty + 8 * h, 1);
    sm90::fence_mbarrier_init();
  }
  __syncthreads();  // barriers initialised (the last CTA-wide barrier)
  const WorkItem item(p, blockIdx.x);
  const int n_blocks = item.n_tiles;

  if (tid >= md::kThreads) {
    static_assert(
        redistributes_launch_registers<Producer::kConsumerRegs, Producer::kProducerRegs>(),
        "setmaxnreg must redistribute exactly the CTA's launch registers");
    sm90::setmaxnreg_dec<Producer::kProducerRegs>();
    Producer::produce(p, item, tid - md::kThreads,
                      SeesawBuffers{{k0_addr, k1_addr}, {bars0, bars1}, empty, valid_rows});
    return;
  }
  sm90::setmaxnreg_inc<Producer::kConsumerRegs>();

  float* m_smem = reinterpret_cast<float*>(smem + Plan::kM);
  float* scale0_smem = reinterpret_cast<float*>(smem + Plan::kScale0);
  float* scale1_smem = reinterpret_cast<float*>(smem + Plan::kScale1);
  float* row_sum_smem = reinterpret_cast<float*>(smem + Plan::kRowSum);
  const uint32_t q_addr = sm90::smem_addr(smem + Plan::kQ);
  const uint32_t p0_addr = sm90::smem_addr(smem + Plan::kP0);
  const uint32_t p1_addr = sm90::smem_addr(smem + Plan::kP1);
  const int wg = tid / 128;
  const int t128 = tid % 128;
  const int warp = t128 / 32;
  const int lane = tid % 32;
  const int quad_col = lane % 4;
  const int my_row[2] = {16 * warp + lane / 4, 16 * warp + lane / 4 + 8};

  load_q_tile<kDqk>(p, item.q_offset(p), item.valid_rows, q_addr);
  sm90::cp_async_commit();
  sm90::cp_async_wait<0>();
  sm90::fence_proxy_async();
  if (tid < kRowsPerTile) m_smem[tid] = -INFINITY;
  md::consumers_sync<true>();  // Q visible to the tensor cores, running max reset

  const uint64_t desc_q = sm90::make_smem_desc(q_addr, 16, 1024);
  const uint64_t desc_k0 = sm90::make_smem_desc(k0_addr, 16, 1024);
  const uint64_t desc_k1 = sm90::make_smem_desc(k1_addr, 16, 1024);
  float o[128];
#pragma unroll
  for (int e = 0; e < 128; ++e) o[e] = 0.0f;
  float l[2] = {0.0f, 0.0f};                 // this thread's share of its warpgroup's row sums
  float tmax[2] = {-INFINITY, -INFINITY};    // exact max of this warpgroup's logits (log2)
  float s[32];
  uint32_t pb[16];
  uint32_t q8[16];
  // Q's RoPE atom to registers; its shared memory then holds P1.
  md::load_q_rope_fragments<kRope>(q8, q_addr + (kQAtoms - 1) * kAtomBytes, warp, lane);
  uint32_t parity = 0;  // of this warpgroup's buffer's next block

  // First S of each warpgroup: WG0 block 0, WG1 block 1.
  if (wg < n_blocks) {
    if (wg == 0) {
      md::issue_qk_atoms<T, kQAtoms, kV, kQAtoms, 1>(s, q8, desc_q, desc_k0, bars0, parity, true);
      md::issue_qk_atoms<T, kQAtoms, 0, kV, 1>(s, q8, desc_q, desc_k0, bars0, parity, !kRope);
    } else {
      md::issue_qk_atoms<T, kQAtoms, kV, kQAtoms, 1>(s, q8, desc_q, desc_k1, bars1, parity, true);
      md::issue_qk_atoms<T, kQAtoms, kHalf, kV, 1>(s, q8, desc_q, desc_k1, bars1, parity, !kRope);
      md::issue_qk_atoms<T, kQAtoms, 0, kHalf, 1>(s, q8, desc_q, desc_k1, bars1, parity, false);
    }
    parity ^= 1;
  }
  sm90::wgmma_wait<0>();
  sm90::fence_regs(s);

  for (int b = 0; b < n_blocks; b += 2) {
    const bool has1 = b + 1 < n_blocks;
    const bool next0 = b + 2 < n_blocks;
    const bool next1 = b + 3 < n_blocks;
    if (wg == 0) {
      // ---- softmax of S0 against the running max; P0 to shared memory for WG1 ----
      const uint64_t valid0 = valid_rows[0];
      if constexpr (kRope) release_part(empty, md::kK0Rope, t128);  // S0 and its row are read
      float sc[2], sum[2];
      seesaw_softmax(s, p.scale_log2, valid0, tmax, m_smem, scale0_smem, smem + Plan::kP0, my_row,
                     quad_col, pb, sc, sum);
#pragma unroll
      for (int h = 0; h < 2; ++h) l[h] = l[h] * sc[h] + sum[h];
      sm90::fence_proxy_async();
      seesaw_hand_off(p, md::kBarScale0);
      md::rescale_o(o, sc[0], sc[1]);

      // ---- O_L += P0 V0_L ----
      md::issue_pv_rs<T>(o, pb, k0_addr, 0);
      sm90::wgmma_wait<0>();
      sm90::fence_regs(o);
      sm90::fence_regs(pb);
      release_part(empty, md::kK0Lo, t128);

      // ---- O_L = O_L 2^(m0 - m1) + P1 V1_L ----
      md::pair_sync(md::kBarScale1);
      float sc1[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) sc1[h] = scale1_smem[my_row[h]];
      md::rescale_o(o, sc1[0], sc1[1]);
#pragma unroll
      for (int h = 0; h < 2; ++h) l[h] *= sc1[h];
      if (has1) md::issue_pv_ss<T>(o, p1_addr, k1_addr, 0);

      // ---- next S0 (block b + 2): its RoPE atom queues behind P1 V1_L; K1's V_L goes back to
      // the producer once P1 V1_L is done ----
      if (next0)
        md::issue_qk_atoms<T, kQAtoms, kV, kQAtoms, 1>(s, q8, desc_q, desc_k0, bars0, parity,
                                                       true);
      if (has1) {
        if (next0) sm90::wgmma_wait<kGroupsBeforeV>();
        else sm90::wgmma_wait<0>();
        release_part(empty, md::kK1Lo, t128);
      }
      if (next0) {
        md::issue_qk_atoms<T, kQAtoms, 0, kV, 1>(s, q8, desc_q, desc_k0, bars0, parity, !kRope);
        parity ^= 1;
        seesaw_hand_off(p, md::kBarS0Issued);
      }
      sm90::wgmma_wait<0>();
      sm90::fence_regs(o);
      sm90::fence_regs(s);
    } else {
      const uint64_t valid1 = has1 ? valid_rows[1] : 0;
      if constexpr (kRope)
        if (has1) release_part(empty, md::kK1Rope, t128);
      // ---- O_R = O_R 2^(m - m0) + P0 V0_R ----
      md::pair_sync(md::kBarScale0);
      float f0[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) f0[h] = scale0_smem[my_row[h]];
      md::rescale_o(o, f0[0], f0[1]);
      md::issue_pv_ss<T>(o, p0_addr, k0_addr, 1);

      // ---- softmax of S1 against m0 under it (no block b + 1: every key invalid, P1 = 0) ----
      float f1[2], sum[2];
      seesaw_softmax(s, p.scale_log2, valid1, tmax, m_smem, scale1_smem, smem + Plan::kP1, my_row,
                     quad_col, pb, f1, sum);
#pragma unroll
      for (int h = 0; h < 2; ++h) l[h] = l[h] * f0[h] * f1[h] + sum[h];
      sm90::fence_proxy_async();
      seesaw_hand_off(p, md::kBarScale1);

      // ---- O_R = O_R 2^(m0 - m1) + P1 V1_R (behind P0 V0_R when no row's max moved) ----
      const bool rescale =
          p.sync_handoffs ||
          sm90::named_barrier_or(md::kBarWarpgroup + 1, 128, f1[0] != 1.0f || f1[1] != 1.0f);
      if (rescale || !has1) {
        sm90::wgmma_wait<0>();
        sm90::fence_regs(o);
        md::rescale_o(o, f1[0], f1[1]);
        if (has1) md::issue_pv_rs<T>(o, pb, k1_addr, 1);
      } else {
        md::issue_pv_rs<T>(o, pb, k1_addr, 1);
        sm90::wgmma_wait<1>();  // P0 V0_R
      }
      release_part(empty, md::kK0Hi, t128);
      if (has1) {
        sm90::wgmma_wait<0>();
        sm90::fence_regs(o);
        sm90::fence_regs(pb);
        release_part(empty, md::kK1Hi, t128);
      }

      // ---- next S1 (block b + 3), queued behind the next S0: RoPE atom, V_R, V_L ----
      if (next0) md::pair_sync(md::kBarS0Issued);
      if (next1) {
        md::issue_qk_atoms<T, kQAtoms, kV, kQAtoms, 1>(s, q8, desc_q, desc_k1, bars1, parity,
                                                       true);
        md::issue_qk_atoms<T, kQAtoms, kHalf, kV, 1>(s, q8, desc_q, desc_k1, bars1, parity,
                                                     !kRope);
        md::issue_qk_atoms<T, kQAtoms, 0, kHalf, 1>(s, q8, desc_q, desc_k1, bars1, parity, false);
        parity ^= 1;
      }
      sm90::wgmma_wait<0>();
      sm90::fence_regs(o);
      sm90::fence_regs(s);
      sm90::fence_regs(pb);
    }
  }

  // Epilogue: both warpgroups' row sums and exact maxima through shared memory (the scale rows
  // are free once both have left the loop), then out / lse / max_logits.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffff, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffff, l[h], 2);
  }
  md::consumers_sync<true>();
  float* tmax_smem = wg == 0 ? scale0_smem : scale1_smem;
  if (quad_col == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_sum_smem[wg * kRowsPerTile + my_row[h]] = l[h];
      tmax_smem[my_row[h]] = tmax[h];
    }
  }
  md::consumers_sync<true>();
  float m_final[2], max_logit[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    m_final[h] = m_smem[my_row[h]];
    max_logit[h] = fmaxf(scale0_smem[my_row[h]], scale1_smem[my_row[h]]);
  }
  write_item_rows(p, item, o, m_final, max_logit, row_sum_smem, my_row, wg, quad_col);
#endif
}

// Launches the seesaw kernel over every (query token, kv head, head tile).
template <typename Producer, int kDqk>
void launch_seesaw(const GatherParams& p, cudaStream_t stream) {
  launch_per_item(&sparse_seesaw_kernel<Producer, kDqk>, p, kSeesawThreads,
                  SeesawSmemPlan<kDqk>::kBytes, stream);
}

}  // namespace flashmla::cuda::sparse
