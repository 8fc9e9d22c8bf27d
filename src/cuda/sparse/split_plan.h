// Host-side choice of the sparse kernels' split over the keys (kernel.cuh's kSplit kernel): how
// many CTAs share one work item's key tiles. Plain C++, tested on the CPU
// (tests/test_sparse_split_plan.cpp).
#pragma once

#include <cstdint>

#include "cuda/sparse/config.h"

namespace flashmla::cuda::sparse {

// Key tiles of a scope of `topk` entries.
inline int key_tiles(int topk) { return (topk + kTokensPerTile - 1) / kTokensPerTile; }

// Predicted cost, in key-tile times, of a split of 2^split_log2 CTAs per item: waves of
// resident clusters, each as long as one CTA's share of the tiles plus what every CTA pays
// once (Q load, the first gather: ~1 tile) and the fold (~0.5 tile a round: 132 KB through
// distributed shared memory and a fold of 128 accumulators a thread). The constants are
// estimates, to be calibrated against the split's first measurements.
inline double split_cost(int64_t items, int tiles, int resident, int split_log2) {
  constexpr double kOnceTiles = 1.0, kFoldRoundTiles = 0.5;
  const int64_t waves = (items + resident - 1) / resident;
  const int share = (tiles + (1 << split_log2) - 1) >> split_log2;
  return static_cast<double>(waves) * (share + kOnceTiles + kFoldRoundTiles * split_log2);
}

// The split (log2) with the least predicted cost for `items` work items of up to `tiles` key
// tiles each, given resident[s] clusters of 2^s CTAs a wave (0: that size cannot launch).
// A split must gain at least 5 % over the next smaller choice's prediction, and every CTA keeps
// at least two tiles (the pipeline's depth).
inline int choose_split_log2(int64_t items, int tiles, const int (&resident)[kMaxSplitLog2 + 1]) {
  if (items <= 0 || tiles <= 0 || resident[0] <= 0) return 0;
  int best = 0;
  double best_cost = split_cost(items, tiles, resident[0], 0);
  for (int s = 1; s <= kMaxSplitLog2; ++s) {
    if (resident[s] <= 0 || tiles < (2 << s)) break;
    const double cost = split_cost(items, tiles, resident[s], s);
    if (cost < 0.95 * best_cost) {
      best = s;
      best_cost = cost;
    }
  }
  return best;
}

}  // namespace flashmla::cuda::sparse
