// Split-KV schedule for decoding: which partition ("part") processes which key tiles of which
// request, and where partial results go. Built by the plan step, read by the run step and the
// combine. The builder is a __host__ __device__ function so the CPU plan and the GPU plan kernel
// run the very same code and produce identical schedules.
//
// Work is measured in key tiles of kTileTokens tokens; a request of n tiles costs
// n + kFixedCostTiles (the fixed part models per-request setup: loading Q, writing O, combine),
// and every further chunk of a split request kChunkCostTiles more.
// The total cost is cut into num_parts nearly equal, contiguous ranges over the request order
// (each part's share recomputed from the work left when the part before it closes).
// A request cut by part boundaries becomes several "chunks", each written to its own partial
// slot, merged by the combine step; a request with one chunk is written straight to the output.
// Splitting buys balance but costs float32 partials and the combine, so when whole requests,
// packed in order, fit in parts at most 1/kWholeSlackDiv and at most kSplitGainTiles above the
// balanced size (e.g. a batch of equal, short lengths larger than num_parts), no request is split.
// Every request, even one with 0 tokens, has at least one chunk (whoever owns it writes out = 0
// and lse = +inf).
//
// sched_meta layout (int32), P = num_parts, B = b:
//   [0, 8)                      header: kMagic, B, P, num_chunks, num_slots, kTileTokens,
//                               num_split (requests with more than one chunk), max_splits (the
//                               most chunks of one request; sizes the combine's tiles)
//   [8, 8 + P + 1)              part_begin: part p owns chunks [part_begin[p], part_begin[p+1])
//   then 4 * (B + P)            chunks: {req, tile_begin, tile_end, slot}, slot -1 = direct
//   then B                      num_splits[r]: chunks of request r
//   then B                      first_slot[r]: slot of its first chunk (-1 when num_splits == 1)
//   then 3 * B                  split list: {req, first_slot, num_splits} of each split request in
//                               request order, num_split entries (the combine's work list: it
//                               never visits an unsplit request)
//   then 4 * P                  part_first: a copy of each part's first chunk (zeros for a part
//                               without chunks), so that a kernel reads it beside part_begin
//                               instead of after it (one dependent load fewer at its start)
//
// Bounds: chunks <= B + P - 1 (each boundary cuts at most one request); slots <= 2 * (P - 1)
// (a request cut c times has c + 1 chunks and there are P - 1 boundaries).
#pragma once

#include <cstdint>

#include "flashmla/fp8.h"  // FLASHMLA_HD

