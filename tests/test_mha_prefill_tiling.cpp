// The MHA prefill kernels' index arithmetic (src/cuda/mha_prefill/tiling.h: the forward and the
// backward's dq and dk / dv kernels), checked on the CPU against what the kernels rely on, so
// that the first GPU run meets no off-by-one:
//   - every 16-byte copy of Q, K and V lands at the 128-byte-swizzled offset wgmma reads for its
//     (row, chunk) (the layout written out here independently), each exactly once;
//   - over the whole grid, every row of every (sequence, kv head) is held by exactly one CTA
//     and one quad of threads, and the keys it leaves unmasked are exactly [0, limit): the
//     causal limit or the sequence end, nothing past either, nothing twice;
//   - sequence bounds stay inside the tensors whatever the offsets hold.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cases.h"
#include "cuda/mha_prefill/config_bwd.h"
#include "cuda/mha_prefill/tiling.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

namespace mha = cuda::mha;

// The swizzled layout, written from its definition: 16-byte chunk c of row r of an atom column
// (rows of 128 bytes, 64 16-bit values) sits at r * 128 + 16 (c ^ (r mod 8)).
uint32_t swizzled(int r, int c) { return static_cast<uint32_t>(r * 128 + 16 * (c ^ (r % 8))); }

template <int kDqk>
void check_copies() {
  using Plan = mha::SmemPlan<kDqk>;
  constexpr int kChunks = kDqk / 8, kVChunks = mha::kDimV / 8;
  for (int bytes : {Plan::kQAtomBytes, Plan::kQWgBytes, Plan::kKeyAtomBytes, Plan::kStage0,
                    Plan::kStageBytes, Plan::kKBytes})
    EXPECT_EQ(bytes % 1024, 0) << "swizzle atoms must start on 1024-byte boundaries";
  std::vector<int> q_seen(mha::kRows * kChunks), k_seen(mha::kKeys * kChunks),
      v_seen(mha::kKeys * kVChunks);
  for (int tid = 0; tid < mha::kThreads; ++tid) {
    const mha::CopySlot cs(tid);
    for (int n = 0; n < mha::kPasses; ++n) {
      const int r = cs.row_of(n);
      ASSERT_LT(r, mha::kRows);
      for (int a = 0; a < Plan::kQAtoms; ++a) {
        const int c = a * 8 + cs.chunk;  // chunk of the row: elements [8 c, 8 c + 8)
        // Q: warpgroup r / 64's region, atom column c / 8, row r % 64.
        EXPECT_EQ(mha::q_copy_offset<kDqk>(cs, n, a),
                  (r / 64) * Plan::kQWgBytes + a * Plan::kQAtomBytes + swizzled(r % 64, c % 8))
            << "Q tid " << tid << " pass " << n << " atom " << a;
        ++q_seen[r * kChunks + c];
        // K: atom column c / 8 of the stage, key row r.
        EXPECT_EQ(mha::k_copy_offset<kDqk>(cs, n, a),
                  a * Plan::kKeyAtomBytes + swizzled(r, c % 8))
            << "K tid " << tid << " pass " << n << " atom " << a;
        ++k_seen[r * kChunks + c];
      }
      for (int a = 0; a < mha::kDimV / mha::kAtomDims; ++a) {
        const int c = a * 8 + cs.chunk;
        EXPECT_EQ(mha::v_copy_offset<kDqk>(cs, n, a),
                  Plan::kKBytes + a * Plan::kKeyAtomBytes + swizzled(r, c % 8))
            << "V tid " << tid << " pass " << n << " atom " << a;
        ++v_seen[r * kVChunks + c];
      }
    }
  }
  for (size_t i = 0; i < q_seen.size(); ++i) ASSERT_EQ(q_seen[i], 1) << "Q chunk " << i;
  for (size_t i = 0; i < k_seen.size(); ++i) ASSERT_EQ(k_seen[i], 1) << "K chunk " << i;
  for (size_t i = 0; i < v_seen.size(); ++i) ASSERT_EQ(v_seen[i], 1) << "V chunk " << i;
  // The wgmma descriptors' view: a warpgroup's Q is [atoms][64 rows x 128 B] from its region,
  // a stage's K is [atoms][128 keys x 128 B], V follows K: all inside the plan.
  EXPECT_EQ(Plan::kQWgBytes, Plan::kQAtoms * 64 * 128);
  EXPECT_EQ(Plan::kStageBytes, (Plan::kQAtoms + 2) * 128 * 128);
  EXPECT_LE(Plan::kLaunchBytes, 227 * 1024);
}

