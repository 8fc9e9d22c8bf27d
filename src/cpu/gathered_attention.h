// Attention of a group of query heads over a gathered (sparse) set of keys: the piece shared by
// sparse decode and sparse prefill on the CPU, on top of the backend's tile engine
// (attn_tile.h, RowBlockAttention, V = first d_v elements of each key).
//
// The caller converts each selected key once (FP8 -> float or bf16 -> float) straight into the
// engine's key tile through next_key(); every kKeyTile keys the whole head group attends to the
// tile, so one conversion serves every head of the group.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/attn_tile.h"
#include "cpu/cpu_math.h"
#include "flashmla/fp8.h"

namespace flashmla::cpu {

class GatheredAttention {
 public:
  GatheredAttention(int max_heads, int d_qk, int d_v)
      : d_v_(d_v), eng_(max_heads, d_qk, d_v, /*separate_v=*/false) {}

  // Starts a new key set for n_heads heads; load every head with set_query() before any key.
  void begin(int n_heads) {
    eng_.begin(n_heads);
    n_ = 0;
    t0_ = 0;
  }

  void set_query(int h, const uint16_t* q_bf16, float scale) {
    eng_.set_query(h, q_bf16, /*is_fp16=*/false, scale, kNoLimit);
  }

  // Where to write the next key (d_qk floats); attends the previous tile first when it is full.
  float* next_key() {
    if (n_ == kKeyTile) flush();
    return eng_.k_row(n_++);
  }

  // Call once after the last key, before reading results.
  void flush() {
    if (n_ == 0) return;
    eng_.attend(t0_, n_);
    t0_ += n_;
    n_ = 0;
  }

  // Max of the scaled logits (-inf when no key), natural-log lse (+inf when no key).
  float max_logit(int h) const { return eng_.state(h).m; }
  float lse(int h) const { return eng_.state(h).lse(kInf); }

  // Writes head h's output (d_v bf16), times the attention-sink factor 1 / (1 + exp(sink - lse))
  // when a sink is given; zeros when there was no key. Once per head (it normalises in place).
  void write_output(int h, const float* sink, uint16_t* out) {
    const float* o = eng_.normalized_out(h);
    const SoftmaxState& st = eng_.state(h);
    float factor = 1.0f;
    // exp(+inf) = inf makes an infinite sink give exactly 0.
    if (sink && !st.empty()) factor = 1.0f / (1.0f + std::exp(*sink - st.lse(kInf)));
    for (int x = 0; x < d_v_; ++x) out[x] = fp8::float_to_bf16(o[x] * factor);
  }

 private:
  static constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();  // no causal mask
  int d_v_;
  RowBlockAttention eng_;
  int n_ = 0;       // keys in the current tile
  int64_t t0_ = 0;  // keys attended in earlier tiles
};

// Heads per work item when `key_sets` independent key sets are each attended by `heads` heads:
// split the heads only as far as needed to give every thread a few items. Groups are whole
// multiples of the engine's kNR query columns (it pads to them), so each key conversion is
// shared by at least kNR heads.
inline int heads_per_item(int64_t key_sets, int heads, int threads) {
  constexpr int kItemsPerThread = 4;  // slack for load balance (key sets differ in size)
  const int64_t wanted = int64_t(threads) * kItemsPerThread;
  if (key_sets >= wanted || heads <= kNR) return std::max(heads, 1);
  const int64_t splits = (wanted + key_sets - 1) / std::max<int64_t>(key_sets, 1);
  const int64_t per = round_up((heads + splits - 1) / splits, kNR);
  return static_cast<int>(std::min<int64_t>(per, heads));
}

}  // namespace flashmla::cpu
