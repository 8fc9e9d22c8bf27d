// Diagnostic builds of the pair kernel (scripts/build-diagnostics builds them; default builds
// compile every hook below to nothing).
//
// Timeline, -DFLASHMLA_DENSE_DECODE_TRACE=1, run with FLASHMLA_DENSE_DECODE_TRACE=N: the N-th main
// launch records, in CTA (0, 0, 0), the clock64 of each PAIR_TRACE point of the leader thread of
// each warpgroup over steps [kTraceFirstStep, kTraceFirstStep + kTraceSteps) of its first chunk,
// the chunk boundaries and the kernel's clock rate, and prints them (stderr). With
// -DFLASHMLA_DENSE_DECODE_TRACE_ALL_STEPS=1 it prints one line per step (0-31) instead. Step
// lengths (the same point in consecutive steps) are reliable; points inside a step are not to
// be read as an order: ptxas moves a clock read across nearby instructions, by up to several
// hundred cycles where they wait on a load.
//
// Removing work, for finding what bounds a step (results are garbage in every one of these):
//   -DFLASHMLA_DENSE_DECODE_PROBE_NO_COPY=1     KV barriers complete at once (compute only)
//   -DFLASHMLA_DENSE_DECODE_PROBE_NO_MMA=1      no wgmma (the load protocol and CUDA-core work)
//   -DFLASHMLA_DENSE_DECODE_PROBE_L2_ONLY=1     every KV copy reads cache block 0 or 1 (L2 hits:
//                                               the copy path without DRAM; results wrong)
//   -DFLASHMLA_DENSE_DECODE_PROBE_SKIP_PARTS=M  the KV parts in bit mask M are never copied
//                                               (their barriers complete at once; 1 V_L, 2 V_R,
//                                               4 RoPE): which part's copy the step waits for
//   -DFLASHMLA_DENSE_DECODE_PROBE_DOUBLE_PARTS=M  the KV parts in mask M are copied twice (the
//                                               same bytes again: results right; twice their
//                                               shared-memory writes and L2 -> SM traffic)
//   -DFLASHMLA_DENSE_DECODE_PROBE_NO_SOFTMAX=1  no max / exp (P = S)
//   -DFLASHMLA_DENSE_DECODE_PROBE_NO_RESCALE=1  O never rescaled
//   -DFLASHMLA_DENSE_DECODE_PROBE_NO_PSTORE=1   P never stored to shared memory
//   -DFLASHMLA_DENSE_DECODE_PROBE_NO_HANDOFF=1  no cross-warpgroup named barriers (pair kernel
//                                               only: the seesaw kernel would deadlock)
//   -DFLASHMLA_DENSE_DECODE_PROBE_NO_EXP=1      the softmax without its exp2 (no MUFU work)
//   -DFLASHMLA_DENSE_DECODE_PROBE_NO_PFENCE=1   no proxy fence after the P stores
//   -DFLASHMLA_DENSE_DECODE_PROBE_SMID_ROLES=1|2  a CTA's (q tile, part) from its SM id, a part's
//                                               q tiles on consecutive / strided SM ids (only
//                                               for grids of one CTA per SM, one kv head)
//   -DFLASHMLA_DENSE_DECODE_PROBE_NO_COMBINE=1  the combine kernel is never launched
//   -DFLASHMLA_DENSE_DECODE_PROBE_NO_OUTPUT=1   the pair kernel stores no output (its chunk
//                                               boundaries without the stores)
//   -DFLASHMLA_DENSE_DECODE_PROBE_Q_ONCE=1      the Q loader (Q by TMA) loads only a CTA's first
//                                               chunk's tile; later chunks reuse it
//   -DFLASHMLA_SCHED_PROBE_NEVER_WHOLE=1        the schedule always splits to balance (the GPU
//                                               plan kernel; no whole-request schedules)
#pragma once

#include <cstdio>
#include <cstdlib>

#include "cuda/common/cuda_check.h"
#include "cuda/dense_decode/traits.h"

