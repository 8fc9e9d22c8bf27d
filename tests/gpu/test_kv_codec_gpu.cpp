// GPU FP8 KV-cache codecs against the CPU backend, byte for byte (SPEC.md §3).
//
// Each case builds a bf16 cache and an FP8 cache (strided as the case says), runs the public
// API once on CPU views and once on cuda:0 views of device copies, and compares every byte of
// both allocations, padding included: the two outputs start from the same poison, so bytes a
// codec must not touch have to survive on both backends. Cases cover both layouts, the page
// sizes seen in production, padded strides, and bf16 strides/pointers that are not 16-byte
// aligned (the kernels' narrow-access paths).
// Skips (GTEST_SKIP) when no CUDA device is usable; the lookup-table checks run without one.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/cuda_backend.h"
#include "cuda/kv_codec/e4m3_tables.h"
#include "flashmla/flashmla.h"
#include "gpu/gpu_test_util.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

// ---- Cases -----------------------------------------------------------------------------------

struct CodecCase {
  const char* name;
  KVCacheLayout layout;
  int64_t page_block_size;
  int64_t num_blocks;
  int64_t bf16_token_pad = 0;   // extra elements between tokens of the bf16 cache
  int64_t bf16_block_pad = 0;   // extra elements between its page blocks
  int64_t bf16_offset = 0;      // elements the bf16 view starts past a 256-byte aligned address
  int64_t quant_block_pad = 0;  // extra bytes between FP8 page blocks (a multiple of 16)
};

constexpr auto kV32 = KVCacheLayout::kV32;
constexpr auto kModel1 = KVCacheLayout::kModel1;

const CodecCase kCases[] = {
    // Dense caches, the page sizes seen in production.
    {"v32_p1", kV32, 1, 300},
    {"v32_p2", kV32, 2, 150},
    {"v32_p61", kV32, 61, 7},
    {"v32_p64", kV32, 64, 9},
    {"v32_p576", kV32, 576, 2},
    {"model1_p1", kModel1, 1, 300},
    {"model1_p2", kModel1, 2, 150},
    {"model1_p61", kModel1, 61, 7},
    {"model1_p64", kModel1, 64, 9},
    {"model1_p576", kModel1, 576, 2},
    // Block strides above the minimum on both caches, 16-byte aligned.
    {"v32_p64_strided", kV32, 64, 5, 8, 40, 0, 656 * 3 + 16},
    {"model1_p61_strided", kModel1, 61, 5, 16, 8, 0, 576 * 2},
    {"model1_p2_strided", kModel1, 2, 40, 0, 24, 0, 48},
    // bf16 strides and pointers that allow only 8-, 4- or 2-byte accesses.
    {"v32_p61_bf16_align8", kV32, 61, 4, 4, 0, 0, 16},
    {"model1_p64_bf16_align4", kModel1, 64, 4, 2, 2, 0, 0},
    {"v32_p2_bf16_align2", kV32, 2, 31, 1, 3, 0, 0},
    {"model1_p61_bf16_ptr_align2", kModel1, 61, 3, 0, 0, 1, 576},
    {"v32_p1_bf16_ptr_align4", kV32, 1, 33, 0, 2, 2, 32},
};

int64_t dim_of(KVCacheLayout l) { return kv_layout_dim(l); }
int64_t token_bytes_of(KVCacheLayout l) { return kv_layout_token_bytes(l); }
int64_t quant_block_stride(const CodecCase& c) {
  const int64_t min = c.layout == kV32 ? c.page_block_size * v32::kBytesPerToken
                                       : model1::min_block_bytes(c.page_block_size);
  return min + c.quant_block_pad;
}

HostTensor make_bf16_cache(const CodecCase& c) {
  const int64_t d = dim_of(c.layout);
  const int64_t token_stride = d + c.bf16_token_pad;
  const int64_t block_stride = c.page_block_size * token_stride + c.bf16_block_pad;
  return HostTensor(DType::kBFloat16, {c.num_blocks, c.page_block_size, 1, d},
                    {block_stride, token_stride, d, 1});
}

HostTensor make_quant_cache(const CodecCase& c) {
  const int64_t tb = token_bytes_of(c.layout);
  return HostTensor(DType::kUInt8, {c.num_blocks, c.page_block_size, 1, tb},
                    {quant_block_stride(c), tb, tb, 1});
}

// ---- Inputs ----------------------------------------------------------------------------------

