// Table-driven forms of fp8.h's e4m3 codecs for the codec kernels. Every entry is computed by
// fp8.h's own function, so a lookup returns exactly what the function returns; the kernels look
// up because the functions' branches made them compute-bound. Host-callable, so the tests can
// check the lookups exhaustively against the functions.
#pragma once

#include <cstdint>

#include "flashmla/fp8.h"

namespace flashmla::cuda::kv_codec {

// ---- Encoding (quantize) ----
// The quantizer feeds float_to_e4m3 with v = bf16 * 2^k: at most 8 significant bits, so for a
// normal float v the top 16 bits of |v| are its exact bf16 magnitude. Round-to-nearest-even sends
// every magnitude <= 2^-10 to 0 and float_to_e4m3 saturates every magnitude >= 448 (inf
// included) to 448, so clamping the magnitude into [2^-10, 448] changes no result; float
// subnormals clamp to 2^-10 as well. NaN is the one input the table cannot take.
inline constexpr uint32_t kEncodeFirst = 0x3A80;  // bf16 bits of 2^-10
inline constexpr uint32_t kEncodeLast = 0x43E0;   // bf16 bits of 448
inline constexpr int kEncodeEntries = static_cast<int>(kEncodeLast - kEncodeFirst + 1);

FLASHMLA_HD uint8_t encode_entry(int i) {
  return fp8::float_to_e4m3(fp8::bf16_to_float(static_cast<uint16_t>(kEncodeFirst + i)));
}

// fp8::float_to_e4m3(v) for v = bf16 * 2^k, v not NaN.
FLASHMLA_HD uint8_t encode_e4m3(const uint8_t* table, float v) {
  const uint32_t bits = fp8::float_bits(v);
  uint32_t mag = (bits >> 16) & 0x7FFFu;
  mag = mag < kEncodeFirst ? kEncodeFirst : mag > kEncodeLast ? kEncodeLast : mag;
  return static_cast<uint8_t>(table[mag - kEncodeFirst] | ((bits >> 24) & 0x80u));
}

// ---- Decoding (dequantize) ----
inline constexpr int kDecodeEntries = 256;

FLASHMLA_HD float decode_entry(int i) { return fp8::e4m3_to_float(static_cast<uint8_t>(i)); }

}  // namespace flashmla::cuda::kv_codec
