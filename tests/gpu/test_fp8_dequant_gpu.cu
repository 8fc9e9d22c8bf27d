// The sparse decode kernels' e4m3 -> bf16 dequantization (src/cuda/sparse/dequant.cuh), both
// ways, on every one of the 256 codes times a range of scales, bitwise against what the CPU
// backend's FP8 decoding gives (fp8.h: e4m3 value times the scale in float32, rounded to bf16).
// This catches what attention tolerances would hide: a flushed e4m3 subnormal, a NaN code read
// as a number, a swapped element order. Skips when no CUDA device is usable.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "cuda/sparse/dequant.cuh"
#include "flashmla/fp8.h"
#include "gpu/gpu_test_util.h"

namespace flashmla::test {
namespace {

using cuda::sparse::Dequant;

// One thread per (scale, 16-code chunk): chunk c holds codes 16 c .. 16 c + 15 in byte order.
template <Dequant kMode>
__global__ void dequant_all(const float* scales, int n_scales, uint16_t* out) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= n_scales * 16) return;
  const int chunk = t % 16;
  uint32_t w[4];
  for (int i = 0; i < 4; ++i) {
    const uint32_t c = 16 * chunk + 4 * i;
    w[i] = c | (c + 1) << 8 | (c + 2) << 16 | (c + 3) << 24;
  }
  uint4 lo, hi;
  cuda::sparse::dequant16<kMode>(make_uint4(w[0], w[1], w[2], w[3]), scales[t / 16], lo, hi);
  uint4* dst = reinterpret_cast<uint4*>(out + 16 * t);
  dst[0] = lo;
  dst[1] = hi;
}

std::vector<float> test_scales() {
  std::vector<float> s;
  for (int e : {-126, -40, -20, -9, -1, 0, 1, 7, 8, 20, 100, 126}) s.push_back(fp8::exp2_int(e));
  s.push_back(fp8::ue8m0_to_float(0));     // 2^-127, a float subnormal
  s.push_back(fp8::ue8m0_to_float(0xFF));  // NaN
  s.push_back(0.3f);                       // not a power of two
  s.push_back(-0.5f);
  s.push_back(INFINITY);
  return s;
}

template <Dequant kMode>
void check_mode(const char* name) {
  if (const std::string why = why_no_gpu(); !why.empty()) GTEST_SKIP() << why;
  const std::vector<float> scales = test_scales();
  const int n = static_cast<int>(scales.size());
  DeviceBuffer d_scales(n * sizeof(float)), d_out(int64_t{n} * 256 * sizeof(uint16_t));
  d_scales.upload(scales.data(), n * sizeof(float));
  d_out.poison();
  dequant_all<kMode><<<(n * 16 + 127) / 128, 128>>>(reinterpret_cast<const float*>(d_scales.get()),
                                                    n, reinterpret_cast<uint16_t*>(d_out.get()));
  FLASHMLA_CUDA_CHECK(cudaGetLastError());
  FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint16_t> got(int64_t{n} * 256);
  d_out.download(got.data(), got.size() * sizeof(uint16_t));
  int bad = 0;
  for (int si = 0; si < n; ++si) {
    for (int code = 0; code < 256; ++code) {
      const float want_f = fp8::e4m3_to_float(static_cast<uint8_t>(code)) * scales[si];
      const uint16_t want = fp8::float_to_bf16(want_f);
      const uint16_t g = got[si * 256 + code];
      const bool want_nan = std::isnan(want_f);
      const bool got_nan = (g & 0x7FFFu) > 0x7F80u;
      const bool ok = want_nan ? got_nan : g == want;
      if (!ok && ++bad <= 10)
        ADD_FAILURE() << name << ": code 0x" << std::hex << code << " scale " << std::dec
                      << scales[si] << ": got bf16 0x" << std::hex << g << ", want 0x" << want;
    }
  }
  EXPECT_EQ(bad, 0) << name << ": codes that differ from the CPU decoding";
}

TEST(Fp8DequantGpu, ConversionWayMatchesCpuOnEveryCode) { check_mode<Dequant::kCvt>("kCvt"); }
TEST(Fp8DequantGpu, BitsWayMatchesCpuOnEveryCode) { check_mode<Dequant::kBits>("kBits"); }

}  // namespace
}  // namespace flashmla::test