namespace flashmla::sched {

inline constexpr int32_t kMagic = 0x4D4C4131;  // "MLA1"
inline constexpr int kTileTokens = 64;
inline constexpr int kFixedCostTiles = 5;
// No chunk of a split request is cut shorter than this (the last chunk of a request may be):
// every chunk pays a Q load, a float32 partial and a combine input, and one-tile chunks cost
// more than the parallelism they buy (perf-journal.md, session 8, H200: L1 -13 %, L2 -2 %,
// L3 -14 %, L4 / L6 unchanged).
inline constexpr int kMinChunkTiles = 2;
inline constexpr int kWholeSlackDiv = 25;  // whole-request parts may be 4 % above balanced
// ... and at most this many tiles: a split costs every split request an extra chunk boundary,
// float32 partials and the combine's pass over them (~12 µs on 128 requests, H200), and 132 busy
// SMs clock lower than 128, so only long requests gain (perf-journal.md, session 17, H200, kernel
// time split vs whole: D2 at 8 tiles of excess +3.5 %, D4 at 16 +-0 %, D3 at 31 -0.7 %).
inline constexpr int kSplitGainTiles = 20;
// What a continuation chunk (every chunk of a split request after its first) costs beyond its
// tiles: a Q load, float32 partial stores and a combine input. Charged in the split path, and
// added to a part's share (a part opens with at most one such chunk), so parts come out a
// little larger and requests are cut into fewer chunks, as FlashMLA's scheduler does with its
// fixed cost on every piece. Without it (0, until session 22) L3's 32 requests became 95 chunks,
// now 70: its combine reads 25 % fewer partial bytes and the main kernel has fewer chunk
// boundaries (H200, same run, krn: L3 -6 %, B1 -3 %, B5 -5 %, B4 -0.5 %; 2 to 5 all gained,
// 3 most on L3; the whole-request cases do not take this path; perf-journal.md, session 22).
inline constexpr int kChunkCostTiles = 3;
inline constexpr int kHeaderElems = 8;
inline constexpr int kChunkElems = 4;

struct Chunk {
  int32_t req, tile_begin, tile_end, slot;
};

FLASHMLA_HD int64_t meta_elems(int64_t b, int num_parts) {
  return kHeaderElems + (num_parts + 1) + kChunkElems * (b + num_parts) + 2 * b + 3 * b +
         kChunkElems * num_parts;
}
FLASHMLA_HD int64_t max_slots(int num_parts) { return 2 * static_cast<int64_t>(num_parts); }
// Bytes of the run step's workspace: every slot's float32 partial O rows and lse.
FLASHMLA_HD int64_t workspace_bytes(int num_parts, int s_q, int h_q, int d_v) {
  return max_slots(num_parts) * s_q * h_q * (d_v + 1) * static_cast<int64_t>(sizeof(float));
}

// Typed views into a sched_meta buffer.
struct View {
  int32_t* base;
  int64_t b;
  int num_parts;
  FLASHMLA_HD int32_t* header() const { return base; }
  FLASHMLA_HD int32_t* part_begin() const { return base + kHeaderElems; }
  FLASHMLA_HD Chunk* chunks() const {
    return reinterpret_cast<Chunk*>(part_begin() + num_parts + 1);
  }
  FLASHMLA_HD int32_t* num_splits() const {
    return reinterpret_cast<int32_t*>(chunks() + (b + num_parts));
  }
  FLASHMLA_HD int32_t* first_slot() const { return num_splits() + b; }
  FLASHMLA_HD int32_t* split_list() const { return first_slot() + b; }  // 3 per split request
  FLASHMLA_HD Chunk* part_first() const { return reinterpret_cast<Chunk*>(split_list() + 3 * b); }
  // Chunk c of part `part` (whose chunks start at c_begin = part_begin()[part]): its first one
  // from part_first, which a kernel can fetch before part_begin has arrived.
  FLASHMLA_HD const Chunk* part_chunk(int part, int c_begin, int c) const {
    return c == c_begin ? part_first() + part : chunks() + c;
  }
  FLASHMLA_HD int32_t num_chunks() const { return base[3]; }
  FLASHMLA_HD int32_t num_slots() const { return base[4]; }
  FLASHMLA_HD int32_t num_split() const { return base[6]; }
  FLASHMLA_HD int32_t max_splits() const { return base[7]; }
};

FLASHMLA_HD int32_t tiles_of(int64_t tokens) {
  return static_cast<int32_t>((tokens + kTileTokens - 1) / kTileTokens);
}

// A request's length clamped to [0, max_len]: the plan and the run step's kernels both use this
// one rule, so a bad length can never make a kernel read outside the block table.
FLASHMLA_HD int64_t clamped_len(int32_t len, int64_t max_len) {
  return len < 0 ? 0 : (len > max_len ? max_len : static_cast<int64_t>(len));
}
FLASHMLA_HD int32_t clamped_tiles(int32_t len, int64_t max_len) {
  return tiles_of(clamped_len(len, max_len));
}

// Builds the schedule from the lengths as clamped_len() clamps them (the run step's rule too).
FLASHMLA_HD void build(const int32_t* seqlens, int64_t b, int num_parts, int64_t max_len,
                       View v) {
  int64_t total = 0;
  for (int64_t r = 0; r < b; ++r) {
    total += clamped_tiles(seqlens[r], max_len) + kFixedCostTiles;
  }
  // A part's share is recomputed from the work left whenever a part closes: room a part leaves
  // unused (a request's fixed cost kept off its very end) spreads over the parts still open
  // instead of piling onto the last one (b = 225 requests of 100 tokens on 132 parts had put 94
  // chunks on the last part; perf-journal.md, session 8).
  const int64_t balanced = (total + num_parts - 1) / num_parts;
  int64_t per_part = balanced + kChunkCostTiles;
  int64_t placed = 0;  // cost placed so far

  int32_t* part_begin = v.part_begin();
  Chunk* chunks = v.chunks();
  int32_t* num_splits = v.num_splits();
  int32_t* first_slot = v.first_slot();
  int32_t* split_list = v.split_list();
  int32_t n_split = 0;
  int32_t most_splits = 1;

  int part = 0;
  int64_t filled = 0;
  int32_t n_chunks = 0;
  int32_t n_slots = 0;
  part_begin[0] = 0;
  auto close_part = [&]() {
    ++part;
    filled = 0;
    part_begin[part] = n_chunks;
    if (part < num_parts) {
      const int64_t left = num_parts - part;
      per_part = (total - placed + left - 1) / left + kChunkCostTiles;
      if (per_part < 1) per_part = 1;
    }
  };

  // Whole requests, if they fit in num_parts parts of capacity `cap` packed in order.
  const int64_t slack = balanced / kWholeSlackDiv;
  const int64_t cap = balanced + (slack < kSplitGainTiles ? slack : kSplitGainTiles);
  bool whole = true;
  {
    int used = 1;
    int64_t fill = 0;
    for (int64_t r = 0; r < b && whole; ++r) {
      const int64_t c = clamped_tiles(seqlens[r], max_len) + kFixedCostTiles;
      if (c > cap) whole = false;
      if (fill > 0 && fill + c > cap) {
        ++used;
        fill = 0;
      }
      fill += c;
    }
    whole = whole && used <= num_parts;
#if defined(FLASHMLA_SCHED_PROBE_NEVER_WHOLE)  // diagnostic build: always balance by splitting
    whole = false;
#endif
  }
  if (whole) {
    for (int64_t r = 0; r < b; ++r) {
      const int32_t n = clamped_tiles(seqlens[r], max_len);
      if (filled > 0 && filled + n + kFixedCostTiles > cap) close_part();
      chunks[n_chunks++] = Chunk{static_cast<int32_t>(r), 0, n, -1};
      filled += n + kFixedCostTiles;
      num_splits[r] = 1;
      first_slot[r] = -1;
    }
  }

  for (int64_t r = 0; r < b && !whole; ++r) {
    const int32_t n = clamped_tiles(seqlens[r], max_len);
    // Do not start a request's fixed cost at the very end of a part.
    if (n > 0 && filled > 0 && part < num_parts - 1 && per_part - filled - kFixedCostTiles < 1)
      close_part();
    const int32_t chunk0 = n_chunks;
    int32_t t = 0;
    bool first = true;
    do {
      const bool last_part = part == num_parts - 1;
      int64_t room = last_part ? (int64_t{1} << 40) : per_part - filled;
      room -= first ? kFixedCostTiles : kChunkCostTiles;
      int64_t take = room < kMinChunkTiles ? kMinChunkTiles : room;
      if (take > n - t) take = n - t;
      chunks[n_chunks++] = Chunk{static_cast<int32_t>(r), t, static_cast<int32_t>(t + take), -1};
      filled += take + (first ? kFixedCostTiles : kChunkCostTiles);
      // (placed tracks `total`, which counts requests' fixed costs only; the continuation
      // chunks' cost is in every part's share instead)
      placed += take + (first ? kFixedCostTiles : 0);
      t += static_cast<int32_t>(take);
      first = false;
      if (!last_part && filled >= per_part && (t < n || r + 1 < b)) close_part();
    } while (t < n);
    const int32_t k = n_chunks - chunk0;
    num_splits[r] = k;
    first_slot[r] = k > 1 ? n_slots : -1;
    if (k > most_splits) most_splits = k;
    if (k > 1) {
      split_list[3 * n_split + 0] = static_cast<int32_t>(r);
      split_list[3 * n_split + 1] = n_slots;
      split_list[3 * n_split + 2] = k;
      ++n_split;
      for (int32_t c = 0; c < k; ++c) chunks[chunk0 + c].slot = n_slots++;
    }
  }
  // Parts left without work own an empty chunk range.
  while (part < num_parts) close_part();
  Chunk* part_first = v.part_first();
  for (int q = 0; q < num_parts; ++q)
    part_first[q] = part_begin[q] < part_begin[q + 1] ? chunks[part_begin[q]] : Chunk{0, 0, 0, -1};

  int32_t* h = v.header();
  h[0] = kMagic;
  h[1] = static_cast<int32_t>(b);
  h[2] = num_parts;
  h[3] = n_chunks;
  h[4] = n_slots;
  h[5] = kTileTokens;
  h[6] = n_split;
  h[7] = most_splits;
}

}  // namespace flashmla::sched
