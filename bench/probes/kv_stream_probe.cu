// KV streaming probe: how fast can 132 CTAs stream paged 64 x 576 bf16 KV blocks (72 KB each)
// into shared memory through TMA, with the dense decode kernel's access pattern (two q-tile CTAs
// per part reading the same pages, random page order) but no compute? Each CTA keeps `depth`
// block buffers in flight, waits for a block, holds it `delay` cycles (stand-in for compute) and
// refills the buffer with the block `depth` ahead. Reports µs, L2 -> SM TB/s (every CTA's bytes),
// DRAM-side TB/s (unique bytes) and cycles per block, per configuration:
//   depth 1..3, box: 9 = one 64 x 64 box per atom (the kernel today), 3 = boxes of 4, 4, 1 atoms,
//   1 = one box for the whole block; tiles per part 1 or 2; L2 hint evict-first or normal;
//   refills issued by consumer thread 0 or by a separate producer warp (empty mbarriers).
// Build: nvcc -std=c++20 -O3 -gencode arch=compute_90a,code=sm_90a -Isrc -o kv_stream_probe
//        bench/probes/kv_stream_probe.cu
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cuda/common/sm90_ptx.cuh"

namespace sm90 = flashmla::cuda::sm90;

#define CHECK(x)                                                                  \
  do {                                                                            \
    cudaError_t e_ = (x);                                                         \
    if (e_ != cudaSuccess) {                                                      \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

constexpr int kAtomBytes = 64 * 128;
constexpr int kBlockBytes = 9 * kAtomBytes;
constexpr int kMaxDepth = 3;

struct Maps {
  CUtensorMap atom;   // box: 1 atom (64 dims x 64 tokens)
  CUtensorMap half;   // box: 4 atoms
  CUtensorMap whole;  // box: 9 atoms
};

struct Args {
  const int* table;  // logical block -> page
  int blocks_per_part;
  int depth;      // block buffers in flight
  int box;        // 9, 3 or 1 copies per block
  int delay;      // cycles a block is held
  int evict_first;
  int producer;   // 1: a separate warp refills buffers when the consumers release them
  long long* cycles;  // per CTA: total cycles
};

// Issues block `page` into buffer `buf` (3 barriers per buffer: atoms 0-3, 4-7, 8).
__device__ __forceinline__ void issue(const Maps& m, const Args& a, uint32_t buf, uint32_t bars,
                                      int page, uint64_t pol) {
  if (a.box == 1) {  // one box completes on the first barrier; the other two pass at once
    sm90::mbarrier_arrive(bars + 8);
    sm90::mbarrier_arrive(bars + 16);
    sm90::mbarrier_arrive_expect_tx(bars, kBlockBytes);
    sm90::tma_load_4d(buf, &m.whole, bars, 0, 0, 0, page, pol);
    return;
  }
  sm90::mbarrier_arrive_expect_tx(bars, 4 * kAtomBytes);
  sm90::mbarrier_arrive_expect_tx(bars + 8, 4 * kAtomBytes);
  sm90::mbarrier_arrive_expect_tx(bars + 16, kAtomBytes);
  if (a.box == 9) {
#pragma unroll
    for (int at = 0; at < 9; ++at)
      sm90::tma_load_4d(buf + at * kAtomBytes, &m.atom, bars + 8 * (at < 4 ? 0 : at < 8 ? 1 : 2),
                        0, 0, at, page, pol);
  } else if (a.box == 3) {
    sm90::tma_load_4d(buf, &m.half, bars, 0, 0, 0, page, pol);
    sm90::tma_load_4d(buf + 4 * kAtomBytes, &m.half, bars + 8, 0, 0, 4, page, pol);
    sm90::tma_load_4d(buf + 8 * kAtomBytes, &m.atom, bars + 16, 0, 0, 8, page, pol);
  }
}

__global__ void __launch_bounds__(160, 1)
    stream_kernel(const __grid_constant__ Maps maps, const Args a) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const uint32_t base = sm90::smem_addr(smem);
  const uint32_t bars = base + kMaxDepth * kBlockBytes;
  const int depth = a.depth;
  const int part = blockIdx.z;
  const int* table = a.table + int64_t{part} * a.blocks_per_part;
  const uint64_t pol =
      a.evict_first ? sm90::l2_policy_evict_first() : sm90::l2_policy_evict_normal();
  if (threadIdx.x == 0) {
    for (int i = 0; i < 4 * kMaxDepth; ++i) sm90::mbarrier_init(bars + 8 * i, 1);
    sm90::fence_mbarrier_init();
  }
  __syncthreads();
  const long long t0 = clock64();
  if (threadIdx.x == 0)
    for (int i = 0; i < depth && i < a.blocks_per_part; ++i)
      issue(maps, a, base + i * kBlockBytes, bars + 24 * i, table[i], pol);
  const uint32_t empty = bars + 24 * kMaxDepth;  // one per buffer, one arrival per release
  if (threadIdx.x >= 128) {  // producer warp: refills each buffer once its consumers released it
    if (threadIdx.x == 128)
      for (int i = depth; i < a.blocks_per_part; ++i) {
        const int buf = i % depth;
        sm90::mbarrier_wait(empty + 8 * buf, ((i / depth) - 1) & 1);
        issue(maps, a, base + buf * kBlockBytes, bars + 24 * buf, table[i], pol);
      }
    return;
  }
  for (int i = 0; i < a.blocks_per_part; ++i) {
    const int buf = i % depth;
    const uint32_t parity = (i / depth) & 1;
    const uint32_t b = bars + 24 * buf;
    sm90::mbarrier_wait(b, parity);
    sm90::mbarrier_wait(b + 8, parity);
    sm90::mbarrier_wait(b + 16, parity);
    if (a.delay > 0) {
      const long long start = clock64();
      while (clock64() - start < a.delay) {
      }
    }
    sm90::named_barrier_sync(1, 128);
    if (a.producer) {
      if (threadIdx.x == 0) sm90::mbarrier_arrive(empty + 8 * buf);
    } else if (threadIdx.x == 0 && i + depth < a.blocks_per_part) {
      issue(maps, a, base + buf * kBlockBytes, b, table[i + depth], pol);
    }
  }
  if (threadIdx.x == 0)
    a.cycles[(blockIdx.z * gridDim.x + blockIdx.x)] = clock64() - t0;
}

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// KV as (64 dims, 64 tokens, 9 atoms, pages): strides 1152 B (token), 128 B (atom), 72 KB (page),
// so a box of n atoms lands atom-major, each atom a 128-byte-swizzled 64 x 64 tile.
static void encode(EncodeTiled fn, CUtensorMap* map, void* kv, int pages, int atoms) {
  const cuuint64_t dims[4] = {64, 64, 9, static_cast<cuuint64_t>(pages)};
  const cuuint64_t strides[3] = {1152, 128, kBlockBytes};
  const cuuint32_t box[4] = {64, 64, static_cast<cuuint32_t>(atoms), 1};
  const cuuint32_t es[4] = {1, 1, 1, 1};
  const CUresult r = fn(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, kv, dims, strides, box, es,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    std::fprintf(stderr, "cuTensorMapEncodeTiled(box %d atoms) failed: %d\n", atoms, int(r));
    std::exit(1);
  }
}

int main() {
  const int sms = 132, blocks_per_seq = 64, batch = 128;  // D1: b = 128, s_k = 4096
  const int pages = batch * blocks_per_seq;
  void* kv;
  CHECK(cudaMalloc(&kv, size_t{pages} * kBlockBytes));
  CHECK(cudaMemset(kv, 0, size_t{pages} * kBlockBytes));
  void* flush;
  const size_t flush_bytes = size_t{256} << 20;
  CHECK(cudaMalloc(&flush, flush_bytes));
  std::vector<int> perm(pages);
  for (int i = 0; i < pages; ++i) perm[i] = i;
  std::mt19937 rng(7);
  std::shuffle(perm.begin(), perm.end(), rng);
  int* table;
  CHECK(cudaMalloc(&table, pages * sizeof(int)));
  CHECK(cudaMemcpy(table, perm.data(), pages * sizeof(int), cudaMemcpyHostToDevice));
  long long* cycles;
  CHECK(cudaMalloc(&cycles, sms * sizeof(long long)));

  void* fnp = nullptr;
  cudaDriverEntryPointQueryResult st{};
  CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fnp, 12000, cudaEnableDefault,
                                         &st));
  Maps maps;
  encode(reinterpret_cast<EncodeTiled>(fnp), &maps.atom, kv, pages, 1);
  encode(reinterpret_cast<EncodeTiled>(fnp), &maps.half, kv, pages, 4);
  encode(reinterpret_cast<EncodeTiled>(fnp), &maps.whole, kv, pages, 9);
  const int smem = kMaxDepth * kBlockBytes + 1024 + 512;
  CHECK(cudaFuncSetAttribute(stream_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));

  struct Cfg {
    int depth, box, tiles, evict_first, delay, producer;
  };
  std::vector<Cfg> cfgs;
  for (int prod : {0, 1})
    for (int delay : {0, 2500, 3000, 3500})
      for (int depth : {2, 3}) cfgs.push_back({depth, 9, 2, 1, delay, prod});
  cfgs.push_back({2, 1, 2, 1, 3000, 1});
  cfgs.push_back({2, 9, 2, 0, 3000, 1});
  std::printf("%-5s %-6s %-4s %-6s %-6s %-6s %9s %9s %9s %11s\n", "prod", "depth", "box", "tiles",
              "evict", "delay", "us", "L2->SM", "DRAM", "cyc/block");
  for (const Cfg& c : cfgs) {
    const int parts = sms / c.tiles;
    Args a{table, pages / parts, c.depth, c.box, c.delay, c.evict_first, c.producer, cycles};
    // tile count on x: the CTAs of a part launch next to each other
    const dim3 grid(c.tiles, 1, parts);
    std::vector<float> ts;
    std::vector<long long> cyc(sms);
    for (int rep = 0; rep < 12; ++rep) {
      CHECK(cudaMemsetAsync(flush, rep, flush_bytes));
      CHECK(cudaEventRecord(e0));
      stream_kernel<<<grid, a.producer ? 160 : 128, smem>>>(maps, a);
      CHECK(cudaEventRecord(e1));
      CHECK(cudaEventSynchronize(e1));
      CHECK(cudaGetLastError());
      float ms;
      CHECK(cudaEventElapsedTime(&ms, e0, e1));
      if (rep >= 2) ts.push_back(ms * 1000.0f);
    }
    CHECK(cudaMemcpy(cyc.data(), cycles, sms * sizeof(long long), cudaMemcpyDeviceToHost));
    std::sort(ts.begin(), ts.end());
    std::sort(cyc.begin(), cyc.begin() + parts * c.tiles);
    const double us = ts[ts.size() / 2];
    const double l2 = double{1.0} * parts * c.tiles * a.blocks_per_part * kBlockBytes / us / 1e6;
    const double dram = double{1.0} * parts * a.blocks_per_part * kBlockBytes / us / 1e6;
    std::printf("%-5d %-6d %-4d %-6d %-6s %-6d %9.1f %9.2f %9.2f %11.0f\n", c.producer, c.depth,
                c.box, c.tiles, c.evict_first ? "first" : "normal", c.delay, us, l2, dram,
                double(cyc[parts * c.tiles / 2]) / a.blocks_per_part);
  }
  return 0;
}
