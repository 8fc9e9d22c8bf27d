// FP8 codecs: fp8.h's scalar e4m3 / UE8M0 / bf16 codecs checked exhaustively against the
// format definitions, the tile-scale rule at its boundaries, and kv_quantize / kv_dequantize on
// CPU tensors byte for byte against the independent quantizer of naive_reference (both layouts,
// awkward page sizes, padded block strides), plus the round-trip error bound.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "flashmla/flashmla.h"
#include "flashmla/fp8.h"
#include "naive_reference.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

constexpr float kInfF = std::numeric_limits<float>::infinity();
constexpr float kNaNF = std::numeric_limits<float>::quiet_NaN();

bool is_nan_code(int c) { return (c & 0x7F) == 0x7F; }

// ---- e4m3 -------------------------------------------------------------------------------------

TEST(E4M3, DecodesEveryCodeExactly) {
  for (int c = 0; c < 256; ++c) {
    const float got = fp8::e4m3_to_float(static_cast<uint8_t>(c));
    const double want = naive::e4m3_value(c);
    if (is_nan_code(c)) {
      EXPECT_TRUE(std::isnan(got)) << "code " << c;
      continue;
    }
    EXPECT_EQ(static_cast<double>(got), want) << "code " << c;
    EXPECT_EQ(std::signbit(got), (c & 0x80) != 0) << "sign of code " << c;
  }
  EXPECT_EQ(fp8::e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(fp8::e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8::e4m3_to_float(0x08), std::ldexp(1.0f, -6));  // smallest normal
}

TEST(E4M3, EncodeOfDecodeIsIdentityForEveryFiniteCode) {
  for (int c = 0; c < 256; ++c) {
    if (is_nan_code(c)) continue;
    // 0x00 -> +0 -> 0x00 and 0x80 -> -0 -> 0x80: the sign of zero survives.
    EXPECT_EQ(fp8::float_to_e4m3(fp8::e4m3_to_float(static_cast<uint8_t>(c))), c) << "code " << c;
  }
}

// Midpoints between consecutive codes round to the even code; one float ulp either side rounds
// to the nearer code. Checked for both signs, against the library and both naive searches.
TEST(E4M3, RoundsToNearestTiesToEvenAtEveryMidpoint) {
  for (int c = 0; c < 0x7E; ++c) {
    const float lo = fp8::e4m3_to_float(static_cast<uint8_t>(c));
    const float hi = fp8::e4m3_to_float(static_cast<uint8_t>(c + 1));
    const float mid = (lo + hi) / 2;  // at most 5 significant bits: exact in float
    ASSERT_EQ(static_cast<double>(mid), (naive::e4m3_value(c) + naive::e4m3_value(c + 1)) / 2);
    const int even = c % 2 == 0 ? c : c + 1;
    for (int sign : {0, 0x80}) {
      const float s = sign ? -1.0f : 1.0f;
      struct Point {
        float x;
        int code;
        const char* what;
      };
      const Point points[] = {
          {s * mid, sign | even, "midpoint"},
          {s * std::nextafter(mid, 0.0f), sign | c, "just below the midpoint"},
          {s * std::nextafter(mid, kInfF), sign | (c + 1), "just above the midpoint"},
      };
      for (const Point& p : points) {
        EXPECT_EQ(fp8::float_to_e4m3(p.x), p.code) << p.what << " x = " << p.x << " codes " << c;
        EXPECT_EQ(naive::e4m3_nearest(p.x), p.code) << "naive, " << p.what << " x = " << p.x;
        EXPECT_EQ(naive::e4m3_nearest_exhaustive(p.x), p.code)
            << "exhaustive, " << p.what << " x = " << p.x;
      }
    }
  }
}

TEST(E4M3, SaturatesAt448AndKeepsNaN) {
  for (float x : {448.0f, 448.5f, 449.0f, 464.0f, 480.0f, 1e9f, 3.0e38f, kInfF}) {
    EXPECT_EQ(fp8::float_to_e4m3(x), 0x7E) << x;
    EXPECT_EQ(fp8::float_to_e4m3(-x), 0xFE) << -x;
    EXPECT_EQ(naive::e4m3_nearest(x), 0x7E) << x;
  }
  EXPECT_EQ(fp8::float_to_e4m3(432.0f), 0x7E);  // midpoint 416 | 448: even code 0x7E
  EXPECT_EQ(fp8::float_to_e4m3(431.9f), 0x7D);
  for (float x : {kNaNF, -kNaNF}) {
    const uint8_t code = fp8::float_to_e4m3(x);
    EXPECT_TRUE(is_nan_code(code)) << "NaN encoded as " << int{code};
    EXPECT_TRUE(std::isnan(fp8::e4m3_to_float(code)));
  }
}

TEST(E4M3, TinyValuesRoundToSignedZeroOrTheSmallestSubnormal) {
  const float sub = std::ldexp(1.0f, -9);
  EXPECT_EQ(fp8::float_to_e4m3(sub / 2), 0x00);  // tie -> even (0)
  EXPECT_EQ(fp8::float_to_e4m3(std::nextafter(sub / 2, 1.0f)), 0x01);
  EXPECT_EQ(fp8::float_to_e4m3(-sub / 2), 0x80);
  EXPECT_EQ(fp8::float_to_e4m3(1e-30f), 0x00);
  EXPECT_EQ(fp8::float_to_e4m3(-1e-30f), 0x80);
  EXPECT_EQ(fp8::float_to_e4m3(std::numeric_limits<float>::denorm_min()), 0x00);
  EXPECT_EQ(fp8::float_to_e4m3(0.0f), 0x00);
  EXPECT_EQ(fp8::float_to_e4m3(-0.0f), 0x80);
}

// Random floats over every binade e4m3 can reach (and beyond): the library equals the nearest
// code by search.
TEST(E4M3, MatchesNearestCodeSearchOnRandomFloats) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  int64_t mismatches = 0;
  for (int i = 0; i < 400000; ++i) {
    const float x = static_cast<float>((rng.bernoulli(0.5) ? -1 : 1) * rng.uniform(1.0, 2.0) *
                                       std::ldexp(1.0, static_cast<int>(rng.uniform_int(-14, 10))));
    const uint8_t want = naive::e4m3_nearest(x);
    if (fp8::float_to_e4m3(x) != want && ++mismatches <= 5)
      ADD_FAILURE() << "x = " << x << ": got " << int{fp8::float_to_e4m3(x)} << ", want "
                    << int{want};
  }
  EXPECT_EQ(mismatches, 0);
  // The fast naive search against the exhaustive definition.
  for (int i = 0; i < 20000; ++i) {
    const double y =
        rng.uniform(-500.0, 500.0) * std::ldexp(1.0, -static_cast<int>(rng.uniform_int(0, 18)));
    ASSERT_EQ(naive::e4m3_nearest(y), naive::e4m3_nearest_exhaustive(y)) << "y = " << y;
  }
}