// randn/10 with the values that stress the scale and rounding logic mixed in: exact zeros
// (both signs), tiny values down to 1e-30 (e4m3 subnormals and underflow), large values up to
// 1e4 (tile scales far from 1), whole tiles of zeros or of tiny values (the scale floor), and
// tiles whose amax is exactly 448 * 2^k (x / scale hits e4m3's largest value).
uint16_t random_nope_value(Rng& rng) {
  const double u = rng.uniform();
  if (u < 0.02) return rng.bernoulli(0.5) ? 0x0000 : 0x8000;
  const double sign = rng.bernoulli(0.5) ? -1.0 : 1.0;
  if (u < 0.03) return double_to_bf16(sign * std::pow(10.0, rng.uniform(-30.0, -3.0)));
  if (u < 0.04) return double_to_bf16(sign * std::pow(10.0, rng.uniform(1.0, 4.0)));
  return double_to_bf16(rng.normal() / 10.0);
}

// Any finite bf16 bit pattern. (NaN is left out: the CPU backend decodes RoPE through float32,
// which quiets signaling NaNs, while the GPU copies the bits.)
uint16_t random_finite_bf16(Rng& rng) {
  auto v = static_cast<uint16_t>(rng.uniform_int(0, 0xFFFF));
  return (v & 0x7F80) == 0x7F80 ? static_cast<uint16_t>(v & ~0x4000) : v;
}

void fill_bf16_cache(HostTensor& t, KVCacheLayout layout, Rng& rng) {
  // Gaps get random bits: a kernel that reads them by mistake still has to match the CPU.
  for (int64_t i = 0; i < t.storage_elems(); ++i)
    t.ptr<uint16_t>()[i] = static_cast<uint16_t>(rng.uniform_int(0, 0xFFFF));
  const int tile = layout == kV32 ? v32::kTile : model1::kTile;
  const int num_tiles = layout == kV32 ? v32::kNumTiles : model1::kNumTiles;
  const int64_t d = t.size(3);
  for (int64_t b = 0; b < t.size(0); ++b) {
    for (int64_t s = 0; s < t.size(1); ++s) {
      uint16_t* x = t.ptr<uint16_t>() + t.offset({b, s, 0, 0});
      const int64_t token = b * t.size(1) + s;
      for (int64_t k = 0; k < num_tiles * tile; ++k) x[k] = random_nope_value(rng);
      // Whole-tile specials on a few tokens, each on a different tile.
      if (token % 7 == 3)
        for (int k = 0; k < tile; ++k) x[k] = 0;
      if (token % 11 == 5)
        for (int k = 0; k < tile; ++k) x[tile + k] = double_to_bf16(rng.normal() * 1e-30);
      if (token % 13 == 6) x[2 * tile + tile / 2] = double_to_bf16(448.0 * std::ldexp(1.0, -8));
      if (token % 17 == 1) x[3 * tile + 1] = double_to_bf16(1e4);
      // RoPE is copied bit for bit: any finite pattern will do.
      for (int64_t k = num_tiles * tile; k < d; ++k) x[k] = random_finite_bf16(rng);
    }
  }
}

// An FP8 cache of arbitrary codes: every e4m3 byte but NaN, scales across the whole exponent
// range (results that underflow to bf16 subnormals or overflow to inf included), finite RoPE.
void fill_random_codes(HostTensor& q, KVCacheLayout layout, Rng& rng) {
  const int64_t pbs = q.size(1), stride = q.stride()[0];
  for (int64_t i = 0; i < q.storage_bytes(); ++i)
    q.bytes()[i] = static_cast<uint8_t>(rng.uniform_int(0, 255));
  auto rope = [&](uint8_t* p) {
    for (int k = 0; k < v32::kDimRope; ++k) {
      const uint16_t v = random_finite_bf16(rng);
      std::memcpy(p + 2 * k, &v, 2);
    }
  };
  auto e4m3 = [&] {
    uint8_t v;
    do v = static_cast<uint8_t>(rng.uniform_int(0, 255));
    while ((v & 0x7F) == 0x7F);
    return v;
  };
  for (int64_t b = 0; b < q.size(0); ++b) {
    uint8_t* block = q.bytes() + b * stride;
    for (int64_t s = 0; s < pbs; ++s) {
      if (layout == kV32) {
        uint8_t* tok = block + s * v32::kBytesPerToken;
        for (int k = 0; k < v32::kDimNope; ++k) tok[v32::kNopeOffset + k] = e4m3();
        for (int t = 0; t < v32::kNumTiles; ++t) {
          const float scale = std::ldexp(1.0f, static_cast<int>(rng.uniform_int(-126, 127)));
          std::memcpy(tok + v32::kScaleOffset + 4 * t, &scale, 4);
        }
        rope(tok + v32::kRopeOffset);
      } else {
        uint8_t* tok = block + model1::token_data_offset(s);
        for (int k = 0; k < model1::kDimNope; ++k) tok[k] = e4m3();
        rope(tok + model1::kDimNope);
        uint8_t* sc = block + model1::token_scale_offset(pbs, s);
        for (int t = 0; t < model1::kNumTiles; ++t)
          sc[t] = static_cast<uint8_t>(rng.uniform_int(0, 254));
      }
    }
  }
}

