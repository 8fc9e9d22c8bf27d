// Dense decode on the CPU backend: every case of the table against the float64 reference
// (NaN-poisoned outputs, NaN garbage in the cache wherever the kernel must not read), bitwise
// determinism, and the split-KV schedule the plan step writes.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "cases.h"
#include "core/decode_schedule.h"
#include "harness.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

class DenseDecode : public ::testing::TestWithParam<DenseDecodeCase> {};

TEST_P(DenseDecode, MatchesFloat64ReferenceAndIsDeterministic) {
  const DenseDecodeCase& c = GetParam();
  Rng rng(fresh_seed());
  SCOPED_TRACE(c.describe() + " " + seed_note(rng.seed()));
  const DenseDecodeInputs in = make_dense_decode_inputs(c, rng);
  const DenseDecodeOutputs out = make_dense_decode_outputs(c);
  ASSERT_NO_THROW(run_dense_decode_cpu(c, in, out));
  EXPECT_TRUE(check_dense_decode(c, dense_decode_reference(c, in), out));

  const DenseDecodeOutputs again = make_dense_decode_outputs(c);
  ASSERT_NO_THROW(run_dense_decode_cpu(c, in, again));
  EXPECT_TRUE(
      bytes_equal("out, second run", out.out.bytes(), again.out.bytes(), out.out.storage_bytes()));
  EXPECT_TRUE(
      bytes_equal("lse, second run", out.lse.bytes(), again.lse.bytes(), out.lse.storage_bytes()));
}

INSTANTIATE_TEST_SUITE_P(Cases, DenseDecode,
                         ::testing::ValuesIn(cases_for_tier(dense_decode_cases())), CaseName());

// ---- schedule ---------------------------------------------------------------------------------