// ---- UE8M0 and bf16 ---------------------------------------------------------------------------

TEST(UE8M0, DecodesEveryByte) {
  for (int v = 0; v < 255; ++v) {
    EXPECT_EQ(static_cast<double>(fp8::ue8m0_to_float(static_cast<uint8_t>(v))),
              std::ldexp(1.0, v - 127))
        << "byte " << v;
  }
  EXPECT_TRUE(std::isnan(fp8::ue8m0_to_float(0xFF)));
  for (int e = -127; e <= 127; ++e) {
    EXPECT_EQ(fp8::exponent_to_ue8m0(e), e + 127);
    if (e >= -126) EXPECT_EQ(static_cast<double>(fp8::exp2_int(e)), std::ldexp(1.0, e)) << e;
  }
}

TEST(BF16, MatchesIndependentRounding) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  for (int i = 0; i < 200000; ++i) {
    uint32_t bits = static_cast<uint32_t>(rng.engine()());
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp8::bf16_to_float(fp8::float_to_bf16(f))));
      continue;
    }
    ASSERT_EQ(fp8::float_to_bf16(f), double_to_bf16(f)) << "f = " << f << " bits " << bits;
  }
  for (int v = 0; v < 65536; ++v) {
    const double want = bf16_to_double(static_cast<uint16_t>(v));
    const float got = fp8::bf16_to_float(static_cast<uint16_t>(v));
    if (std::isnan(want))
      EXPECT_TRUE(std::isnan(got));
    else
      ASSERT_EQ(static_cast<double>(got), want) << v;
  }
}

