// Test utilities: see test_util.h.
#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace flashmla::test {

// ---- random numbers ---------------------------------------------------------------------------

uint64_t fresh_seed() {
  if (const char* env = std::getenv("FLASHMLA_TEST_SEED"); env && *env)
    return std::strtoull(env, nullptr, 0);
  static std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

int64_t Rng::uniform_int(int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(gen_);
}

std::string seed_note(uint64_t seed) {
  return "seed=" + std::to_string(seed) + " (replay: FLASHMLA_TEST_SEED=" + std::to_string(seed) +
         ")";
}

// ---- 16-bit floats ----------------------------------------------------------------------------

namespace {

// Rounds |x| (finite, > 0) to a binary float with `mant_bits` explicit mantissa bits, minimum
// normal exponent `emin` (subnormals below it) and returns (biased exponent, mantissa) packed as
// (exp << mant_bits) | mant; overflow is signalled by a biased exponent >= max_biased.
uint32_t round_to_format(double a, int mant_bits, int emin, int bias) {
  int e2;
  std::frexp(a, &e2);  // a = f * 2^e2, f in [0.5, 1)
  int e = e2 - 1;      // a in [2^e, 2^(e+1))
  if (e < emin) {
    // Subnormal: a multiple of 2^(emin - mant_bits); nearbyint rounds to nearest even.
    const double m = std::nearbyint(std::ldexp(a, mant_bits - emin));
    return static_cast<uint32_t>(m);  // m == 2^mant_bits is the smallest normal: still correct
  }
  double m = std::nearbyint(std::ldexp(a, mant_bits - e));  // in [2^mb, 2^(mb+1)]
  if (m == std::ldexp(1.0, mant_bits + 1)) {
    m /= 2;
    ++e;
  }
  const uint32_t mant = static_cast<uint32_t>(m) - (1u << mant_bits);
  return (static_cast<uint32_t>(e + bias) << mant_bits) | mant;
}

}  // namespace

uint16_t double_to_bf16(double x) {
  // Rounding to float first can double-round; callers only need *some* nearby bf16 (the stored
  // value is what the reference reads back), so round the float32 value once more, exactly.
  const float f = static_cast<float>(x);
  if (std::isnan(f)) return 0x7FC0;
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(f));
  if (std::isinf(a)) return sign | 0x7F80;
  if (a == 0) return sign;
  const uint32_t code = round_to_format(a, 7, -126, 127);
  if (code >= 0x7F80u) return sign | 0x7F80;
  return static_cast<uint16_t>(sign | code);
}

double bf16_to_double(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t double_to_fp16(double x) {
  if (std::isnan(x)) return 0x7E00;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  if (std::isinf(a)) return sign | 0x7C00;
  if (a == 0) return sign;
  const uint32_t code = round_to_format(a, 10, -14, 15);
  if (code >= 0x7C00u) return sign | 0x7C00;
  return static_cast<uint16_t>(sign | code);
}

double fp16_to_double(uint16_t v) {
  const double sign = (v & 0x8000) ? -1.0 : 1.0;
  const int exp = (v >> 10) & 0x1F;
  const int mant = v & 0x3FF;
  if (exp == 0x1F)
    return mant ? std::numeric_limits<double>::quiet_NaN()
                : sign * std::numeric_limits<double>::infinity();
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}

double unit_roundoff(DType dtype) {
  switch (dtype) {
    case DType::kBFloat16:
      return std::ldexp(1.0, -8);
    case DType::kFloat16:
      return std::ldexp(1.0, -11);
    case DType::kFloat32:
      return std::ldexp(1.0, -24);
    default:
      return 0.0;
  }
}

// ---- HostTensor -------------------------------------------------------------------------------

namespace {

std::shared_ptr<uint8_t> allocate(int64_t bytes) {
  const size_t n = static_cast<size_t>((std::max<int64_t>(bytes, 1) + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, n);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, n);
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
}

std::vector<int64_t> row_major(const std::vector<int64_t>& shape) {
  std::vector<int64_t> stride(shape.size());
  int64_t s = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    stride[d] = s;
    s *= shape[d];
  }
  return stride;
}

}  // namespace

HostTensor::HostTensor(DType dtype, std::vector<int64_t> shape)
    : HostTensor(dtype, shape, row_major(shape)) {}

HostTensor::HostTensor(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> stride)
    : dtype_(dtype), shape_(std::move(shape)), stride_(std::move(stride)) {
  if (shape_.size() != stride_.size() || shape_.size() > static_cast<size_t>(kMaxRank))
    throw std::invalid_argument("HostTensor: bad rank");
  int64_t last = 0;
  bool empty = false;
  for (size_t d = 0; d < shape_.size(); ++d) {
    if (shape_[d] == 0) empty = true;
    last += (shape_[d] - 1) * stride_[d];
  }
  storage_elems_ = empty ? 0 : last + 1;
  if (!shape_.empty()) storage_elems_ = std::max(storage_elems_, shape_[0] * stride_[0]);
  storage_ = allocate(storage_bytes());
}