// Checks a schedule against its contract (decode_schedule.h): every key tile of every request
// in exactly one chunk, >= 1 chunk per request, chunks of a request contiguous and in tile
// order, parts owning contiguous chunk ranges that cover all chunks, slot bookkeeping
// consistent, counts within the documented bounds.
::testing::AssertionResult check_schedule(const std::vector<int32_t>& seqlens, int num_parts,
                                          const HostTensor& meta) {
  const int64_t b = static_cast<int64_t>(seqlens.size());
  const sched::View v{meta.ptr<int32_t>(), b, num_parts};
  auto fail = [&]() {
    return ::testing::AssertionFailure() << "b=" << b << " P=" << num_parts << ": ";
  };
  const int32_t* h = v.header();
  if (h[0] != sched::kMagic || h[1] != b || h[2] != num_parts)
    return fail() << "header {" << h[0] << ", " << h[1] << ", " << h[2] << "}";
  const int tile = h[5];
  if (tile < 1) return fail() << "tile size " << tile;
  const int32_t n_chunks = v.num_chunks(), n_slots = v.num_slots();
  if (n_chunks < b || n_chunks > b + num_parts - 1)
    return fail() << n_chunks << " chunks, expected within [b, b + P - 1]";
  if (n_slots < 0 || n_slots > 2 * (num_parts - 1) || n_slots > sched::max_slots(num_parts))
    return fail() << n_slots << " slots, expected <= 2 * (P - 1)";
  const int32_t* pb = v.part_begin();
  if (pb[0] != 0 || pb[num_parts] != n_chunks)
    return fail() << "part_begin[0] = " << pb[0] << ", part_begin[P] = " << pb[num_parts];
  for (int p = 0; p < num_parts; ++p)
    if (pb[p + 1] < pb[p]) return fail() << "part " << p << " has a negative chunk range";
  // The kernels read a part's first chunk from part_first, beside part_begin.
  for (int p = 0; p < num_parts; ++p) {
    const sched::Chunk f = v.part_first()[p];
    const sched::Chunk want =
        pb[p] < pb[p + 1] ? v.chunks()[pb[p]] : sched::Chunk{0, 0, 0, -1};
    if (f.req != want.req || f.tile_begin != want.tile_begin || f.tile_end != want.tile_end ||
        f.slot != want.slot)
      return fail() << "part_first[" << p << "] = {" << f.req << ", " << f.tile_begin << ", "
                    << f.tile_end << ", " << f.slot << "}, its first chunk {" << want.req << ", "
                    << want.tile_begin << ", " << want.tile_end << ", " << want.slot << "}";
  }

  const sched::Chunk* ch = v.chunks();
  std::set<int32_t> slots_seen;
  int32_t c = 0;
  int32_t n_split = 0;  // entries of the split list checked so far
  for (int64_t r = 0; r < b; ++r) {
    const int32_t tiles = (std::max(seqlens[r], 0) + tile - 1) / tile;
    const int32_t first = c;
    int32_t t = 0;
    while (c < n_chunks && ch[c].req == r) {
      if (ch[c].tile_begin != t)
        return fail() << "request " << r << " chunk " << c << " starts at tile " << ch[c].tile_begin
                      << ", expected " << t;
      if (ch[c].tile_end < ch[c].tile_begin || (tiles > 0 && ch[c].tile_end == ch[c].tile_begin))
        return fail() << "request " << r << " chunk " << c << " is empty or reversed ["
                      << ch[c].tile_begin << ", " << ch[c].tile_end << ")";
      t = ch[c].tile_end;
      ++c;
    }
    const int32_t k = c - first;
    if (k < 1) return fail() << "request " << r << " (" << seqlens[r] << " tokens) has no chunk";
    if (t != tiles)
      return fail() << "request " << r << ": chunks cover tiles [0, " << t << "), expected "
                    << tiles;
    if (v.num_splits()[r] != k)
      return fail() << "num_splits[" << r << "] = " << v.num_splits()[r] << ", chunks " << k;
    if (k == 1) {
      if (ch[first].slot != -1 || v.first_slot()[r] != -1)
        return fail() << "unsplit request " << r << " has slot " << ch[first].slot
                      << ", first_slot " << v.first_slot()[r];
    } else {
      if (v.first_slot()[r] != ch[first].slot)
        return fail() << "first_slot[" << r << "] = " << v.first_slot()[r] << ", chunk slot "
                      << ch[first].slot;
      // The combine visits split requests only, through the split list, in request order.
      const int32_t* e = v.split_list() + 3 * n_split++;
      if (n_split > v.num_split() || e[0] != r || e[1] != v.first_slot()[r] || e[2] != k)
        return fail() << "split list entry " << n_split - 1 << " {" << e[0] << ", " << e[1]
                      << ", " << e[2] << "}, expected {" << r << ", " << v.first_slot()[r]
                      << ", " << k << "} of " << v.num_split() << " entries";
      for (int32_t j = 0; j < k; ++j) {
        const int32_t s = ch[first + j].slot;
        // The combine reads slots first_slot + 0..k-1.
        if (s != v.first_slot()[r] + j || s < 0 || s >= n_slots || !slots_seen.insert(s).second)
          return fail() << "request " << r << " chunk " << j << " has slot " << s;
      }
    }
  }
  if (c != n_chunks) return fail() << "chunk " << c << " belongs to no request in order";
  // The combine sizes its tiles by the most chunks of one request.
  int32_t most = 1;
  for (int64_t r = 0; r < b; ++r) most = std::max(most, v.num_splits()[r]);
  if (v.max_splits() != most)
    return fail() << "max_splits " << v.max_splits() << ", most chunks of a request " << most;
  if (n_split != v.num_split())
    return fail() << "split list has " << v.num_split() << " entries, " << n_split
                  << " requests are split";
  return ::testing::AssertionSuccess();
}

