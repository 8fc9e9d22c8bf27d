// The sparse kernels' split choice (src/cuda/sparse/split_plan.h): host-only arithmetic, checked
// on the CPU at the benchmark's shapes (H100: 132 SMs, one CTA each; clusters of 2 / 4 / 8 as
// the driver might report them) and over a sweep for the rules every choice must keep.
#include <gtest/gtest.h>

#include <cstdint>

#include "cuda/sparse/split_plan.h"

namespace flashmla::test {
namespace {

using cuda::sparse::choose_split_log2;
using cuda::sparse::key_tiles;
using cuda::sparse::kMaxSplitLog2;
using cuda::sparse::split_cost;

constexpr int kH100[kMaxSplitLog2 + 1] = {132, 66, 32, 16};

TEST(SparseSplitPlan, KeyTilesRoundUp) {
  EXPECT_EQ(key_tiles(0), 0);
  EXPECT_EQ(key_tiles(1), 1);
  EXPECT_EQ(key_tiles(64), 1);
  EXPECT_EQ(key_tiles(65), 2);
  EXPECT_EQ(key_tiles(2048), 32);
}

TEST(SparseSplitPlan, BenchmarkShapes) {
  // S1 (b 128, s_q 2, two head tiles: 512 items of 32 tiles): ~3.9 full waves, no split.
  EXPECT_EQ(choose_split_log2(512, 32, kH100), 0);
  // S3 (592 items of 256 tiles): the fifth wave is a third full; two CTAs an item fill it.
  EXPECT_EQ(choose_split_log2(592, 256, kH100), 1);
  // S4 (296 items of 256 tiles): 2.2 waves. Two CTAs an item: 5 waves of 129.5 tiles against
  // 3 of 257; four: 10 waves of 66 with 32 clusters resident, 9 with 33 (the driver's figure
  // decides).
  EXPECT_EQ(choose_split_log2(296, 256, kH100), 1);
  const int four33[kMaxSplitLog2 + 1] = {132, 66, 33, 16};
  EXPECT_EQ(choose_split_log2(296, 256, four33), 2);
  // One request, one query, 128 heads (2 items of 32 tiles): the widest split.
  EXPECT_EQ(choose_split_log2(2, 32, kH100), 3);
  // Prefill P1 (8,192 items): no split.
  EXPECT_EQ(choose_split_log2(8192, 32, kH100), 0);
}

TEST(SparseSplitPlan, CostCountsWavesShareAndFold) {
  // 296 items over 32 clusters of 4: 10 waves of (64 + 1 + 2 x 0.5) tiles.
  EXPECT_DOUBLE_EQ(split_cost(296, 256, 32, 2), 10 * 66.0);
  // No split: 3 waves of (256 + 1).
  EXPECT_DOUBLE_EQ(split_cost(296, 256, 132, 0), 3 * 257.0);
}

TEST(SparseSplitPlan, EveryCtaKeepsTwoTilesAndUnlaunchableSizesAreSkipped) {
  EXPECT_EQ(choose_split_log2(1, 3, kH100), 0);   // 3 tiles: no split of 2 keeps 2 each
  EXPECT_EQ(choose_split_log2(1, 4, kH100), 1);
  EXPECT_EQ(choose_split_log2(1, 15, kH100), 2);
  const int no_eight[kMaxSplitLog2 + 1] = {132, 66, 32, 0};
  EXPECT_EQ(choose_split_log2(2, 32, no_eight), 2);
  const int only_plain[kMaxSplitLog2 + 1] = {132, 0, 0, 0};
  EXPECT_EQ(choose_split_log2(2, 32, only_plain), 0);
}

TEST(SparseSplitPlan, DegenerateInputsGetNoSplit) {
  EXPECT_EQ(choose_split_log2(0, 32, kH100), 0);
  EXPECT_EQ(choose_split_log2(5, 0, kH100), 0);
  const int none[kMaxSplitLog2 + 1] = {0, 0, 0, 0};
  EXPECT_EQ(choose_split_log2(5, 32, none), 0);
}

TEST(SparseSplitPlan, ChoiceIsNeverPredictedSlowerAndKeepsItsRules) {
  for (int64_t items = 1; items <= 1200; items += 7)
    for (int tiles = 1; tiles <= 300; tiles += 13) {
      const int s = choose_split_log2(items, tiles, kH100);
      ASSERT_GE(s, 0);
      ASSERT_LE(s, kMaxSplitLog2);
      if (s > 0) {
        ASSERT_GE(tiles, 2 << s) << items << " items, " << tiles << " tiles";
        ASSERT_LT(split_cost(items, tiles, kH100[s], s),
                  0.95 * split_cost(items, tiles, kH100[0], 0));
      }
    }
}

}  // namespace
}  // namespace flashmla::test