// ---- Reporting -------------------------------------------------------------------------------

std::string describe_quant_byte(const CodecCase& c, int64_t off) {
  const int64_t stride = quant_block_stride(c), pbs = c.page_block_size;
  const int64_t block = off / stride, in = off % stride;
  std::string s = "block " + std::to_string(block) + ", ";
  if (c.layout == kV32) {
    if (in >= pbs * v32::kBytesPerToken) return s + "block padding byte " + std::to_string(in);
    const int64_t o = in % v32::kBytesPerToken;
    const char* part = o < v32::kScaleOffset ? "NoPE" : o < v32::kRopeOffset ? "scales" : "RoPE";
    return s + "token " + std::to_string(in / v32::kBytesPerToken) + ", byte " +
           std::to_string(o) + " (" + part + ")";
  }
  if (in < pbs * model1::kTokenDataBytes) {
    const int64_t o = in % model1::kTokenDataBytes;
    return s + "token " + std::to_string(in / model1::kTokenDataBytes) + ", data byte " +
           std::to_string(o) + (o < model1::kDimNope ? " (NoPE)" : " (RoPE)");
  }
  const int64_t sc = in - pbs * model1::kTokenDataBytes;
  if (sc < pbs * model1::kScaleBytesPerToken)
    return s + "token " + std::to_string(sc / model1::kScaleBytesPerToken) + ", scale byte " +
           std::to_string(sc % model1::kScaleBytesPerToken);
  return s + "block padding byte " + std::to_string(in);
}

std::string describe_bf16_byte(const HostTensor& t, int64_t off) {
  const int64_t e = off / 2, bs = t.stride()[0], ts = t.stride()[1];
  const int64_t block = e / bs, token = e % bs / ts, k = e % bs % ts;
  std::string s = "block " + std::to_string(block) + ", ";
  if (token >= t.size(1)) return s + "block padding element " + std::to_string(e % bs);
  if (k >= t.size(3)) return s + "token " + std::to_string(token) + ", token padding";
  return s + "token " + std::to_string(token) + ", element " + std::to_string(k) +
         (off % 2 ? " (high byte)" : " (low byte)");
}

template <class Describe>
::testing::AssertionResult same_bytes(const char* what, const uint8_t* cpu,
                                      const std::vector<uint8_t>& gpu, Describe describe) {
  int64_t first = -1, count = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(gpu.size()); ++i) {
    if (cpu[i] == gpu[i]) continue;
    if (first < 0) first = i;
    ++count;
  }
  if (count == 0) return ::testing::AssertionSuccess();
  char values[64];
  std::snprintf(values, sizeof values, "cpu 0x%02x, gpu 0x%02x", cpu[first], gpu[first]);
  return ::testing::AssertionFailure()
         << what << ": " << count << " of " << gpu.size() << " bytes differ; first at byte "
         << first << " = " << describe(first) << ": " << values;
}

// ---- Fixture ---------------------------------------------------------------------------------

class KVCodecGpu : public ::testing::TestWithParam<CodecCase> {
 protected:
  void SetUp() override {
    const std::string why = why_no_gpu();
    if (!why.empty()) GTEST_SKIP() << why;
  }
};

// Byte offset of the bf16 view inside its device buffer.
int64_t bf16_offset_bytes(const CodecCase& c) { return c.bf16_offset * 2; }

TEST_P(KVCodecGpu, QuantizeMatchesCpu) {
  const CodecCase& c = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  Rng rng(seed);
  HostTensor k = make_bf16_cache(c);
  fill_bf16_cache(k, c.layout, rng);
  HostTensor q_cpu = make_quant_cache(c);
  q_cpu.fill_bytes(0xA5);

  DeviceBuffer k_dev(bf16_offset_bytes(c) + k.storage_bytes());
  DeviceBuffer q_dev(q_cpu.storage_bytes());
  k_dev.upload(k.data(), k.storage_bytes(), bf16_offset_bytes(c));
  q_dev.upload(q_cpu.data(), q_cpu.storage_bytes());

  kv_quantize({c.layout, k.view(), q_cpu.view()});
  kv_quantize({c.layout, k.view_at(k_dev.get() + bf16_offset_bytes(c), cuda_device(0)),
               q_cpu.view_at(q_dev.get(), cuda_device(0))});
  FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());

  EXPECT_TRUE(same_bytes("quant_cache", q_cpu.bytes(), q_dev.download_bytes(0, q_cpu.storage_bytes()),
                         [&](int64_t off) { return describe_quant_byte(c, off); }));
}

