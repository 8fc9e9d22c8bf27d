// The MHA prefill kernel's index arithmetic: sequence bounds, which rows and keys a CTA and a
// thread own, which keys are masked, where each 16-byte copy lands in shared memory. Plain C++
// (host and device), so that tests/test_mha_prefill_tiling.cpp checks it on the CPU against the
// layouts and the semantics it implements: every row covered once, every key a row may see
// processed once and every other one masked, every copy landing where wgmma reads it.
#pragma once

#include <cstdint>

#include "cuda/mha_prefill/config.h"

#if defined(__CUDACC__)
#define FLASHMLA_MHA_HD __host__ __device__ __forceinline__
#else
#define FLASHMLA_MHA_HD inline
#endif

namespace flashmla::cuda::mha {

template <typename T>
FLASHMLA_MHA_HD T clamp_to(T x, T lo, T hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

// One sequence's bounds, clamped to the tensors (device-resident offsets are never trusted to
// stay in range: a bad value gives wrong rows, never an out-of-bounds access).
struct Sequence {
  int64_t q0, k0;
  int s_q, s_k;
};

FLASHMLA_MHA_HD Sequence sequence_bounds(const int32_t* cu_q, const int32_t* cu_k, int seq,
                                         int64_t total_q, int64_t total_k) {
  Sequence s;
  s.q0 = clamp_to<int64_t>(cu_q[seq], 0, total_q);
  s.k0 = clamp_to<int64_t>(cu_k[seq], 0, total_k);
  s.s_q = static_cast<int>(clamp_to<int64_t>(cu_q[seq + 1], s.q0, total_q) - s.q0);
  s.s_k = static_cast<int>(clamp_to<int64_t>(cu_k[seq + 1], s.k0, total_k) - s.k0);
  return s;
}

// Row rr of a (sequence, kv head) is query token rr / group with query head
// kv_head * group + rr % group; it sees keys [0, key_limit): all of them, or up to the
// bottom-right causal diagonal (query i sees keys j <= i + s_k - s_q).
FLASHMLA_MHA_HD int key_limit(const Sequence& s, bool causal, int group, int rr) {
  if (!causal) return s.s_k;
  return clamp_to(rr / group + s.s_k - s.s_q + 1, 0, s.s_k);
}

// A CTA's share: rows [row0, row0 + kRows) of its (sequence, kv head), row tile
// grid_x - 1 - block_x when causal (the heaviest tiles launch first), block_x otherwise, walked
// in key tiles of kKeyTile (the forward: 128; the backward's dq kernel: 64). Limits grow with
// the row, so the tile's first row has the smallest (key tiles below it need no mask) and its
// last the largest (key tiles from it on are skipped).
struct TilePlan {
  int rows;       // rows of the (sequence, kv head): s_q * group
  int row0;       // first row of the CTA; >= rows: nothing to do
  int key_end;    // keys [0, key_end) are read
  int mask_from;  // key tiles reaching past this key are masked
  int n_tiles;    // key tiles
};

template <int kKeyTile = kKeys>
FLASHMLA_MHA_HD TilePlan plan_tile(const Sequence& s, bool causal, int group, unsigned block_x,
                                   unsigned grid_x) {
  TilePlan t;
  t.rows = s.s_q * group;
  t.row0 = static_cast<int>(causal ? grid_x - 1 - block_x : block_x) * kRows;
  t.key_end = t.mask_from = t.n_tiles = 0;
  if (t.row0 >= t.rows) return t;
  const int last = (t.row0 + kRows < t.rows ? t.row0 + kRows : t.rows) - 1;
  t.key_end = key_limit(s, causal, group, last);
  t.mask_from = key_limit(s, causal, group, t.row0);
  t.n_tiles = (t.key_end + kKeyTile - 1) / kKeyTile;
  return t;
}

// Whether key tile `tile` needs the per-element mask.
template <int kKeyTile = kKeys>
FLASHMLA_MHA_HD bool tile_needs_mask(const TilePlan& t, int tile) {
  return tile * kKeyTile + kKeyTile > t.mask_from;
}

// The backward's dk / dv kernel turns it around: a CTA owns keys [key0, key0 + kKeys) of its
// (sequence, kv head) and walks the rows that may see them in steps of kStepRows. A row sees key
// key0 from token key0 - (s_k - s_q) on (causal), so earlier rows are skipped; a step needs the
// mask when its first row (the smallest limit) does not see all of the CTA's keys. Rows past the
// sequence and keys past s_k need no mask there: their Q, dO and K rows are zero-filled and
// their lse is +inf, so they add exact zeros, or land in rows that are never stored.
inline constexpr int kStepRows = 32;

struct KeyTilePlan {
  int key0;       // the CTA's first key; >= s_k: nothing to do
  int rows;       // s_q * group
  int row_begin;  // the first row that sees key0
  int n_steps;    // steps of kStepRows from row_begin
};

FLASHMLA_MHA_HD KeyTilePlan plan_key_tile(const Sequence& s, bool causal, int group,
                                          unsigned block_x) {
  KeyTilePlan t;
  t.key0 = static_cast<int>(block_x) * kKeys;
  t.rows = s.s_q * group;
  t.row_begin = causal ? clamp_to(t.key0 - (s.s_k - s.s_q), 0, s.s_q) * group : 0;
  t.n_steps = t.key0 < s.s_k ? (t.rows - t.row_begin + kStepRows - 1) / kStepRows : 0;
  return t;
}

FLASHMLA_MHA_HD bool step_needs_mask(const KeyTilePlan& t, const Sequence& s, bool causal,
                                     int group, int step) {
  return causal && key_limit(s, causal, group, t.row_begin + step * kStepRows) < t.key0 + kKeys;
}

// The two rows (h = 0, 1) of the CTA tile a thread holds in the wgmma accumulator layout:
// warpgroup tid / 128, its warp w owning rows 16 w .. 16 w + 15, lane l rows l / 4 and l / 4 + 8.
FLASHMLA_MHA_HD int thread_row(int tid, int h) {
  return (tid / 128) * kRowsPerWg + 16 * ((tid % 128) / 32) + (tid % 32) / 4 + 8 * h;
}
// The key column (0..127) of accumulator element 4 j + 2 h + e of a thread (quad_col = lane % 4).
FLASHMLA_MHA_HD int acc_column(int j, int quad_col, int e) { return 8 * j + 2 * quad_col + e; }

// Byte offset of 16-byte chunk `chunk` (0..7) of row `row` in a 128-byte-swizzled atom column
// (the layout TMA's SWIZZLE_128B writes and wgmma reads; sm90_ptx.cuh's swizzle128_offset).
FLASHMLA_MHA_HD uint32_t swizzle128(int row, int chunk) {
  return static_cast<uint32_t>(row * 128 + ((chunk ^ (row & 7)) << 4));
}

// Copy assignment, the same for Q, K and V: thread t copies 16-byte chunk t % 8 of every atom
// column for rows t / 8 + 32 n (n < 4), so its swizzled offset inside an atom column is fixed
// (row & 7 does not change with n) and its global addresses differ by whole rows and atoms.
inline constexpr int kRowsPerPass = kThreads / 8;     // 32
inline constexpr int kPasses = kRows / kRowsPerPass;  // 4: 128 rows (also 128 keys)
static_assert(kKeys == kRows, "Q and K/V tiles share the copy assignment");

struct CopySlot {
  int row;          // t / 8: the row of pass 0; pass n copies row + 32 n
  int chunk;        // t % 8: the chunk in each atom column
  uint32_t offset;  // swizzled byte offset of (row, chunk) in an atom column
  FLASHMLA_MHA_HD explicit CopySlot(int tid)
      : row(tid / 8), chunk(tid % 8), offset(swizzle128(tid / 8, tid % 8)) {}
  FLASHMLA_MHA_HD int row_of(int n) const { return row + kRowsPerPass * n; }
};

// Offset of a slot's copy (pass n, atom a) in a tile kept as atom columns of `atom_bytes`
// (atom_bytes / 128 rows each), rows t / 8 + 32 n: the backward's key tiles and row steps.
FLASHMLA_MHA_HD uint32_t tile_copy_offset(const CopySlot& cs, int n, int a, int atom_bytes) {
  return a * atom_bytes + kRowsPerPass * n * 128 + cs.offset;
}

// Shared-memory byte offsets (from the Q region / a stage) of a slot's copy of pass n, atom a.
// Q row r lives in warpgroup r / 64's region at row r % 64, whose swizzle phase is r's.
template <int kDqk>
FLASHMLA_MHA_HD uint32_t q_copy_offset(const CopySlot& cs, int n, int a) {
  using Plan = SmemPlan<kDqk>;
  const int r = cs.row_of(n);
  return (r / kRowsPerWg) * Plan::kQWgBytes + a * Plan::kQAtomBytes +
         (r % kRowsPerWg - cs.row) * 128 + cs.offset;
}
template <int kDqk>
FLASHMLA_MHA_HD uint32_t k_copy_offset(const CopySlot& cs, int n, int a) {
  return tile_copy_offset(cs, n, a, SmemPlan<kDqk>::kKeyAtomBytes);
}
template <int kDqk>
FLASHMLA_MHA_HD uint32_t v_copy_offset(const CopySlot& cs, int n, int a) {
  return SmemPlan<kDqk>::kKBytes + tile_copy_offset(cs, n, a, SmemPlan<kDqk>::kKeyAtomBytes);
}

// Grid x: the row tiles of the longest sequence (max_rows = max_seqlen_q * group), at least one
// (the tail slice runs on it).
inline int64_t grid_row_tiles(int64_t max_rows) {
  const int64_t t = (max_rows + kRows - 1) / kRows;
  return t > 1 ? t : 1;
}

}  // namespace flashmla::cuda::mha
