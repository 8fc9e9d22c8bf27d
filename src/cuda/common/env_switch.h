// The kernels' A/B and opt-in switches: environment variables read on every call (docs/api.md,
// "Kernel switches").
#pragma once

#include <cstdlib>
#include <cstring>

namespace flashmla::cuda {

// True when environment variable `name` is set to exactly `value`.
inline bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

}  // namespace flashmla::cuda