// Dequantizes (a) the CPU's quantization of a random cache and (b) arbitrary FP8 codes.
TEST_P(KVCodecGpu, DequantizeMatchesCpu) {
  const CodecCase& c = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  Rng rng(seed);
  for (const bool random_codes : {false, true}) {
    SCOPED_TRACE(random_codes ? "input: arbitrary FP8 codes" : "input: a quantized random cache");
    HostTensor q = make_quant_cache(c);
    if (random_codes) {
      fill_random_codes(q, c.layout, rng);
    } else {
      HostTensor src = make_bf16_cache(c);
      fill_bf16_cache(src, c.layout, rng);
      q.fill_bytes(0x5A);
      kv_quantize({c.layout, src.view(), q.view()});
    }
    HostTensor k_cpu = make_bf16_cache(c);
    k_cpu.fill_bytes(0xC3);

    DeviceBuffer q_dev(q.storage_bytes());
    DeviceBuffer k_dev(bf16_offset_bytes(c) + k_cpu.storage_bytes());
    q_dev.upload(q.data(), q.storage_bytes());
    k_dev.upload(k_cpu.data(), k_cpu.storage_bytes(), bf16_offset_bytes(c));

    kv_dequantize({c.layout, q.view(), k_cpu.view()});
    kv_dequantize({c.layout, q.view_at(q_dev.get(), cuda_device(0)),
                   k_cpu.view_at(k_dev.get() + bf16_offset_bytes(c), cuda_device(0))});
    FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());

    EXPECT_TRUE(same_bytes("k_cache", k_cpu.bytes(),
                           k_dev.download_bytes(bf16_offset_bytes(c), k_cpu.storage_bytes()),
                           [&](int64_t off) { return describe_bf16_byte(k_cpu, off); }));
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, KVCodecGpu, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<CodecCase>& info) {
                           return std::string(info.param.name);
                         });

// ---- Corner cases ----------------------------------------------------------------------------

TEST(KVCodecGpuCorner, ZeroBlocksLaunchNothing) {
  const std::string why = why_no_gpu();
  if (!why.empty()) GTEST_SKIP() << why;
  for (const KVCacheLayout layout : {kV32, kModel1}) {
    DeviceBuffer k_dev(64), q_dev(64);
    FLASHMLA_CUDA_CHECK(cudaMemset(q_dev.get(), 0xA5, 64));
    const int64_t d = dim_of(layout), tb = token_bytes_of(layout);
    const TensorView k = TensorView::contiguous(k_dev.get(), DType::kBFloat16, cuda_device(0),
                                                {0, 64, 1, d});
    const TensorView q = TensorView::contiguous(q_dev.get(), DType::kUInt8, cuda_device(0),
                                                {0, 64, 1, tb});
    EXPECT_NO_THROW(kv_quantize({layout, k, q}));
    EXPECT_NO_THROW(kv_dequantize({layout, q, k}));
    FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
    for (uint8_t b : q_dev.download_bytes(0, 64)) ASSERT_EQ(b, 0xA5) << "a zero-block call wrote memory";
  }
}

// Runs without a GPU too: introspection must report, never throw.
TEST(KVCodecGpuCorner, DescribeDevicesNeverThrows) {
  std::string s;
  EXPECT_NO_THROW(s = cuda::describe_devices());
  EXPECT_FALSE(s.empty());
  if (why_no_gpu().empty()) {
    EXPECT_GT(cuda::device_sm_count(0), 0);
  }
}

// ---- Lookup tables (no GPU needed) -----------------------------------------------------------

// The quantizer's table lookup equals fp8::float_to_e4m3 on every input the kernel can give it:
// v = x * 2^-e for every non-NaN bf16 x and every tile exponent e (scale_exponent_for_amax
// returns -13..120 for a non-NaN amax, 1 for inf).
TEST(KVCodecTables, EncodeLookupMatchesFloatToE4m3) {
  std::vector<uint8_t> table(cuda::kv_codec::kEncodeEntries);
  for (int i = 0; i < cuda::kv_codec::kEncodeEntries; ++i)
    table[i] = cuda::kv_codec::encode_entry(i);
  int64_t mismatches = 0;
  std::string first;
  for (int e = -13; e <= 126; ++e) {
    const float inv_scale = fp8::exp2_int(-e);
    for (uint32_t x = 0; x <= 0xFFFF; ++x) {
      if ((x & 0x7FFFu) > 0x7F80u) continue;  // NaN: the kernel does not look those up
      const float v = fp8::bf16_to_float(static_cast<uint16_t>(x)) * inv_scale;
      const uint8_t got = cuda::kv_codec::encode_e4m3(table.data(), v);
      const uint8_t want = fp8::float_to_e4m3(v);
      if (got == want) continue;
      if (mismatches++ == 0) {
        char buf[128];
        std::snprintf(buf, sizeof buf, "bf16 0x%04x * 2^%d: table 0x%02x, float_to_e4m3 0x%02x", x,
                      -e, got, want);
        first = buf;
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << "first: " << first;
}

}  // namespace
}  // namespace flashmla::test