// ---- tile scale -------------------------------------------------------------------------------

// scale = smallest power of two >= max(float(amax / 448), 1e-4f).
TEST(TileScale, PowersOfTwoAndOneUlpAbove) {
  for (int k = -13; k <= 20; ++k) {
    const float amax = std::ldexp(448.0f, k);  // amax / 448 = 2^k exactly
    EXPECT_EQ(fp8::scale_exponent_for_amax(amax), k) << "amax = 448 * 2^" << k;
    EXPECT_EQ(naive::scale_exponent(amax), k);
    const float above = std::nextafter(amax, kInfF);
    EXPECT_EQ(fp8::scale_exponent_for_amax(above), k + 1) << "one ulp above 448 * 2^" << k;
    EXPECT_EQ(naive::scale_exponent(above), k + 1);
    const float below = std::nextafter(amax, 0.0f);
    EXPECT_EQ(fp8::scale_exponent_for_amax(below), naive::scale_exponent(below));
  }
  // The 1e-4 floor: 2^-14 < 1e-4 <= 2^-13.
  for (float amax : {0.0f, 1e-30f, 0.01f, 448e-4f}) {
    EXPECT_EQ(fp8::scale_exponent_for_amax(amax), -13) << amax;
    EXPECT_EQ(naive::scale_exponent(amax), -13) << amax;
  }
  EXPECT_EQ(fp8::scale_exponent_for_amax(1.5e-4f * 448), -12);  // between 2^-13 and 2^-12
}

TEST(TileScale, MatchesIndependentRuleOnRandomAmax) {
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  for (int i = 0; i < 200000; ++i) {
    const float amax = static_cast<float>(
        rng.uniform(1.0, 2.0) * std::ldexp(1.0, static_cast<int>(rng.uniform_int(-30, 30))));
    ASSERT_EQ(fp8::scale_exponent_for_amax(amax), naive::scale_exponent(amax)) << "amax " << amax;
  }
}

// ---- kv_quantize / kv_dequantize on CPU tensors -----------------------------------------------

struct CodecShape {
  KVCacheLayout layout;
  int page;
  int64_t num_blocks;
  int block_pad;  // bytes beyond the minimum block stride (multiple of 16)
  bool strided_bf16;
};

std::string describe(const CodecShape& s) {
  return std::string(kv_layout_name(s.layout)) + " page=" + std::to_string(s.page) +
         " num_blocks=" + std::to_string(s.num_blocks) +
         " block_pad=" + std::to_string(s.block_pad) +
         " strided_bf16=" + std::to_string(s.strided_bf16);
}

HostTensor make_quant(const CodecShape& s) {
  const int64_t bytes = kv_layout_token_bytes(s.layout);
  const int64_t min_block = s.layout == KVCacheLayout::kV32 ? s.page * int64_t{v32::kBytesPerToken}
                                                            : model1::min_block_bytes(s.page);
  return HostTensor(DType::kUInt8, {s.num_blocks, s.page, 1, bytes},
                    {min_block + s.block_pad, bytes, bytes, 1});
}