// The defined part of a schedule (header, part ranges, the chunks in use, per-request
// bookkeeping); chunk entries past num_chunks are unused and may hold anything.
std::vector<int32_t> schedule_contents(const HostTensor& meta, int64_t b, int num_parts) {
  const sched::View v{meta.ptr<int32_t>(), b, num_parts};
  std::vector<int32_t> s(v.header(), v.header() + sched::kHeaderElems);
  s.insert(s.end(), v.part_begin(), v.part_begin() + num_parts + 1);
  for (int32_t c = 0; c < v.num_chunks(); ++c) {
    const sched::Chunk& ch = v.chunks()[c];
    s.insert(s.end(), {ch.req, ch.tile_begin, ch.tile_end, ch.slot});
  }
  s.insert(s.end(), v.num_splits(), v.num_splits() + b);
  s.insert(s.end(), v.first_slot(), v.first_slot() + b);
  s.insert(s.end(), v.split_list(), v.split_list() + 3 * v.num_split());
  const int32_t* first = reinterpret_cast<const int32_t*>(v.part_first());
  s.insert(s.end(), first, first + sched::kChunkElems * num_parts);
  return s;
}

// The CPU plan's schedule of `seqlens` over `num_parts` parts (metadata poisoned first; the
// schedule does not depend on the head counts).
HostTensor plan_schedule(const std::vector<int32_t>& seqlens, int num_parts) {
  const int64_t b = static_cast<int64_t>(seqlens.size());
  DecodePlan plan = dense_decode_plan_info(b, 1, 64, 1, 512, false, kCPU);
  plan.num_parts = num_parts;
  plan.sched_meta_elems = sched::meta_elems(b, num_parts);
  HostTensor meta(DType::kInt32, {plan.sched_meta_elems});
  meta.poison();
  const HostTensor lens = int32_tensor(seqlens);
  EXPECT_NO_THROW(dense_decode_plan({plan, lens.view(), meta.view()}));
  return meta;
}

TEST(DenseDecodeSchedule, CoversEveryTileExactlyOnce) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  for (int num_parts : {1, 2, 7, 132}) {
    for (int64_t b : {1, 2, 3, 17, 64, 200}) {
      for (int trial = 0; trial < 4; ++trial) {
        std::vector<int32_t> seqlens(b);
        for (auto& l : seqlens) {
          const double u = rng.uniform();
          l = u < 0.25  ? 0
              : u < 0.5 ? static_cast<int32_t>(rng.uniform_int(1, 130))
                        : static_cast<int32_t>(rng.uniform_int(1, 20000));
        }
        if (trial == 3) std::fill(seqlens.begin(), seqlens.end(), 0);  // all empty
        const HostTensor meta = plan_schedule(seqlens, num_parts);
        std::ostringstream os;
        for (int32_t l : seqlens) os << l << " ";
        EXPECT_TRUE(check_schedule(seqlens, num_parts, meta)) << "seqlens: " << os.str();
      }
    }
  }
}

// A cut never leaves a chunk shorter than kMinChunkTiles before a request's last chunk (one-tile
// chunks cost more in Q loads, partials and combine than they gain).
TEST(DenseDecodeSchedule, NoShortChunksBeforeTheLast) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  for (int num_parts : {2, 7, 66, 132}) {
    for (int64_t b : {1, 3, 8, 32, 200}) {
      std::vector<int32_t> seqlens(b);
      for (auto& l : seqlens) l = static_cast<int32_t>(rng.uniform_int(0, 9000));
      const HostTensor meta = plan_schedule(seqlens, num_parts);
      ASSERT_TRUE(check_schedule(seqlens, num_parts, meta));
      const sched::View v{meta.ptr<int32_t>(), b, num_parts};
      for (int c = 0; c < v.num_chunks(); ++c) {
        const sched::Chunk& ch = v.chunks()[c];
        if (ch.tile_end < sched::tiles_of(seqlens[ch.req]))
          EXPECT_GE(ch.tile_end - ch.tile_begin, sched::kMinChunkTiles)
              << "b=" << b << " P=" << num_parts << " chunk " << c << " of request " << ch.req;
      }
    }
  }
}

