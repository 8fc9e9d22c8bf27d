// Named constants of the sm_90a sparse attention kernels (sparse decode over FP8 caches, sparse
// prefill over a bf16 cache). docs/sparse-design.md explains the choices.
#pragma once

namespace flashmla::cuda::sparse {

// A CTA owns one query token, one kv head and a tile of up to 64 of that kv head's query heads
// (wgmma M). Every head of the tile attends to the same selected keys, so each key is gathered
// (and, for FP8 caches, dequantized) once per CTA.
inline constexpr int kRowsPerTile = 64;
inline constexpr int kTokensPerTile = 64;   // selected keys per KV tile
inline constexpr int kDimV = 512;           // d_v: the first 512 dims of each key
inline constexpr int kAtomDims = 64;        // 128-byte swizzle atom: 64 x bf16
inline constexpr int kAtomBytes = kRowsPerTile * 128;  // one 64-row x 64-dim atom column
inline constexpr int kChunkElems = 8;       // 16-byte chunk = 8 x bf16
inline constexpr int kChunksPerAtomRow = 128 / 16;

// Two consumer warpgroups in lockstep: warpgroup w computes S for keys [32 w, 32 w + 32) of a tile
// and owns O's columns [256 w, 256 w + 256) (128 fp32 registers per thread).
inline constexpr int kWarpgroups = 2;
inline constexpr int kThreads = kWarpgroups * 128;
inline constexpr int kTokensPerWarpgroup = kTokensPerTile / kWarpgroups;  // 32 = wgmma N of S
inline constexpr int kDimVPerWarpgroup = kDimV / kWarpgroups;             // 256 = wgmma N of PV
inline constexpr int kKvStages = 2;

// Gathering: every thread loads one index and gathers a part of that key. A CTA alone gathers all
// 64 keys of a tile (4 threads a key); in a crossover pair (opt-in; sparse decode with two head
// tiles of a token: a cluster of two CTAs) each CTA gathers and dequantizes 32 keys of every tile
// (8 threads a key) into both CTAs' shared memory, halving the dequantization per CTA.
inline constexpr int kThreadsPerKeySolo = kThreads / kTokensPerTile;
inline constexpr int kPairKeys = kTokensPerTile / 2;
inline constexpr int kThreadsPerKeyPair = kThreads / kPairKeys;

// Split over the keys (small batches, partial last waves): a cluster of up to 8 CTAs (the
// portable cluster size) shares a work item's key tiles. split_plan.h chooses the size.
inline constexpr int kMaxSplitLog2 = 3;

// Producer kernel (sparse decode, opt-in until measured: FLASHMLA_SPARSE_PRODUCER=1): a third
// warpgroup gathers and dequantizes every key tile into the stage the consumers do not read,
// in passes of 32 keys (4 threads a key, as the CTA alone gathers), so the two consumer
// warpgroups run only the tensor and softmax work. setmaxnreg hands registers from the producer
// to the consumers: the CTA launches with 384 x 168 (the register file rounded down to a
// multiple of 8 per thread) and must redistribute exactly that.
inline constexpr int kProducerThreads = 128;
inline constexpr int kThreadsWithProducer = kThreads + kProducerThreads;
inline constexpr int kProducerKeysPerPass = kProducerThreads / kThreadsPerKeySolo;  // 32
inline constexpr int kProducerPasses = kTokensPerTile / kProducerKeysPerPass;       // 2
inline constexpr int kLaunchRegsWithProducer = 168;
inline constexpr int kConsumerRegs = 208;
inline constexpr int kProducerRegs = 88;
static_assert(kThreads * kConsumerRegs + kProducerThreads * kProducerRegs ==
                  kThreadsWithProducer * kLaunchRegsWithProducer,
              "setmaxnreg must redistribute exactly the CTA's launch registers");

// Named barriers (0 is __syncthreads).
inline constexpr int kBarRowMax = 1;  // both warpgroups published their row maxima
inline constexpr int kBarP = 2;       // both halves of P are in shared memory
inline constexpr int kBarConsumers = 3;  // producer kernel: the two consumer warpgroups

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

// At most two scopes of keys per query (sparse decode's main and extra caches).
inline constexpr int kMaxScopes = 2;

static_assert(kThreadsPerKeySolo == 4 && kThreadsPerKeyPair == 8,
              "gatherers split a key's 16-byte chunks 4 or 8 ways (gather.cuh)");

}  // namespace flashmla::cuda::sparse