HostTensor HostTensor::padded(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> pad) {
  if (pad.size() != shape.size()) throw std::invalid_argument("HostTensor::padded: pad rank");
  std::vector<int64_t> stride(shape.size());
  int64_t s = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    stride[d] = s + (d + 1 < static_cast<int>(shape.size()) ? pad[d] : 0);
    s = stride[d] * shape[d];
  }
  if (!pad.empty() && pad.back() != 0)
    throw std::invalid_argument("HostTensor::padded: the last dim stays contiguous");
  return HostTensor(dtype, std::move(shape), std::move(stride));
}

int64_t HostTensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape_) n *= s;
  return n;
}

bool HostTensor::is_contiguous() const { return stride_ == row_major(shape_); }

int64_t HostTensor::offset(std::initializer_list<int64_t> idx) const {
  int64_t off = 0;
  int d = 0;
  for (int64_t i : idx) off += i * stride_[d++];
  return off;
}

int64_t HostTensor::offset_of_logical(int64_t i) const {
  int64_t off = 0;
  for (int d = rank() - 1; d >= 0; --d) {
    off += (i % shape_[d]) * stride_[d];
    i /= shape_[d];
  }
  return off;
}

double HostTensor::get_at(int64_t o) const {
  switch (dtype_) {
    case DType::kFloat32:
      return ptr<float>()[o];
    case DType::kBFloat16:
      return bf16_to_double(ptr<uint16_t>()[o]);
    case DType::kFloat16:
      return fp16_to_double(ptr<uint16_t>()[o]);
    case DType::kInt32:
      return ptr<int32_t>()[o];
    case DType::kUInt8:
    case DType::kFloat8E4M3:
      return ptr<uint8_t>()[o];
  }
  return 0;
}

void HostTensor::set_at(int64_t o, double v) {
  switch (dtype_) {
    case DType::kFloat32:
      ptr<float>()[o] = static_cast<float>(v);
      break;
    case DType::kBFloat16:
      ptr<uint16_t>()[o] = double_to_bf16(v);
      break;
    case DType::kFloat16:
      ptr<uint16_t>()[o] = double_to_fp16(v);
      break;
    case DType::kInt32:
      ptr<int32_t>()[o] = static_cast<int32_t>(v);
      break;
    case DType::kUInt8:
    case DType::kFloat8E4M3:
      ptr<uint8_t>()[o] = static_cast<uint8_t>(v);
      break;
  }
}

void HostTensor::poison(int32_t garbage_int, uint8_t garbage_byte) {
  const int64_t n = storage_elems_;
  switch (dtype_) {
    case DType::kFloat32:
      std::fill_n(ptr<float>(), n, std::numeric_limits<float>::quiet_NaN());
      break;
    case DType::kBFloat16:
      std::fill_n(ptr<uint16_t>(), n, uint16_t{0x7FC0});
      break;
    case DType::kFloat16:
      std::fill_n(ptr<uint16_t>(), n, uint16_t{0x7E00});
      break;
    case DType::kInt32:
      std::fill_n(ptr<int32_t>(), n, garbage_int);
      break;
    case DType::kUInt8:
    case DType::kFloat8E4M3:
      std::fill_n(ptr<uint8_t>(), n, garbage_byte);
      break;
  }
}

HostTensor HostTensor::clone() const {
  HostTensor t = *this;
  t.storage_ = allocate(storage_bytes());
  std::memcpy(t.data(), data(), storage_bytes());
  return t;
}

void HostTensor::fill_bytes(uint8_t byte) { std::memset(data(), byte, storage_bytes()); }

std::vector<double> HostTensor::to_doubles() const {
  std::vector<double> v(numel());
  const int64_t n = static_cast<int64_t>(v.size());
  if (is_contiguous()) {  // (no index arithmetic per element: GPU tests compare ~1e7 elements)
    for (int64_t i = 0; i < n; ++i) v[i] = get_at(i);
    return v;
  }
  for (int64_t i = 0; i < n; ++i) v[i] = get_at(offset_of_logical(i));
  return v;
}

TensorView HostTensor::view_at(void* p, Device device) const {
  const auto& s = shape_;
  const auto& t = stride_;
  if (is_contiguous()) {
    switch (rank()) {
      case 1:
        return TensorView::contiguous(p, dtype_, device, {s[0]});
      case 2:
        return TensorView::contiguous(p, dtype_, device, {s[0], s[1]});
      case 3:
        return TensorView::contiguous(p, dtype_, device, {s[0], s[1], s[2]});
      case 4:
        return TensorView::contiguous(p, dtype_, device, {s[0], s[1], s[2], s[3]});
    }
  } else {
    switch (rank()) {
      case 1:
        return TensorView::strided(p, dtype_, device, {s[0]}, {t[0]});
      case 2:
        return TensorView::strided(p, dtype_, device, {s[0], s[1]}, {t[0], t[1]});
      case 3:
        return TensorView::strided(p, dtype_, device, {s[0], s[1], s[2]}, {t[0], t[1], t[2]});
      case 4:
        return TensorView::strided(p, dtype_, device, {s[0], s[1], s[2], s[3]},
                                   {t[0], t[1], t[2], t[3]});
    }
  }
  throw std::invalid_argument("HostTensor::view: rank " + std::to_string(rank()));
}