// No part carries much more than the balanced share: its cost (tiles + kFixedCostTiles for each
// request it starts) stays within twice the balanced share plus one fixed cost and one minimum
// chunk. (The builder once piled the room that early-closed parts left unused onto the last
// part: 94 chunks there for 225 requests of 100 tokens on 132 parts, 47x the balanced share.)
TEST(DenseDecodeSchedule, NoPartFarAboveBalanced) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  auto check = [](const std::vector<int32_t>& seqlens, int num_parts) {
    const int64_t b = static_cast<int64_t>(seqlens.size());
    const HostTensor meta = plan_schedule(seqlens, num_parts);
    ASSERT_TRUE(check_schedule(seqlens, num_parts, meta));
    const sched::View v{meta.ptr<int32_t>(), b, num_parts};
    int64_t total = 0;
    for (int32_t l : seqlens) total += sched::tiles_of(l) + sched::kFixedCostTiles;
    const int64_t balanced = (total + num_parts - 1) / num_parts;
    for (int p = 0; p < num_parts; ++p) {
      int64_t cost = 0;
      for (int c = v.part_begin()[p]; c < v.part_begin()[p + 1]; ++c) {
        const sched::Chunk& ch = v.chunks()[c];
        cost += ch.tile_end - ch.tile_begin + (ch.tile_begin == 0 ? sched::kFixedCostTiles : 0);
      }
      EXPECT_LE(cost, 2 * balanced + sched::kFixedCostTiles + sched::kMinChunkTiles)
          << "b=" << b << " P=" << num_parts << " part " << p << " balanced " << balanced;
    }
  };
  check(std::vector<int32_t>(225, 100), 132);
  check(std::vector<int32_t>(200, 1000), 66);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t b = rng.uniform_int(1, 300);
    const int num_parts = static_cast<int>(rng.uniform_int(1, 140));
    const int32_t max_len = static_cast<int32_t>(rng.uniform_int(1, 20000));
    const bool fixed = rng.uniform() < 0.5;
    const int32_t len = static_cast<int32_t>(rng.uniform_int(0, max_len));
    std::vector<int32_t> seqlens(b);
    for (auto& l : seqlens) l = fixed ? len : static_cast<int32_t>(rng.uniform_int(0, max_len));
    check(seqlens, num_parts);
  }
}

// Whole requests when packing them costs at most ~4 % of balance and at most kSplitGainTiles
// (no partials, nothing to merge), splits when whole requests would leave parts idle or
// unbalanced.
TEST(DenseDecodeSchedule, SplitsOnlyWhenItPays) {
  struct Shape {
    int64_t b;
    int32_t len;
    int num_parts;
    bool expect_splits;
  };
  // anchors.md D1 (128 x 4096 tokens over 66 parts: two whole requests per part), D2 (8192:
  // 8 tiles above balanced, whole), D3 (32768: 31 tiles above, split), D4 (8192 over 33: 16
  // above, whole), D5 (128 over 132), D6 (64 x 16384 over 132: whole requests would idle half
  // the parts), L1 (one request).
  for (const Shape& sh : {Shape{128, 4096, 66, false}, Shape{128, 8192, 66, false},
                          Shape{128, 32768, 66, true}, Shape{128, 8192, 33, false},
                          Shape{128, 8192, 132, false}, Shape{64, 16384, 132, true},
                          Shape{1, 1024, 66, true}}) {
    SCOPED_TRACE("b=" + std::to_string(sh.b) + " len=" + std::to_string(sh.len) +
                 " P=" + std::to_string(sh.num_parts));
    const std::vector<int32_t> seqlens(sh.b, sh.len);
    DecodePlan plan = dense_decode_plan_info(sh.b, 1, 128, 1, 512, false, kCPU);
    plan.num_parts = sh.num_parts;
    plan.sched_meta_elems = sched::meta_elems(sh.b, sh.num_parts);
    HostTensor meta(DType::kInt32, {plan.sched_meta_elems});
    meta.poison();
    const HostTensor lens = int32_tensor(seqlens);
    ASSERT_NO_THROW(dense_decode_plan({plan, lens.view(), meta.view()}));
    ASSERT_TRUE(check_schedule(seqlens, sh.num_parts, meta));
    const sched::View v{meta.ptr<int32_t>(), sh.b, sh.num_parts};
    EXPECT_EQ(v.num_slots() > 0, sh.expect_splits);
    // Cost per part (tiles + fixed cost per chunk's request start) within 4 % + one request of
    // the balanced share when nothing is split.
    if (!sh.expect_splits) {
      const int64_t req_cost = sched::tiles_of(sh.len) + sched::kFixedCostTiles;
      const int64_t balanced = (sh.b * req_cost + sh.num_parts - 1) / sh.num_parts;
      for (int p = 0; p < sh.num_parts; ++p) {
        const int64_t cost = int64_t{v.part_begin()[p + 1] - v.part_begin()[p]} * req_cost;
        EXPECT_LE(cost, balanced + std::min<int64_t>(balanced / sched::kWholeSlackDiv,
                                                     sched::kSplitGainTiles))
            << "part " << p;
      }
    }
  }
}

