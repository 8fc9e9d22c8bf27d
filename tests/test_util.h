// Test utilities shared by every suite (CPU now, GPU later): seeded random numbers, host tensors
// that make flashmla::TensorView's, 16-bit float codecs written independently of the library,
// random activations, output poisoning and an elementwise comparison that reports the worst
// element.
//
// Layers: test_util (this) -> naive_reference (float64 loops) -> cases (the case tables) ->
// harness (inputs of a case, params, checks) -> test_*.cpp (run the public API and compare).
// A GPU suite reuses everything below test_*.cpp: it uploads a HostTensor's storage, calls
// HostTensor::view_at() with the device pointer, and downloads the outputs into HostTensors.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "flashmla/tensor.h"

namespace flashmla::test {

// ---------------------------------------------------------------------------------------------
// Random numbers. Every case draws a fresh seed (printed on failure through the case's trace);
// FLASHMLA_TEST_SEED=<n> makes every case use seed n, to replay a failure:
//   FLASHMLA_TEST_SEED=1234 ./flashmla_tests --gtest_filter='*DenseDecode*i07*'

// The seed for the next case: FLASHMLA_TEST_SEED if set, else a fresh random one.
uint64_t fresh_seed();

class Rng {
 public:
  explicit Rng(uint64_t seed) : seed_(seed), gen_(seed) {}
  uint64_t seed() const { return seed_; }
  double normal() { return normal_(gen_); }
  double uniform() { return uniform_(gen_); }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int64_t uniform_int(int64_t lo, int64_t hi);  // [lo, hi], inclusive
  bool bernoulli(double p) { return uniform() < p; }
  std::mt19937_64& engine() { return gen_; }

 private:
  uint64_t seed_;
  std::mt19937_64 gen_;
  std::normal_distribution<double> normal_{0.0, 1.0};
  std::uniform_real_distribution<double> uniform_{0.0, 1.0};
};

// "seed=<n> (replay: FLASHMLA_TEST_SEED=<n>)", for traces.
std::string seed_note(uint64_t seed);

// ---------------------------------------------------------------------------------------------
// Independent scalar codecs (round to nearest even; overflow -> inf; NaN stays NaN). Written
// from the IEEE-754 definitions with double arithmetic, not from flashmla's bit tricks.
uint16_t double_to_bf16(double x);
double bf16_to_double(uint16_t v);
uint16_t double_to_fp16(double x);
double fp16_to_double(uint16_t v);

// Unit roundoff of a 16-bit float type: 2^-8 for bf16 (8 significant bits), 2^-11 for fp16.
double unit_roundoff(DType dtype);

// ---------------------------------------------------------------------------------------------
// A host tensor that owns its storage: a dtype, a shape and element strides (row-major by
// default, or padded so the view is not contiguous). The storage is 64-byte aligned. Gaps
// between strided elements are part of the storage and can be poisoned, so a kernel that ignores
// the strides reads the poison and fails.
class HostTensor {
 public:
  HostTensor() = default;
  // Row-major.
  HostTensor(DType dtype, std::vector<int64_t> shape);
  // Explicit strides (in elements); the storage covers every element and, for rank >= 1,
  // shape[0] * stride[0] elements, so a block-strided cache owns its last block's tail too.
  HostTensor(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> stride);
  // Row-major strides with `pad[d]` extra elements added to dimension d's stride on top of the
  // padded size of the dimensions inside it (pad.size() == rank; pad of the last dim must be 0).
  static HostTensor padded(DType dtype, std::vector<int64_t> shape, std::vector<int64_t> pad);

  bool defined() const { return !shape_.empty() || storage_elems_ > 0; }
  DType dtype() const { return dtype_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t size(int dim) const { return shape_[dim < 0 ? dim + rank() : dim]; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& stride() const { return stride_; }
  int64_t numel() const;
  bool is_contiguous() const;

  // Storage: the whole allocation, gaps included.
  void* data() const { return storage_.get(); }
  int64_t storage_elems() const { return storage_elems_; }
  int64_t storage_bytes() const { return storage_elems_ * dtype_size(dtype_); }
  uint8_t* bytes() const { return static_cast<uint8_t*>(data()); }
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data());
  }

