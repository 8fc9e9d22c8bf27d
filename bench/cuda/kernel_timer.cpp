// CUPTI kernel activity records, loaded with dlopen: see kernel_timer.h.
#include "kernel_timer.h"

#if __has_include(<cupti_activity.h>)
#include <cupti_activity.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

namespace {

using RegisterFn = CUptiResult (*)(CUpti_BuffersCallbackRequestFunc,
                                   CUpti_BuffersCallbackCompleteFunc);
using KindFn = CUptiResult (*)(CUpti_ActivityKind);
using FlushFn = CUptiResult (*)(uint32_t);
using NextFn = CUptiResult (*)(uint8_t*, size_t, CUpti_Activity**);

struct Cupti {
  RegisterFn register_callbacks = nullptr;
  KindFn enable = nullptr, disable = nullptr;
  FlushFn flush_all = nullptr;
  NextFn next_record = nullptr;
  std::string error;
};

std::mutex g_mutex;
std::vector<KernelSpan> g_spans;
// (the callbacks below run only after registration, when cupti() is initialised)
const Cupti& cupti();

constexpr size_t kBufferBytes = 8 << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* rec = nullptr;
  std::lock_guard<std::mutex> lock(g_mutex);
  while (cupti().next_record(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
      g_spans.push_back({k->start, k->end});
    }
  }
  std::free(buffer);
}

// Loads the library and registers the buffer callbacks once per process.
const Cupti& cupti() {
  static const Cupti c = [] {
    Cupti r;
    void* lib = nullptr;
    for (const char* name :
         {"libcupti.so.13", "libcupti.so", "/usr/local/cuda/lib64/libcupti.so.13",
          "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so.13"}) {
      if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
    }
    if (!lib) {
      r.error = "libcupti.so.13 not found";
      return r;
    }
    r.register_callbacks =
        reinterpret_cast<RegisterFn>(dlsym(lib, "cuptiActivityRegisterCallbacks"));
    r.enable = reinterpret_cast<KindFn>(dlsym(lib, "cuptiActivityEnable"));
    r.disable = reinterpret_cast<KindFn>(dlsym(lib, "cuptiActivityDisable"));
    r.flush_all = reinterpret_cast<FlushFn>(dlsym(lib, "cuptiActivityFlushAll"));
    r.next_record = reinterpret_cast<NextFn>(dlsym(lib, "cuptiActivityGetNextRecord"));
    if (!r.register_callbacks || !r.enable || !r.disable || !r.flush_all || !r.next_record) {
      r.error = "libcupti lacks the activity API";
      r.register_callbacks = nullptr;
      return r;
    }
    if (r.register_callbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS) {
      r.error = "cuptiActivityRegisterCallbacks failed";
      r.register_callbacks = nullptr;
    }
    return r;
  }();
  return c;
}

}  // namespace

KernelTimer::KernelTimer(bool enable) {
  if (!enable) {
    reason_ = "disabled";
    return;
  }
  ok_ = cupti().register_callbacks != nullptr;
  if (!ok_) reason_ = cupti().error;
}

void KernelTimer::start() {
  if (!ok_) return;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_spans.clear();
  }
  if (cupti().enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
    ok_ = false;
    reason_ = "cuptiActivityEnable(CONCURRENT_KERNEL) failed";
  }
}

std::vector<KernelSpan> KernelTimer::stop() {
  if (!ok_) return {};
  cupti().disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  cupti().flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<KernelSpan> out;
  out.swap(g_spans);
  std::sort(out.begin(), out.end(),
            [](const KernelSpan& a, const KernelSpan& b) { return a.start_ns < b.start_ns; });
  return out;
}

#else  // no CUPTI headers at build time

KernelTimer::KernelTimer(bool) { reason_ = "built without CUPTI headers"; }
void KernelTimer::start() {}
std::vector<KernelSpan> KernelTimer::stop() { return {}; }

#endif
