// GPU benchmark of the FP8 KV-cache codecs (see bench_kv_codec.h). Bytes moved are counted as
// read + written, for the copy ceiling too, so "of copy" is the fraction of the bandwidth a
// plain device-to-device cudaMemcpy reaches on this GPU. Every timing is the median over
// CUDA-event-timed single calls after warm-up; the caches are far larger than L2, so no flush is
// needed. Before printing, the first blocks of each GPU output are checked against the CPU
// backend, so a fast but wrong kernel cannot post a number.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_kv_codec.h"
#include "cuda/common/cuda_check.h"
#include "flashmla/flashmla.h"
#include "flashmla/fp8.h"

namespace {

using namespace flashmla;

struct Options {
  int64_t tokens = 655360;  // x 1808 B (V3.2) = 1.18 GB moved per call
  int64_t page = 64;
  int runs = 50;
  int warmup = 5;
  int64_t copy_mib = 1024;
  int64_t check_blocks = 16;  // leading page blocks compared with the CPU backend
  std::string csv;
};

class DeviceMemory {
 public:
  explicit DeviceMemory(int64_t bytes) { FLASHMLA_CUDA_CHECK(cudaMalloc(&ptr_, bytes)); }
  ~DeviceMemory() { cudaFree(ptr_); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  uint8_t* get() const { return static_cast<uint8_t*>(ptr_); }

 private:
  void* ptr_ = nullptr;
};

class Timer {
 public:
  Timer() {
    FLASHMLA_CUDA_CHECK(cudaEventCreate(&start_));
    FLASHMLA_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  // Median microseconds of one call of fn over o.runs timed calls, after o.warmup calls.
  template <class Fn>
  double median_us(const Options& o, Fn&& fn) {
    for (int i = 0; i < o.warmup; ++i) fn();
    std::vector<double> us;
    for (int i = 0; i < o.runs; ++i) {
      FLASHMLA_CUDA_CHECK(cudaEventRecord(start_, nullptr));
      fn();
      FLASHMLA_CUDA_CHECK(cudaEventRecord(stop_, nullptr));
      FLASHMLA_CUDA_CHECK(cudaEventSynchronize(stop_));
      float ms = 0;
      FLASHMLA_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
      us.push_back(1e3 * ms);
    }
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  }

 private:
  cudaEvent_t start_{}, stop_{};
};

// randn/10-like bf16 values from a counter hash (Irwin-Hall sum of 4 uniforms), made on the
// device so a GB-sized cache needs no host generation or upload.
__global__ void fill_activations(uint16_t* x, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t h = (static_cast<uint64_t>(i) + seed) * 0x9E3779B97F4A7C15ull;
    float sum = 0.0f;
    for (int k = 0; k < 4; ++k) {
      h ^= h >> 31;
      h *= 0xBF58476D1CE4E5B9ull;
      h ^= h >> 29;
      sum += static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
    }
    x[i] = fp8::float_to_bf16((sum - 2.0f) * 0.173f);  // variance of the sum is 1/3
  }
}

struct Row {
  std::string op, layout;
  int64_t tokens;
  double us, gbps, of_copy;
};

struct Cache {
  KVCacheLayout layout;
  int64_t blocks, page, dim, token_bytes, block_stride;  // FP8 block stride in bytes
  int64_t quant_bytes() const { return blocks * block_stride; }
  int64_t bf16_bytes() const { return blocks * page * dim * 2; }
  // Bytes one codec call reads + writes (padding between FP8 blocks is not touched).
  double traffic() const {
    const int64_t fp8_per_token =
        layout == KVCacheLayout::kV32 ? v32::kBytesPerToken : model1::kNominalBytesPerToken;
    return static_cast<double>(blocks * page * (dim * 2 + fp8_per_token));
  }
  TensorView bf16_view(void* p, Device dev, int64_t nb) const {
    return TensorView::contiguous(p, DType::kBFloat16, dev, {nb, page, 1, dim});
  }
  TensorView quant_view(void* p, Device dev, int64_t nb) const {
    return TensorView::strided(p, DType::kUInt8, dev, {nb, page, 1, token_bytes},
                               {block_stride, token_bytes, token_bytes, 1});
  }
};

Cache make_cache(KVCacheLayout layout, const Options& o) {
  Cache c{layout, (o.tokens + o.page - 1) / o.page, o.page, kv_layout_dim(layout),
          kv_layout_token_bytes(layout), 0};
  c.block_stride = layout == KVCacheLayout::kV32 ? o.page * v32::kBytesPerToken
                                                 : model1::min_block_bytes(o.page);
  return c;
}

std::vector<uint8_t> download(const uint8_t* p, int64_t bytes) {
  std::vector<uint8_t> v(bytes);
  FLASHMLA_CUDA_CHECK(cudaMemcpy(v.data(), p, bytes, cudaMemcpyDeviceToHost));
  return v;
}

// "" when equal, else where the first difference is.
std::string first_difference(const std::vector<uint8_t>& cpu, const std::vector<uint8_t>& gpu) {
  for (size_t i = 0; i < cpu.size(); ++i)
    if (cpu[i] != gpu[i])
      return "byte " + std::to_string(i) + ": cpu " + std::to_string(cpu[i]) + ", gpu " +
             std::to_string(gpu[i]);
  return "";
}

// Runs both codecs on one layout: times them, then checks the leading blocks against the CPU.
// Returns false on a mismatch.
bool bench_layout(KVCacheLayout layout, const Options& o, double copy_gbps, Timer& timer,
                  std::vector<Row>& rows) {
  const Cache c = make_cache(layout, o);
  const Device gpu = cuda_device(0);
  DeviceMemory k(c.bf16_bytes()), q(c.quant_bytes()), k_out(c.bf16_bytes());
  const int64_t elems = c.bf16_bytes() / 2;
  fill_activations<<<1024, 256>>>(reinterpret_cast<uint16_t*>(k.get()), elems, 42);
  FLASHMLA_CUDA_CHECK_LAUNCH("fill_activations");
  FLASHMLA_CUDA_CHECK(cudaMemset(q.get(), 0, c.quant_bytes()));

  const KVQuantizeParams qp{layout, c.bf16_view(k.get(), gpu, c.blocks),
                            c.quant_view(q.get(), gpu, c.blocks)};
  const KVDequantizeParams dp{layout, c.quant_view(q.get(), gpu, c.blocks),
                              c.bf16_view(k_out.get(), gpu, c.blocks)};
  const double tq = timer.median_us(o, [&] { kv_quantize(qp); });
  const double td = timer.median_us(o, [&] { kv_dequantize(dp); });
  FLASHMLA_CUDA_CHECK(cudaDeviceSynchronize());
  const char* name = layout == KVCacheLayout::kV32 ? "V3.2" : "MODEL1";
  const int64_t tokens = c.blocks * c.page;
  for (auto [op, us] : {std::pair{"kv_quantize", tq}, std::pair{"kv_dequantize", td}}) {
    const double gbps = c.traffic() / us * 1e-3;
    rows.push_back({op, name, tokens, us, gbps, gbps / copy_gbps});
  }

  // The leading blocks, redone on the CPU backend.
  const int64_t nb = std::min(c.blocks, o.check_blocks);
  std::vector<uint8_t> k_host = download(k.get(), nb * c.page * c.dim * 2);
  const std::vector<uint8_t> q_gpu = download(q.get(), nb * c.block_stride);
  const std::vector<uint8_t> k_gpu = download(k_out.get(), k_host.size());
  std::vector<uint8_t> q_cpu = q_gpu;  // bytes between FP8 blocks are never written
  std::vector<uint8_t> k_cpu(k_host.size(), 0);
  kv_quantize({layout, c.bf16_view(k_host.data(), kCPU, nb),
               c.quant_view(q_cpu.data(), kCPU, nb)});
  kv_dequantize({layout, c.quant_view(q_cpu.data(), kCPU, nb),
                 c.bf16_view(k_cpu.data(), kCPU, nb)});
  bool ok = true;
  auto check = [&](const char* what, const std::vector<uint8_t>& cpu,
                   const std::vector<uint8_t>& gpu_bytes) {
    const std::string diff = first_difference(cpu, gpu_bytes);
    if (diff.empty()) return;
    std::printf("MISMATCH %s %s vs the CPU backend (first %lld blocks): %s\n", what, name,
                static_cast<long long>(nb), diff.c_str());
    ok = false;
  };
  check("kv_quantize", q_cpu, q_gpu);
  check("kv_dequantize", k_cpu, k_gpu);
  return ok;
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--csv" && has_value) o.csv = argv[++i];
    else if (a == "--tokens" && has_value) o.tokens = std::atoll(argv[++i]);
    else if (a == "--page" && has_value) o.page = std::atoll(argv[++i]);
    else if (a == "--runs" && has_value) o.runs = std::atoi(argv[++i]);
    else if (a == "--warmup" && has_value) o.warmup = std::atoi(argv[++i]);
    else if (a == "--copy-mib" && has_value) o.copy_mib = std::atoll(argv[++i]);
    else return false;
  }
  return o.tokens > 0 && o.page > 0 && o.runs > 0 && o.warmup >= 0 && o.copy_mib > 0;
}

void print_and_save(const std::vector<Row>& rows, const Options& o) {
  std::printf("%-16s %-7s %9s %10s %9s %8s\n", "op", "layout", "tokens", "us", "GB/s", "of copy");
  for (const Row& r : rows)
    std::printf("%-16s %-7s %9s %10.1f %9.1f %7.1f%%\n", r.op.c_str(), r.layout.c_str(),
                r.tokens ? std::to_string(r.tokens).c_str() : "-", r.us, r.gbps,
                100.0 * r.of_copy);
  if (o.csv.empty()) return;
  FILE* f = std::fopen(o.csv.c_str(), "a");
  if (!f) {
    std::fprintf(stderr, "bench_kv_codec: cannot append to %s\n", o.csv.c_str());
    return;
  }
  // Same columns as flashmla_bench's CPU rows (op, shape, us, TFLOPS, GB/s) plus the fraction.
  for (const Row& r : rows) {
    const std::string shape =
        r.tokens ? r.layout + " tokens=" + std::to_string(r.tokens) + " page=" +
                       std::to_string(o.page)
                 : std::to_string(o.copy_mib) + " MiB";
    std::fprintf(f, "gpu %s,%s,%.3f,0,%.3f,%.4f\n", r.op.c_str(), shape.c_str(), r.us, r.gbps,
                 r.of_copy);
  }
  std::fclose(f);
}

}  // namespace