namespace flashmla::cuda::mla_decode {

#if defined(FLASHMLA_DENSE_DECODE_TRACE_ALL_STEPS)
inline constexpr int kTraceFirstStep = 0;
inline constexpr int kTraceSteps = 32;
#else
inline constexpr int kTraceFirstStep = 6;
inline constexpr int kTraceSteps = 4;
#endif
inline constexpr int kTraceEvents = 16;
inline constexpr int kTraceStepSlots = 2 * kTraceSteps * kTraceEvents;
// Then, for thread 0 of CTA (0, 0, 0): per chunk (up to kTraceChunks) kTraceChunkEvents clocks
// (0 chunk top, 7 Q's copies landed, 1 Q visible, 2 first S done, 3 last step done, 5 row sums
// synced, 6 next Q's copies issued, 4 output stored), then the kernel's first and last clock64
// and globaltimer (ns) readings.
inline constexpr int kTraceChunks = 4;
inline constexpr int kTraceChunkEvents = 8;
inline constexpr int kTraceKernelSlot = kTraceStepSlots + kTraceChunks * kTraceChunkEvents;
inline constexpr int kTraceSlots = kTraceKernelSlot + 4;

#if defined(FLASHMLA_DENSE_DECODE_TRACE)
#define PAIR_TRACE(ev)                                                                     \
  do {                                                                                     \
    if (p.trace != nullptr && t128 == 0 && blockIdx.x == 0 && blockIdx.y == 0 &&           \
        blockIdx.z == 0 && c == c_begin && b / 2 >= kTraceFirstStep &&                     \
        b / 2 < kTraceFirstStep + kTraceSteps)                                             \
      p.trace[(wg * kTraceSteps + b / 2 - kTraceFirstStep) * kTraceEvents + (ev)] = clock64(); \
  } while (0)
#define PAIR_TRACE_CHUNK(ev)                                                               \
  do {                                                                                     \
    if (p.trace != nullptr && tid == 0 && blockIdx.x == 0 && blockIdx.y == 0 &&            \
        blockIdx.z == 0 && c - c_begin < kTraceChunks)                                     \
      p.trace[kTraceStepSlots + (c - c_begin) * kTraceChunkEvents + (ev)] = clock64();     \
  } while (0)
#define PAIR_TRACE_KERNEL(slot)                                                            \
  do {                                                                                     \
    if (p.trace != nullptr && threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0 &&    \
        blockIdx.z == 0) {                                                                 \
      uint64_t ns;                                                                         \
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));                               \
      p.trace[kTraceKernelSlot + 2 * (slot)] = clock64();                                  \
      p.trace[kTraceKernelSlot + 2 * (slot) + 1] = static_cast<long long>(ns);             \
    }                                                                                      \
  } while (0)
#else
#define PAIR_TRACE_CHUNK(ev) \
  do {                       \
  } while (0)
#define PAIR_TRACE_KERNEL(slot) \
  do {                          \
  } while (0)
#define PAIR_TRACE(ev) \
  do {                 \
  } while (0)
#endif

#if defined(FLASHMLA_DENSE_DECODE_TRACE)
// The launch FLASHMLA_DENSE_DECODE_TRACE names (1 = the first) of the pair kernel is traced.
inline bool trace_this_launch(const MainParams& p) {
  static int calls = 0;
  const char* env = std::getenv("FLASHMLA_DENSE_DECODE_TRACE");
  if (env == nullptr || !p.use_tma || p.variant != kVariantPair) return false;
  return ++calls == std::atoi(env);
}
inline void print_trace(const long long* dev) {
  long long h[kTraceSlots];
  FLASHMLA_CUDA_CHECK(cudaMemcpy(h, dev, sizeof(h), cudaMemcpyDeviceToHost));
  if (kTraceSteps > 8) {  // one line per step: its length and WG0's S-issue waits (events 7-10)
    for (int st = 0; st + 1 < kTraceSteps; ++st) {
      const long long* w0 = h + st * kTraceEvents;
      if (w0[kTraceEvents] == 0) break;
      std::fprintf(stderr, "trace step %d: %lld cycles, wg0 S issue %lld\n", st,
                   w0[kTraceEvents] - w0[0], w0[10] - w0[7]);
    }
  }
  for (int st = 0; st < kTraceSteps && kTraceSteps <= 8; ++st) {
    const long long t0 = h[st * kTraceEvents];
    for (int wg = 0; wg < 2; ++wg) {
      std::fprintf(stderr, "trace step %d wg%d:", kTraceFirstStep + st, wg);
      for (int e = 0; e < kTraceEvents; ++e) {
        const long long v = h[(wg * kTraceSteps + st) * kTraceEvents + e];
        if (v != 0) std::fprintf(stderr, " %d:%lld", e, v - t0);
      }
      std::fprintf(stderr, "\n");
    }
  }
  const long long k0 = h[kTraceKernelSlot];
  for (int c = 0; c < kTraceChunks; ++c) {
    std::fprintf(stderr, "trace chunk %d:", c);
    for (int e = 0; e < kTraceChunkEvents; ++e) {
      const long long v = h[kTraceStepSlots + c * kTraceChunkEvents + e];
      if (v != 0) std::fprintf(stderr, " %d:%lld", e, v - k0);
    }
    std::fprintf(stderr, "\n");
  }
  const long long cycles = h[kTraceKernelSlot + 2] - k0;
  const long long ns = h[kTraceKernelSlot + 3] - h[kTraceKernelSlot + 1];
  std::fprintf(stderr, "trace CTA 0: %lld cycles in %lld ns = %.0f MHz\n", cycles, ns,
               ns > 0 ? 1e3 * static_cast<double>(cycles) / static_cast<double>(ns) : 0.0);
}
#endif

}  // namespace flashmla::cuda::mla_decode