TEST(MhaPrefillTiling, CopiesLandWhereWgmmaReadsD128) { check_copies<128>(); }
TEST(MhaPrefillTiling, CopiesLandWhereWgmmaReadsD192) { check_copies<192>(); }

// The backward's tiles of 32, 64 and 128 rows kept as atom columns of that many rows.
TEST(MhaPrefillTiling, TileCopiesLandWhereWgmmaReads) {
  for (int passes : {1, 2, 4}) {
    const int rows = passes * mha::kRowsPerPass, atom_bytes = rows * 128;
    std::vector<int> seen(rows * 8 * 3);
    for (int tid = 0; tid < mha::kThreads; ++tid) {
      const mha::CopySlot cs(tid);
      for (int n = 0; n < passes; ++n)
        for (int a = 0; a < 3; ++a) {
          const int r = cs.row_of(n);
          EXPECT_EQ(mha::tile_copy_offset(cs, n, a, atom_bytes),
                    a * atom_bytes + swizzled(r, cs.chunk))
              << rows << " rows, tid " << tid << " pass " << n << " atom " << a;
          ++seen[(r * 3 + a) * 8 + cs.chunk];
        }
    }
    for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << rows << " rows, " << i;
  }
  // The backward's plans keep their atoms 1024-aligned and fit.
  for (int bytes : {mha::DqSmemPlan<192>::kStage0, mha::DqSmemPlan<192>::kStageBytes,
                    mha::DqSmemPlan<192>::kDo, mha::DkvSmemPlan<192>::kV,
                    mha::DkvSmemPlan<192>::kStage0, mha::DkvSmemPlan<192>::kStageBytes,
                    mha::DkvSmemPlan<128>::kStageBytes, mha::DqSmemPlan<128>::kStageBytes})
    EXPECT_EQ(bytes % 1024, 0);
}

TEST(MhaPrefillTiling, AccumulatorLayoutCoversTheTile) {
  // Each (row, column) of a warpgroup's 64 x 128 accumulator is held by exactly one thread.
  std::vector<int> seen(mha::kRows * mha::kKeys);
  for (int tid = 0; tid < mha::kThreads; ++tid)
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 16; ++j)
        for (int e = 0; e < 2; ++e)
          ++seen[mha::thread_row(tid, h) * mha::kKeys + mha::acc_column(j, tid % 4, e)];
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "element " << i;
}

// One problem: offsets, GQA group, causal; the kernel's grid walked on the CPU.
struct Problem {
  std::vector<int32_t> cu_q, cu_k;
  int group = 1;
  bool causal = false;
  std::string name;
};