// A bf16 cache of activations with a few crafted tiles: all zeros (the 1e-4 floor), tiny values,
// a tile whose amax is exactly 448 * 2^k (scale boundary), one just above, and large values.
HostTensor make_bf16_cache(const CodecShape& s, Rng& rng) {
  const int d = kv_layout_dim(s.layout);
  HostTensor k = s.strided_bf16 ? HostTensor::padded(DType::kBFloat16, {s.num_blocks, s.page, 1, d},
                                                     {32, 8, 16, 0})
                                : HostTensor(DType::kBFloat16, {s.num_blocks, s.page, 1, d});
  k.poison();
  fill_activations(k, rng);
  const int tile = s.layout == KVCacheLayout::kV32 ? v32::kTile : model1::kTile;
  const int64_t tokens = s.num_blocks * s.page;
  for (int64_t tok = 0; tok < tokens; ++tok) {
    const int64_t blk = tok / s.page, off = tok % s.page;
    const int kind = static_cast<int>(tok % 7);
    const int t0 = static_cast<int>(tok % 3) * tile;  // which tile to craft
    for (int c = t0; c < t0 + tile; ++c) {
      double x = k.get({blk, off, 0, c});
      switch (kind) {
        case 1:
          x = 0.0;
          break;
        case 2:
          x *= 1e-4;
          break;
        case 3:
          x = (c == t0 + 5) ? std::ldexp(448.0, -6) : x;
          break;  // amax = 7 = 448 * 2^-6
        case 4:
          x = (c == t0 + 5) ? -(7.0 + 1.0 / 32) : x;
          break;  // one bf16 ulp above 7
        case 5:
          x *= 300.0;
          break;
        default:
          break;
      }
      k.set({blk, off, 0, c}, x);
    }
  }
  return k;
}

// Byte offsets of the MODEL1 per-token pad bytes (the layout leaves their value unspecified).
std::vector<int64_t> pad_bytes(const CodecShape& s, const HostTensor& quant) {
  std::vector<int64_t> v;
  if (s.layout != KVCacheLayout::kModel1) return v;
  for (int64_t blk = 0; blk < s.num_blocks; ++blk)
    for (int64_t t = 0; t < s.page; ++t)
      v.push_back(blk * quant.stride()[0] + model1::token_scale_offset(s.page, t) +
                  model1::kNumTiles);
  return v;
}

const CodecShape kCodecShapes[] = {
    {KVCacheLayout::kV32, 1, 7, 16, false},      {KVCacheLayout::kV32, 2, 5, 0, true},
    {KVCacheLayout::kV32, 61, 3, 48, false},     {KVCacheLayout::kV32, 64, 3, 16, true},
    {KVCacheLayout::kV32, 576, 2, 32, false},    {KVCacheLayout::kModel1, 1, 7, 16, true},
    {KVCacheLayout::kModel1, 2, 5, 0, false},    {KVCacheLayout::kModel1, 61, 3, 48, true},
    {KVCacheLayout::kModel1, 64, 3, 576, false}, {KVCacheLayout::kModel1, 576, 2, 32, false},
};

TEST(KVCodec, QuantizeMatchesIndependentQuantizerByteForByte) {
  for (const CodecShape& s : kCodecShapes) {
    Rng rng(fresh_seed());
    SCOPED_TRACE(describe(s) + " " + seed_note(rng.seed()));
    const HostTensor k = make_bf16_cache(s, rng);
    HostTensor got = make_quant(s), want = make_quant(s);
    got.fill_bytes(0x5A);  // bytes no token owns (block tails) must stay untouched
    want.fill_bytes(0x5A);
    ASSERT_NO_THROW(kv_quantize({s.layout, k.view(), got.view()}));
    naive::quantize_cache(k, s.layout, want);
    for (int64_t off : pad_bytes(s, got)) want.bytes()[off] = got.bytes()[off];
    EXPECT_TRUE(bytes_equal("quant_cache", got.bytes(), want.bytes(), got.storage_bytes()));
  }
}