  // Element offset of a multi-index, and of the i-th element in row-major logical order.
  int64_t offset(std::initializer_list<int64_t> idx) const;
  int64_t offset_of_logical(int64_t i) const;

  // Value of an element as double (exact for every dtype), and assignment rounding to the dtype
  // (floating types round to nearest even; integers must be exact).
  double get(std::initializer_list<int64_t> idx) const { return get_at(offset(idx)); }
  void set(std::initializer_list<int64_t> idx, double v) { set_at(offset(idx), v); }
  double get_at(int64_t element_offset) const;
  void set_at(int64_t element_offset, double v);
  int32_t i32(std::initializer_list<int64_t> idx) const { return ptr<int32_t>()[offset(idx)]; }

  // Every element of the storage (gaps included): NaN for floating types, `garbage_int` for
  // int32 and `garbage_byte` for byte types.
  void poison(int32_t garbage_int = -0x5A5A5A5A, uint8_t garbage_byte = 0xFF);
  void fill_bytes(uint8_t byte);

  // All elements in row-major logical order, as doubles.
  std::vector<double> to_doubles() const;

  // A deep copy (copies share storage otherwise).
  HostTensor clone() const;

  // Views through the library's factories (TensorView::contiguous / strided).
  TensorView view(Device device = kCPU) const { return view_at(data(), device); }
  TensorView view_at(void* data, Device device) const;

 private:
  DType dtype_ = DType::kFloat32;
  std::vector<int64_t> shape_, stride_;
  int64_t storage_elems_ = 0;
  std::shared_ptr<uint8_t> storage_;
};

// A contiguous int32 vector.
HostTensor int32_tensor(const std::vector<int32_t>& values);
// A contiguous float32 vector.
HostTensor float32_tensor(const std::vector<float>& values);

// Fills every logical element with randn/10 clamped to [-1, 1] (SPEC.md §7: scaled like real
// activations, never zeros), rounded to the tensor's dtype.
void fill_activations(HostTensor& t, Rng& rng);
double random_activation(Rng& rng);
// n such values, generated in parallel chunks whose seeds are drawn from rng: the result depends
// only on rng's state, not on the thread count.
std::vector<double> random_activations(int64_t n, Rng& rng);

// ---------------------------------------------------------------------------------------------
// Comparison. Elementwise |got - ref| <= atol + rtol * |ref|, with exact agreement of the
// positions (and signs) of infinities and NaNs. The failure message names the tensor, its shape,
// the worst element (multi-index, got, expected, excess over the tolerance), the number of
// failures and the pass rate.
struct Tolerance {
  double atol = 0.0;
  double rtol = 0.0;
};

::testing::AssertionResult all_close(const std::string& what, const std::vector<double>& got,
                                     const std::vector<double>& ref,
                                     const std::vector<int64_t>& shape, Tolerance tol);

// Bitwise equality (for determinism and byte-exact codecs); reports the first difference.
::testing::AssertionResult bytes_equal(const std::string& what, const uint8_t* a, const uint8_t* b,
                                       int64_t n);

// FlashMLA's "cosine" difference 1 - 2 sum(x y) / sum(x^2 + y^2) over finite pairs (0 when both
// are all zeros): a whole-tensor check that catches small systematic errors hiding under the
// elementwise atol.
double cosine_diff(const std::vector<double>& got, const std::vector<double>& ref);
::testing::AssertionResult cosine_close(const std::string& what, const std::vector<double>& got,
                                        const std::vector<double>& ref, double max_diff);

// "[1, 0, 3]" from a row-major index.
std::string index_str(int64_t flat, const std::vector<int64_t>& shape);
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace flashmla::test