// The forward and the backward's dq kernel: a CTA owns 128 rows and walks key tiles of
// kKeyTile, a warpgroup's accumulator holding kKeyTile columns.
template <int kKeyTile>
void check_grid(const Problem& pb) {
  SCOPED_TRACE(pb.name);
  const int b = static_cast<int>(pb.cu_q.size()) - 1;
  const int64_t total_q = pb.cu_q.back(), total_k = pb.cu_k.back();
  int max_s_q = 0;
  for (int s = 0; s < b; ++s) max_s_q = std::max(max_s_q, pb.cu_q[s + 1] - pb.cu_q[s]);
  const int64_t grid_x = mha::grid_row_tiles(int64_t{max_s_q} * pb.group);
  for (int seq = 0; seq < b; ++seq) {
    const mha::Sequence sq =
        mha::sequence_bounds(pb.cu_q.data(), pb.cu_k.data(), seq, total_q, total_k);
    ASSERT_EQ(sq.s_q, pb.cu_q[seq + 1] - pb.cu_q[seq]);
    ASSERT_EQ(sq.s_k, pb.cu_k[seq + 1] - pb.cu_k[seq]);
    const int rows = sq.s_q * pb.group;
    // holders[r]: threads holding row r; seen[r * s_k + key]: times key was left unmasked.
    std::vector<int> holders(rows);
    std::vector<uint8_t> seen(static_cast<size_t>(rows) * sq.s_k);
    for (int64_t bx = 0; bx < grid_x; ++bx) {
      const mha::TilePlan tp = mha::plan_tile<kKeyTile>(
          sq, pb.causal, pb.group, static_cast<unsigned>(bx), static_cast<unsigned>(grid_x));
      if (tp.row0 >= tp.rows) continue;
      ASSERT_LE(tp.key_end, sq.s_k);
      for (int tid = 0; tid < mha::kThreads; ++tid)
        for (int h = 0; h < 2; ++h) {
          const int r = tp.row0 + mha::thread_row(tid, h);
          if (r >= rows) continue;
          ++holders[r];
          const int limit = mha::key_limit(sq, pb.causal, pb.group, r);
          for (int it = 0; it < tp.n_tiles; ++it)
            for (int j = 0; j < kKeyTile / 8; ++j)
              for (int e = 0; e < 2; ++e) {
                const int key = it * kKeyTile + mha::acc_column(j, tid % 4, e);
                const bool masked = mha::tile_needs_mask<kKeyTile>(tp, it) && key >= limit;
                if (masked) continue;
                ASSERT_LT(key, sq.s_k) << "row " << r << ": an unmasked key past the sequence "
                                          "(its shared-memory row is zero-filled, logit 0)";
                ++seen[static_cast<size_t>(r) * sq.s_k + key];
              }
        }
    }
    for (int r = 0; r < rows; ++r) {
      ASSERT_EQ(holders[r], 4) << "row " << r << " of sequence " << seq
                               << " (a quad holds each row)";
      const int i = r / pb.group;
      const int want = pb.causal ? std::clamp(i + sq.s_k - sq.s_q + 1, 0, sq.s_k) : sq.s_k;
      for (int key = 0; key < sq.s_k; ++key)
        ASSERT_EQ(seen[static_cast<size_t>(r) * sq.s_k + key], key < want ? 1 : 0)
            << "row " << r << " (query " << i << ") key " << key << ", limit " << want;
    }
  }
}

// The backward's dk / dv kernel: a CTA owns 128 keys (its accumulators' rows) and walks the
// rows that may see them in steps of 32 (the accumulators' columns). Every (row, key) pair with
// key < limit(row) must be accumulated exactly once, every other pair of a real row and a real
// key never (pairs with a row or key outside the sequence add zeros into rows never stored).
void check_key_grid(const Problem& pb) {
  SCOPED_TRACE(pb.name + " (dk / dv)");
  const int b = static_cast<int>(pb.cu_q.size()) - 1;
  const int64_t total_q = pb.cu_q.back(), total_k = pb.cu_k.back();
  int max_s_k = 0;
  for (int s = 0; s < b; ++s) max_s_k = std::max(max_s_k, pb.cu_k[s + 1] - pb.cu_k[s]);
  const int64_t grid_x = mha::grid_row_tiles(max_s_k);
  for (int seq = 0; seq < b; ++seq) {
    const mha::Sequence sq =
        mha::sequence_bounds(pb.cu_q.data(), pb.cu_k.data(), seq, total_q, total_k);
    const int rows = sq.s_q * pb.group;
    std::vector<uint8_t> seen(static_cast<size_t>(rows) * sq.s_k);
    std::vector<int> key_holders(sq.s_k);
    for (int64_t bx = 0; bx < grid_x; ++bx) {
      const mha::KeyTilePlan kp =
          mha::plan_key_tile(sq, pb.causal, pb.group, static_cast<unsigned>(bx));
      if (kp.key0 >= sq.s_k) continue;
      ASSERT_EQ(kp.rows, rows);
      for (int tid = 0; tid < mha::kThreads; ++tid)
        for (int h = 0; h < 2; ++h) {
          const int key = kp.key0 + mha::thread_row(tid, h);
          if (key >= sq.s_k) continue;
          if (tid % 4 == 0) ++key_holders[key];
          for (int st = 0; st < kp.n_steps; ++st) {
            const bool mask = mha::step_needs_mask(kp, sq, pb.causal, pb.group, st);
            for (int j = 0; j < mha::kStepRows / 8; ++j)
              for (int e = 0; e < 2; ++e) {
                const int r = kp.row_begin + st * mha::kStepRows + mha::acc_column(j, tid % 4, e);
                if (r >= rows) continue;
                const int limit = mha::key_limit(sq, pb.causal, pb.group, r);
                if (mask && key >= limit) continue;
                ++seen[static_cast<size_t>(r) * sq.s_k + key];
              }
          }
        }
    }
    for (int key = 0; key < sq.s_k; ++key)
      ASSERT_EQ(key_holders[key], 1) << "key " << key << " of sequence " << seq;
    for (int r = 0; r < rows; ++r) {
      const int i = r / pb.group;
      const int want = pb.causal ? std::clamp(i + sq.s_k - sq.s_q + 1, 0, sq.s_k) : sq.s_k;
      for (int key = 0; key < sq.s_k; ++key)
        ASSERT_EQ(seen[static_cast<size_t>(r) * sq.s_k + key], key < want ? 1 : 0)
            << "row " << r << " (query " << i << ") key " << key << ", limit " << want;
    }
  }
}