// Every chunk after a request's first costs kChunkCostTiles (a Q load, float32 partials, a
// combine input), so a split request is cut no more often than balance needs: anchors.md's L3
// (32 requests of 32 tiles over 66 parts) took 95 chunks when continuation chunks were free
// (three pieces for most requests, 24 MB of partials), 70 now.
TEST(DenseDecodeSchedule, SplitRequestsCutIntoFewChunks) {
  const std::vector<int32_t> seqlens(32, 2048);
  const HostTensor meta = plan_schedule(seqlens, 66);
  ASSERT_TRUE(check_schedule(seqlens, 66, meta));
  const sched::View v{meta.ptr<int32_t>(), 32, 66};
  EXPECT_LE(v.num_chunks(), 72);
  EXPECT_EQ(v.num_split(), 32);
  // Each part's cost, every chunk's overhead counted, stays within one chunk cost and one
  // minimum chunk of its share.
  const int64_t total = 32 * (sched::tiles_of(2048) + sched::kFixedCostTiles);
  const int64_t share = (total + 65) / 66 + sched::kChunkCostTiles;
  for (int p = 0; p < 66; ++p) {
    int64_t cost = 0;
    for (int c = v.part_begin()[p]; c < v.part_begin()[p + 1]; ++c) {
      const sched::Chunk& ch = v.chunks()[c];
      cost += ch.tile_end - ch.tile_begin +
              (ch.tile_begin == 0 ? sched::kFixedCostTiles : sched::kChunkCostTiles);
    }
    EXPECT_LE(cost, share + sched::kChunkCostTiles + sched::kMinChunkTiles) << "part " << p;
  }
}

TEST(DenseDecodeSchedule, PlanInfoSizesAreConsistent) {
  for (int64_t b : {1, 7, 128}) {
    const DecodePlan plan = dense_decode_plan_info(b, 2, 128, 1, 512, true, kCPU);
    EXPECT_EQ(plan.b, b);
    EXPECT_EQ(plan.s_q, 2);
    EXPECT_EQ(plan.h_q, 128);
    EXPECT_EQ(plan.h_kv, 1);
    EXPECT_TRUE(plan.causal);
    EXPECT_TRUE(plan.device == kCPU);
    EXPECT_GE(plan.num_parts, 1);
    EXPECT_GE(plan.sched_meta_elems, sched::meta_elems(b, plan.num_parts));
    EXPECT_GE(plan.workspace_bytes, 0);
  }
}

// The schedule is a pure function of the lengths: planning twice gives the same bytes.
TEST(DenseDecodeSchedule, PlanIsDeterministic) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  std::vector<int32_t> seqlens(50);
  for (auto& l : seqlens) l = static_cast<int32_t>(rng.uniform_int(0, 9000));
  const DecodePlan plan = dense_decode_plan_info(50, 1, 128, 1, 512, false, kCPU);
  const HostTensor lens = int32_tensor(seqlens);
  HostTensor a(DType::kInt32, {plan.sched_meta_elems}), b(DType::kInt32, {plan.sched_meta_elems});
  a.poison(1);
  b.poison(2);
  dense_decode_plan({plan, lens.view(), a.view()});
  dense_decode_plan({plan, lens.view(), b.view()});
  EXPECT_TRUE(check_schedule(seqlens, plan.num_parts, a));
  EXPECT_EQ(schedule_contents(a, 50, plan.num_parts), schedule_contents(b, 50, plan.num_parts));
}

}  // namespace
}  // namespace flashmla::test