int bench_kv_codec(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: bench_kv_codec [--tokens N] [--page P] [--runs R] [--warmup W] "
                 "[--copy-mib M] [--csv FILE]\n");
    return 2;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    std::printf("bench_kv_codec: skipped, no CUDA device\n");
    return 0;
  }
  try {
    cudaDeviceProp prop{};
    FLASHMLA_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("GPU FP8 KV-cache codecs on %s (%d SMs); page %lld; median of %d runs after %d "
                "warm-up; GB/s = (bytes read + written) / time\n",
                prop.name, prop.multiProcessorCount, static_cast<long long>(o.page), o.runs,
                o.warmup);
    Timer timer;
    std::vector<Row> rows;
    double copy_gbps;
    {
      const int64_t bytes = o.copy_mib << 20;
      DeviceMemory src(bytes), dst(bytes);
      FLASHMLA_CUDA_CHECK(cudaMemset(src.get(), 1, bytes));
      const double us = timer.median_us(o, [&] {
        FLASHMLA_CUDA_CHECK(
            cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, nullptr));
      });
      copy_gbps = 2.0 * bytes / us * 1e-3;
      rows.push_back({"d2d copy", "-", 0, us, copy_gbps, 1.0});
    }
    bool ok = true;
    for (KVCacheLayout layout : {KVCacheLayout::kV32, KVCacheLayout::kModel1})
      ok = bench_layout(layout, o, copy_gbps, timer, rows) && ok;
    print_and_save(rows, o);
    std::printf("check: the first %lld page blocks of every GPU output %s the CPU backend's\n",
                static_cast<long long>(o.check_blocks), ok ? "equal" : "DIFFER FROM");
    return ok ? 0 : 1;
  } catch (const flashmla::Error& e) {
    std::fprintf(stderr, "bench_kv_codec: %s\n", e.what());
    return 1;
  }
}
