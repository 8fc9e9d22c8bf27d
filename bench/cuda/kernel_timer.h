// Kernel durations as the GPU records them (CUPTI activity records), the way anchors.md's
// "kernel µs" were taken (the torch profiler is a CUPTI client too). CUPTI is loaded at run time
// (dlopen), so the benchmark still runs, without this column, where the library is missing.
//
//   KernelTimer timer;                 // available() == false: no CUPTI here (reason())
//   timer.start();  ... launches ...  sync ...  std::vector<KernelSpan> k = timer.stop();
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct KernelSpan {
  uint64_t start_ns, end_ns;  // GPU timestamps
};

class KernelTimer {
 public:
  explicit KernelTimer(bool enable = true);  // false: never loads CUPTI
  bool available() const { return ok_; }
  const std::string& reason() const { return reason_; }
  // Records every kernel that runs between start() and stop(); stop() flushes and returns them
  // sorted by start time. Synchronize the device before stop().
  void start();
  std::vector<KernelSpan> stop();

 private:
  bool ok_ = false;
  std::string reason_;
};
