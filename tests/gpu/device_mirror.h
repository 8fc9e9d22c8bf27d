// GPU test plumbing shared by the suites that go through the public API with host-built cases:
// device mirrors of host tensors (same shapes, strides and garbage), a synchronising error
// check, the stride-gap check of outputs, and scoped environment switches. Only compiled in CUDA
// builds (tests/gpu/).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cuda/common/cuda_check.h"
#include "gpu/gpu_test_util.h"
#include "harness.h"
#include "test_util.h"

namespace flashmla::test {

// ---- device copies ---------------------------------------------------------------------------

// Device copies of the host tensors a params builder views. The first view of a tensor uploads
// its whole storage (stride gaps and NaN garbage included) into a device buffer of the same size
// and returns the host view's shape and strides over it on cuda:0. Keyed by the storage pointer,
// which copies of a HostTensor share.
class DeviceMirror {
 public:
  ViewFn view_fn() {
    return [this](const HostTensor& t) {
      return t.view_at(copy_of(t).buffer->get(), cuda_device(0));
    };
  }
  void poison(const HostTensor& t) { copy_of(t).buffer->poison(); }
  // The device bytes of `t` into `into`, a host tensor of the same layout.
  void download(const HostTensor& t, const HostTensor& into) {
    if (into.storage_bytes() != t.storage_bytes())
      throw std::logic_error("DeviceMirror::download: storage sizes differ");
    copy_of(t).buffer->download(into.data(), into.storage_bytes());
  }
  // Every uploaded tensor but `outputs` still holds its host bytes on the device.
  ::testing::AssertionResult inputs_unchanged(const std::vector<const HostTensor*>& outputs) const {
    for (const auto& [data, copy] : copies_) {
      const bool is_output = std::any_of(outputs.begin(), outputs.end(),
                                         [&](const HostTensor* o) { return o->data() == data; });
      if (is_output) continue;
      const std::vector<uint8_t> now = copy.buffer->download_bytes(0, copy.host.storage_bytes());
      auto same = bytes_equal("input " + shape_str(copy.host.shape()) + " after the calls",
                              now.data(), copy.host.bytes(), copy.host.storage_bytes());
      if (!same) return same;
    }
    return ::testing::AssertionSuccess();
  }

 private:
  struct Copy {
    HostTensor host;
    std::unique_ptr<DeviceBuffer> buffer;
  };
  Copy& copy_of(const HostTensor& t) {
    auto it = copies_.find(t.data());
    if (it == copies_.end()) {
      Copy c{t, std::make_unique<DeviceBuffer>(t.storage_bytes())};
      c.buffer->upload(t.data(), t.storage_bytes());
      it = copies_.emplace(t.data(), std::move(c)).first;
    }
    return it->second;
  }
  std::map<const void*, Copy> copies_;
};

// Surfaces launch errors and faults of the call (asynchronous ones show only at a sync).
inline void sync_device() {
  FLASHMLA_CUDA_CHECK(cudaGetLastError());
  FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
}

// The bytes of t's storage outside its view (stride gaps) still hold the device poison 0xFF: the
// kernel wrote only inside the view.
inline ::testing::AssertionResult gaps_untouched(const std::string& what, const HostTensor& t) {
  const int esize = dtype_size(t.dtype());
  std::vector<char> in_view(t.storage_bytes(), 0);
  for (int64_t i = 0; i < t.numel(); ++i)
    std::fill_n(in_view.begin() + t.offset_of_logical(i) * esize, esize, 1);
  for (int64_t b = 0; b < t.storage_bytes(); ++b)
    if (!in_view[b] && t.bytes()[b] != 0xFF)
      return ::testing::AssertionFailure()
             << what << ": byte " << b << " of the storage, outside the view "
             << shape_str(t.shape()) << " strides " << shape_str(t.stride())
             << ", was written (0x" << std::hex << int(t.bytes()[b]) << ")";
  return ::testing::AssertionSuccess();
}

// Sets environment variables for a scope (kernel switches), restoring the old values after.
class ScopedEnv {
 public:
  explicit ScopedEnv(const std::vector<std::pair<std::string, std::string>>& settings) {
    for (const auto& [name, value] : settings) {
      const char* old = std::getenv(name.c_str());
      saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
      setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ScopedEnv(const std::string& name, const std::string& value) : ScopedEnv({{name, value}}) {}
  ~ScopedEnv() {
    for (const auto& [name, old] : saved_) {
      if (old) setenv(name.c_str(), old->c_str(), 1);
      else unsetenv(name.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

}  // namespace flashmla::test