TEST(KVCodec, DequantizeDecodesEveryTokenExactly) {
  for (const CodecShape& s : kCodecShapes) {
    Rng rng(fresh_seed());
    SCOPED_TRACE(describe(s) + " " + seed_note(rng.seed()));
    const HostTensor k = make_bf16_cache(s, rng);
    HostTensor quant = make_quant(s);
    quant.fill_bytes(0x7F);
    naive::quantize_cache(k, s.layout, quant);
    HostTensor deq = s.strided_bf16 ? HostTensor::padded(DType::kBFloat16, k.shape(), {64, 0, 8, 0})
                                    : HostTensor(DType::kBFloat16, k.shape());
    deq.poison();
    ASSERT_NO_THROW(kv_dequantize({s.layout, quant.view(), deq.view()}));
    const int d = kv_layout_dim(s.layout);
    std::vector<double> got, want;
    for (int64_t slot = 0; slot < s.num_blocks * s.page; ++slot) {
      const std::vector<double> x = naive::decode_fp8_token(quant, s.layout, slot);
      for (int c = 0; c < d; ++c) {
        want.push_back(x[c]);
        got.push_back(deq.get({slot / s.page, slot % s.page, 0, c}));
      }
    }
    EXPECT_TRUE(all_close("dequantized", got, want, {s.num_blocks * s.page, d}, {0.0, 0.0}));
  }
}

// quantize -> dequantize loses at most half an e4m3 ulp: 2^-4 relative for normals, and
// scale * 2^-10 absolute in the subnormal range; RoPE comes back bit exact.
TEST(KVCodec, RoundTripErrorIsWithinHalfAnE4M3Ulp) {
  for (const CodecShape& s : kCodecShapes) {
    Rng rng(fresh_seed());
    SCOPED_TRACE(describe(s) + " " + seed_note(rng.seed()));
    const HostTensor k = make_bf16_cache(s, rng);
    HostTensor quant = make_quant(s);
    ASSERT_NO_THROW(kv_quantize({s.layout, k.view(), quant.view()}));
    HostTensor deq(DType::kBFloat16, k.shape());
    ASSERT_NO_THROW(kv_dequantize({s.layout, quant.view(), deq.view()}));
    const bool v32l = s.layout == KVCacheLayout::kV32;
    const int d = kv_layout_dim(s.layout), d_nope = v32l ? v32::kDimNope : model1::kDimNope;
    const int tile = v32l ? v32::kTile : model1::kTile;
    int64_t bad = 0;
    for (int64_t blk = 0; blk < s.num_blocks; ++blk)
      for (int64_t t = 0; t < s.page; ++t) {
        double amax[8] = {};
        for (int c = 0; c < d_nope; ++c)
          amax[c / tile] = std::max(amax[c / tile], std::fabs(k.get({blk, t, 0, c})));
        for (int c = 0; c < d; ++c) {
          const double x = k.get({blk, t, 0, c}), y = deq.get({blk, t, 0, c});
          double bound = 0;  // RoPE: exact
          if (c < d_nope) {
            const double scale = std::ldexp(1.0, naive::scale_exponent(amax[c / tile]));
            bound = std::max(std::ldexp(std::fabs(x), -4), std::ldexp(scale, -10));
          }
          if (!(std::fabs(y - x) <= bound) && ++bad <= 5)
            ADD_FAILURE() << "block " << blk << " token " << t << " element " << c << ": x = " << x
                          << ", round trip " << y << ", bound " << bound;
        }
      }
    EXPECT_EQ(bad, 0);
  }
}

// The FP8 cache may be passed as float8_e4m3 as well as uint8 (same bits).
TEST(KVCodec, AcceptsFloat8DtypeForTheQuantCache) {
  const CodecShape s{KVCacheLayout::kV32, 64, 2, 0, false};
  Rng rng(fresh_seed());
  SCOPED_TRACE(seed_note(rng.seed()));
  const HostTensor k = make_bf16_cache(s, rng);
  HostTensor a = make_quant(s), b = make_quant(s);
  TensorView bv = b.view();
  bv.dtype = DType::kFloat8E4M3;
  ASSERT_NO_THROW(kv_quantize({s.layout, k.view(), a.view()}));
  ASSERT_NO_THROW(kv_quantize({s.layout, k.view(), bv}));
  EXPECT_TRUE(bytes_equal("quant_cache", a.bytes(), b.bytes(), a.storage_bytes()));
}

}  // namespace
}  // namespace flashmla::test