std::vector<int32_t> offsets(const std::vector<int>& lens) {
  std::vector<int32_t> cu = {0};
  for (int l : lens) cu.push_back(cu.back() + l);
  return cu;
}

TEST(MhaPrefillTiling, GridsCoverEveryRowAndExactlyTheKeysItSees) {
  std::vector<Problem> problems;
  // The MHA table's shapes (tests/cases.cpp), each causal and not.
  for (const MhaVarlenCase& c : mha_varlen_cases()) {
    double work = 0;
    for (size_t r = 0; r < c.q_lens.size(); ++r) work += double(c.q_lens[r]) * c.k_lens[r];
    if (work * (c.h_q / c.h_kv) > 2e7) continue;
    for (bool causal : {false, true})
      problems.push_back({offsets(c.q_lens), offsets(c.k_lens), c.h_q / c.h_kv, causal,
                          c.name() + (causal ? " causal" : " full")});
  }
  // Edges: tiles cut by the sequence end and by the diagonal, s_q > s_k, empty sequences,
  // groups that do not divide 128, a single row.
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  for (int n = 0; n < 60; ++n) {
    std::vector<int> lq, lk;
    const int b = static_cast<int>(rng.uniform_int(1, 4));
    for (int s = 0; s < b; ++s) {
      lq.push_back(static_cast<int>(rng.uniform_int(0, 400)));
      lk.push_back(rng.bernoulli(0.2) ? lq.back() : static_cast<int>(rng.uniform_int(0, 700)));
    }
    const int groups[] = {1, 2, 3, 7, 8, 16, 63, 128};
    problems.push_back({offsets(lq), offsets(lk), groups[rng.uniform_int(0, 7)],
                        rng.bernoulli(0.6), "random " + std::to_string(n)});
  }
  problems.push_back({{0, 1}, {0, 1}, 1, true, "one row, one key"});
  problems.push_back({{0, 128, 256}, {0, 128, 384}, 1, true, "exact tiles"});
  problems.push_back({{0, 129}, {0, 1}, 1, true, "s_q > s_k by a tile"});
  for (const Problem& pb : problems) {
    check_grid<mha::kKeys>(pb);    // the forward
    check_grid<mha::kDqKeys>(pb);  // the backward's dq kernel
    check_key_grid(pb);            // the backward's dk / dv kernel
  }
}

TEST(MhaPrefillTiling, SequenceBoundsStayInsideTheTensors) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  for (int n = 0; n < 1000; ++n) {
    const int64_t total_q = rng.uniform_int(0, 50), total_k = rng.uniform_int(0, 50);
    std::vector<int32_t> cu_q(3), cu_k(3);
    for (auto* cu : {&cu_q, &cu_k})
      for (auto& x : *cu) x = static_cast<int32_t>(rng.uniform_int(-100, 100));
    for (int seq = 0; seq < 2; ++seq) {
      const mha::Sequence s = mha::sequence_bounds(cu_q.data(), cu_k.data(), seq, total_q, total_k);
      ASSERT_GE(s.q0, 0);
      ASSERT_GE(s.s_q, 0);
      ASSERT_LE(s.q0 + s.s_q, total_q);
      ASSERT_GE(s.k0, 0);
      ASSERT_GE(s.s_k, 0);
      ASSERT_LE(s.k0 + s.s_k, total_k);
    }
  }
}

}  // namespace
}  // namespace flashmla::test