HostTensor int32_tensor(const std::vector<int32_t>& values) {
  HostTensor t(DType::kInt32, {static_cast<int64_t>(values.size())});
  std::copy(values.begin(), values.end(), t.ptr<int32_t>());
  return t;
}

HostTensor float32_tensor(const std::vector<float>& values) {
  HostTensor t(DType::kFloat32, {static_cast<int64_t>(values.size())});
  std::copy(values.begin(), values.end(), t.ptr<float>());
  return t;
}

double random_activation(Rng& rng) { return std::clamp(rng.normal() / 10.0, -1.0, 1.0); }

std::vector<double> random_activations(int64_t n, Rng& rng) {
  constexpr int64_t kChunk = 1 << 15;
  const uint64_t base = rng.engine()();
  std::vector<double> v(n);
#pragma omp parallel for schedule(dynamic)
  for (int64_t c = 0; c < (n + kChunk - 1) / kChunk; ++c) {
    Rng chunk_rng(base + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(c + 1));
    for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i)
      v[i] = random_activation(chunk_rng);
  }
  return v;
}

void fill_activations(HostTensor& t, Rng& rng) {
  const int64_t n = t.numel();
  const std::vector<double> v = random_activations(n, rng);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) t.set_at(t.offset_of_logical(i), v[i]);
}

// ---- comparison -------------------------------------------------------------------------------

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string index_str(int64_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = shape[d] ? flat % shape[d] : 0;
    if (shape[d]) flat /= shape[d];
  }
  return shape_str(idx);
}

namespace {

std::string num(double v) {
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

}  // namespace

::testing::AssertionResult all_close(const std::string& what, const std::vector<double>& got,
                                     const std::vector<double>& ref,
                                     const std::vector<int64_t>& shape, Tolerance tol) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure()
           << what << ": " << got.size() << " elements, expected " << ref.size();
  int64_t failures = 0;
  int64_t worst = -1;
  double worst_excess = -1;  // +inf for a special-value mismatch
  const int64_t n = static_cast<int64_t>(got.size());
  for (int64_t i = 0; i < n; ++i) {
    const double g = got[i], r = ref[i];
    double excess;
    if (std::isnan(r) || std::isnan(g)) {
      excess = (std::isnan(r) && std::isnan(g)) ? -1 : std::numeric_limits<double>::infinity();
    } else if (std::isinf(r) || std::isinf(g)) {
      excess = (g == r) ? -1 : std::numeric_limits<double>::infinity();
    } else {
      excess = std::fabs(g - r) - (tol.atol + tol.rtol * std::fabs(r));
    }
    if (excess > 0) {
      ++failures;
      if (excess > worst_excess) {
        worst_excess = excess;
        worst = i;
      }
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  const double pass_rate = n ? 100.0 * static_cast<double>(n - failures) / n : 100.0;
  auto out = ::testing::AssertionFailure();
  out << what << " " << shape_str(shape) << ": " << failures << " of " << n
      << " elements outside |got - ref| <= " << tol.atol << " + " << tol.rtol
      << " * |ref| (pass rate " << num(pass_rate) << "%); worst at " << index_str(worst, shape)
      << ": got " << num(got[worst]) << ", expected " << num(ref[worst]);
  if (std::isfinite(worst_excess))
    out << ", |diff| = " << num(std::fabs(got[worst] - ref[worst]));
  else
    out << " (inf/NaN position mismatch)";
  return out;
}

::testing::AssertionResult bytes_equal(const std::string& what, const uint8_t* a, const uint8_t* b,
                                       int64_t n) {
  int64_t diffs = 0, first = -1;
  for (int64_t i = 0; i < n; ++i)
    if (a[i] != b[i]) {
      if (first < 0) first = i;
      ++diffs;
    }
  if (diffs == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << diffs << " of " << n << " bytes differ; first at byte " << first << ": "
         << int{a[first]} << " vs " << int{b[first]};
}

double cosine_diff(const std::vector<double>& got, const std::vector<double>& ref) {
  double xy = 0, xx_yy = 0;
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(ref[i])) continue;
    xy += got[i] * ref[i];
    xx_yy += got[i] * got[i] + ref[i] * ref[i];
  }
  return xx_yy == 0 ? 0.0 : 1.0 - 2.0 * xy / xx_yy;
}

::testing::AssertionResult cosine_close(const std::string& what, const std::vector<double>& got,
                                        const std::vector<double>& ref, double max_diff) {
  const double d = cosine_diff(got, ref);
  if (d <= max_diff) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": cosine difference " << num(d) << " > " << max_diff;
}

}  // namespace flashmla::test
