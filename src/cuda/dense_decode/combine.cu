// Combine kernel: merges the float32 partial slots of every request the schedule split into
// several chunks (SPEC.md §2, Flash-Decoding). One warp per (request, query, head) row, or per
// quarter of one when rows are few (a grid of up to kCombineMaxWaves waves; past that its
// warps stride over them):
//   lse = log(sum_s exp(lse_s)),   out = sum_s exp(lse_s - lse) * o_s
// Empty partials carry lse_s = -inf and drop out; a row with every partial empty gets out = 0
// and lse = +inf. Only the schedule's split list is visited: requests with one chunk were
// written by the main kernel (a schedule without splits: the whole grid returns at once).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

#include "core/decode_schedule.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/per_device_cache.h"
#include "cuda/common/sm90_ptx.cuh"
#include "cuda/cuda_backend.h"
#include "cuda/dense_decode/config.h"
#include "cuda/dense_decode/kernel.h"

namespace flashmla::cuda::mla_decode {
namespace {

// A work item is 1/kParts of a row (kParts = 1 or 4; chosen per launch, below): each lane
// owns kF4 = 4 / kParts float4s of it per slot and loads slots_per_batch<kF4>() slots at once
// (config.h: 4 float4s in flight for whole rows, 8 for quarters).
template <int kF4>
__host__ __device__ constexpr int slots_per_batch() {
  return (kF4 == 4 ? kCombineRowsF4InFlight : kCombineQuartersF4InFlight) / kF4;
}
template <int kParts>
__host__ __device__ constexpr int combine_min_blocks() {
  return kParts == 1 ? kCombineRowsMinBlocksPerSm : kCombineQuartersMinBlocksPerSm;
}

template <typename T>
__device__ __forceinline__ void store4(T* dst, float4 v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
    uint2 u{*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b)};
    *reinterpret_cast<uint2*>(dst) = u;
  } else {
    const __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
    uint2 u{*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b)};
    *reinterpret_cast<uint2*>(dst) = u;
  }
}

// An entry of the schedule's split list.
struct SplitEntry {
  int req, first_slot, splits;
};
// The split list is the plan's (written before the main kernel started), so a warp may read its
// entry before griddepcontrol.wait: one dependent round trip fewer after the main kernel ends.
__device__ __forceinline__ SplitEntry read_entry(const int32_t* list, int64_t index) {
  return {list[3 * index], list[3 * index + 1], list[3 * index + 2]};
}

// Part `part` (kF4 x 128 columns) of row `rem` of the split-list entry `e` (warp-uniform, all 32
// lanes). Latency-bound (a few hundred bytes per slot), so the loads go out in as few dependent
// rounds as possible: every slot's lse together with the first batch of partial float4s
// (perf-journal.md, sessions 9 and 14).
template <typename T, int kF4>
__device__ __forceinline__ void combine_item(const MainParams& p, SplitEntry e, int rows_per_req,
                                             int rem, int part, int lane) {
  constexpr int kBatch = slots_per_batch<kF4>();
  const int64_t req = e.req;
  const int64_t first = e.first_slot;
  const int splits = e.splits;

  const float* lse_s = p.lse_partial + first * rows_per_req + rem;  // slot s: [s * rows_per_req]
  const int64_t slot_stride4 = int64_t{rows_per_req} * (kDimV / 4);  // float4s between slots
  // float4 v of this lane: columns part * 128 kF4 + (v * 32 + lane) * 4 .. + 3
  const float4* src = reinterpret_cast<const float4*>(p.o_partial +
                                                      (first * rows_per_req + rem) * kDimV) +
                      part * 32 * kF4 + lane;
  // The main kernel's partials are read with ld.global.cg, never ld.global.nc: a non-coherent
  // load's address is known before griddepcontrol.wait (the entry is read before it), and
  // ptxas may hoist such a load above the wait.
  float4 x[kBatch][kF4];
  auto load_batch = [&](int s0) {
#pragma unroll
    for (int s = 0; s < kBatch; ++s)
#pragma unroll
      for (int v = 0; v < kF4; ++v)
        x[s][v] = s0 + s < splits
                      ? __ldcg(src + (s0 + s) * slot_stride4 + v * 32)
                      : make_float4(0.f, 0.f, 0.f, 0.f);
  };
  load_batch(0);

  // Max and sum of exp over the slots' lse: lane l holds slot l's (slots past 32 strided).
  const float my_lse = lane < splits ? __ldcg(lse_s + lane * rows_per_req) : -INFINITY;
  float mx = my_lse;
  for (int s = lane + 32; s < splits; s += 32) mx = fmaxf(mx, __ldcg(lse_s + s * rows_per_req));
#pragma unroll
  for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, o));
  float4 acc[kF4];
#pragma unroll
  for (int v = 0; v < kF4; ++v) acc[v] = make_float4(0.f, 0.f, 0.f, 0.f);
  float lse = INFINITY;
  if (mx > -INFINITY) {
    float sum = lane < splits ? __expf(my_lse - mx) : 0.0f;
    for (int s = lane + 32; s < splits; s += 32)
      sum += __expf(__ldcg(lse_s + s * rows_per_req) - mx);
#pragma unroll
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffff, sum, o);
    lse = mx + logf(sum);
    for (int s0 = 0; s0 < splits; s0 += kBatch) {
      if (s0 > 0) load_batch(s0);
#pragma unroll
      for (int s = 0; s < kBatch; ++s) {
        if (s0 + s >= splits) break;  // warp-uniform
        const float ls = s0 + s < 32 ? __shfl_sync(0xffffffff, my_lse, s0 + s)
                                     : __ldcg(lse_s + (s0 + s) * rows_per_req);
        const float wgt = __expf(ls - lse);
#pragma unroll
        for (int v = 0; v < kF4; ++v) {
          acc[v].x += wgt * x[s][v].x;
          acc[v].y += wgt * x[s][v].y;
          acc[v].z += wgt * x[s][v].z;
          acc[v].w += wgt * x[s][v].w;
        }
      }
    }
  }
  const int i = rem / p.h_q;  // (32-bit, after the loads)
  const int h = rem - i * p.h_q;
  T* out = static_cast<T*>(p.out) + req * p.out_stride[0] + i * p.out_stride[1] +
           h * p.out_stride[2] + part * 128 * kF4 + lane * 4;
#pragma unroll
  for (int v = 0; v < kF4; ++v) store4<T>(out + v * 128, acc[v]);
  if (part == 0 && lane == 0)
    p.lse[req * p.lse_stride[0] + h * p.lse_stride[1] + i * p.lse_stride[2]] = lse;
}

// kParts items per row of the split list: consecutive warps on the parts of one row, then the
// next row (`warps` warps from warp `w` on stride over them). Item indices are 32-bit, divisions
// without the 64-bit routine: at most b * s_q * h_q * 4 = 49,152 * 8 * 128 * 4 < 2^31 items
// (plan.cu caps b at kPlanMaxBatch).
static_assert(int64_t{kPlanMaxBatch} * 8 * 128 * 4 < (int64_t{1} << 31), "32-bit combine items");
template <typename T, int kParts>
__device__ __forceinline__ void combine_rows(const MainParams& p, int w, int warps) {
  const sched::View view{const_cast<int32_t*>(p.sched_meta), p.b, p.num_parts};
  const int n_split = view.num_split();  // 0: a whole-request schedule, nothing to merge
  const int rows_per_req = p.s_q * p.h_q;
  const int lane = threadIdx.x % 32;
  const int items_per_req = rows_per_req * kParts;
  const int items = n_split * items_per_req;
  // The first item's entry and place are known before the main kernel ends.
  SplitEntry e{0, 0, 0};
  int in_req = 0;
  if (w < items) {
    e = read_entry(view.split_list(), w / items_per_req);
    in_req = w % items_per_req;
  }
  // A warp without an item leaves at once, without waiting for the main kernel: the grid is
  // sized for the most rows the schedule could split (whole-request schedules split none), and
  // its idle blocks would otherwise hold their SM's slots until the main kernel ends. Block 0
  // always waits, so this grid never completes before the main kernel does.
  if (w >= items && blockIdx.x != 0) return;
  // Launched early by programmatic dependent launch: wait until the main kernel has finished
  // and its partials are visible.
  sm90::grid_dependency_wait();
  for (; w < items; w += warps) {
    combine_item<T, 4 / kParts>(p, e, rows_per_req, in_req / kParts, in_req % kParts, lane);
    if (w + warps < items) {
      e = read_entry(view.split_list(), (w + warps) / items_per_req);
      in_req = (w + warps) % items_per_req;
    }
  }
}

template <typename T, int kParts>
__global__ void __launch_bounds__(kCombineWarpsPerBlock * 32, combine_min_blocks<kParts>())
    combine_kernel(const __grid_constant__ MainParams p) {
  const int warp = static_cast<int>(blockIdx.x * kCombineWarpsPerBlock + threadIdx.x / 32);
  combine_rows<T, kParts>(p, warp, static_cast<int>(gridDim.x * kCombineWarpsPerBlock));
}

// ---- The bulk combine (A/B switch FLASHMLA_DENSE_DECODE_COMBINE=bulk; slower so far, see
// perf-journal.md, session 16): one CTA per SM, partials brought into shared memory by bulk
// copies ----
// The row-per-warp kernel above holds a batch of slots in registers, so an SM has ~100 KB in
// flight and a row of many slots (L6: 34) or many rows (L3: 4,096) take several dependent rounds
// of L2 round trips. Here a tile is `rows` consecutive rows of one split request: its partials
// are, per slot, one contiguous run of rows x 2 KB, so thread 0 brings a whole tile in with one
// bulk copy per slot (two tiles in flight, ~190 KB per SM), while the warps compute the tile's
// weights from the lse; then every thread sums float4 columns from shared memory. Rows per tile:
// as many as fit (tile rows x slots <= kBulkPairs) but no more than a fair share of the rows per
// CTA, so small combines still spread over every SM. Same arithmetic, in the same order, as
// combine_item: bitwise the same results.
inline constexpr int kBulkThreads = 256;
inline constexpr int kBulkWarps = kBulkThreads / 32;
inline constexpr int kBulkRowBytes = kDimV * 4;  // one slot's partial of one row
inline constexpr int kBulkPairs = 48;            // (row, slot) pairs of a tile
inline constexpr int kBulkStageBytes = kBulkPairs * kBulkRowBytes;
inline constexpr int kBulkStages = 2;
inline constexpr int kBulkWeights = kBulkStages * kBulkStageBytes;       // float [stage][pairs]
inline constexpr int kBulkRowLse = kBulkWeights + kBulkStages * kBulkPairs * 4;  // float [stage][rows]
inline constexpr int kBulkBars = kBulkRowLse + kBulkStages * kBulkPairs * 4;     // uint64 [stage]
inline constexpr int kBulkSmemBytes = kBulkBars + kBulkStages * 8;

// Tile t of the launch: split entry t / tiles_per_req, rows [r0, r0 + rows).
struct BulkTile {
  SplitEntry e;
  int64_t r0;
  int rows;
};
__device__ __forceinline__ BulkTile bulk_tile(const int32_t* list, int64_t t,
                                              int64_t tiles_per_req, int tile_rows,
                                              int64_t rows_per_req) {
  BulkTile b;
  b.e = read_entry(list, t / tiles_per_req);
  b.r0 = (t % tiles_per_req) * tile_rows;
  b.rows = static_cast<int>(min(int64_t{tile_rows}, rows_per_req - b.r0));
  return b;
}

template <typename T>
__global__ void __launch_bounds__(kBulkThreads, 1)
    combine_bulk_kernel(const __grid_constant__ MainParams p) {
  const sched::View view{const_cast<int32_t*>(p.sched_meta), p.b, p.num_parts};
  const int max_splits = view.max_splits();
  if (max_splits > kBulkPairs) {
    // A request in more chunks than a tile holds slots: the row-per-warp path (quarter rows when
    // the grid's warps cover them that way).
    const int warps = static_cast<int>(gridDim.x * kBulkWarps);
    const int w = static_cast<int>(blockIdx.x * kBulkWarps + threadIdx.x / 32);
    if (view.num_split() * p.s_q * p.h_q * 4 <= warps)
      combine_rows<T, 4>(p, w, warps);
    else
      combine_rows<T, 1>(p, w, warps);
    return;
  }
  extern __shared__ __align__(1024) uint8_t smem[];
  float* weights = reinterpret_cast<float*>(smem + kBulkWeights);
  float* row_lse = reinterpret_cast<float*>(smem + kBulkRowLse);
  const uint32_t data = sm90::smem_addr(smem);
  const uint32_t bars = sm90::smem_addr(smem + kBulkBars);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  const int64_t n_split = view.num_split();
  const int64_t rows_per_req = int64_t{p.s_q} * p.h_q;
  const int64_t fair = (n_split * rows_per_req + gridDim.x - 1) / gridDim.x;
  const int tile_rows = static_cast<int>(
      max(int64_t{1}, min(min(int64_t{kBulkPairs / max(max_splits, 1)}, fair), rows_per_req)));
  const int64_t tiles_per_req = (rows_per_req + tile_rows - 1) / tile_rows;
  const int64_t n_tiles = n_split * tiles_per_req;
  const int64_t stride = gridDim.x;
  const int32_t* list = view.split_list();

  if (tid == 0) {
    for (int s = 0; s < kBulkStages; ++s) sm90::mbarrier_init(bars + 8 * s, 1);
    sm90::fence_mbarrier_init();
  }
  __syncthreads();
  // Launched early by programmatic dependent launch: the partials are the main kernel's.
  sm90::grid_dependency_wait();
  const auto issue = [&](int64_t t, int stage) {  // thread 0: the tile's partials, slot by slot
    const BulkTile b = bulk_tile(list, t, tiles_per_req, tile_rows, rows_per_req);
    const uint32_t bytes = static_cast<uint32_t>(b.rows) * kBulkRowBytes;
    const uint32_t bar = bars + 8 * stage;
    sm90::mbarrier_arrive_expect_tx(bar, bytes * static_cast<uint32_t>(b.e.splits));
    for (int s = 0; s < b.e.splits; ++s)
      sm90::bulk_load(data + stage * kBulkStageBytes + s * bytes,
                      p.o_partial + ((int64_t{b.e.first_slot} + s) * rows_per_req + b.r0) * kDimV,
                      bytes, bar);
  };
  if (tid == 0) {
    for (int s = 0; s < kBulkStages; ++s)
      if (blockIdx.x + s * stride < n_tiles) issue(blockIdx.x + s * stride, s);
  }
  int k = 0;
  for (int64_t t = blockIdx.x; t < n_tiles; t += stride, ++k) {
    const int stage = k % kBulkStages;
    const BulkTile b = bulk_tile(list, t, tiles_per_req, tile_rows, rows_per_req);
    const int splits = b.e.splits;
    float* w_s = weights + stage * kBulkPairs;  // [slot][row]
    // Weights, one warp per row (combine_item's arithmetic), while the copies are in flight.
    for (int r = warp; r < b.rows; r += kBulkWarps) {
      const int64_t rem = b.r0 + r;
      const float* lse_s = p.lse_partial + int64_t{b.e.first_slot} * rows_per_req + rem;
      const float l0 = lane < splits ? __ldcg(lse_s + lane * rows_per_req) : -INFINITY;
      const float l1 = lane + 32 < splits ? __ldcg(lse_s + (lane + 32) * rows_per_req) : -INFINITY;
      float mx = fmaxf(l0, l1);
#pragma unroll
      for (int o = 16; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, o));
      float lse = INFINITY;
      if (mx > -INFINITY) {
        float sum = lane < splits ? __expf(l0 - mx) : 0.0f;
        if (lane + 32 < splits) sum += __expf(l1 - mx);
#pragma unroll
        for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffff, sum, o);
        lse = mx + logf(sum);
        if (lane < splits) w_s[lane * b.rows + r] = __expf(l0 - lse);
        if (lane + 32 < splits) w_s[(lane + 32) * b.rows + r] = __expf(l1 - lse);
      }
      if (lane == 0) {
        row_lse[stage * kBulkPairs + r] = lse;
        const int i = static_cast<int>(rem / p.h_q), h = static_cast<int>(rem % p.h_q);
        p.lse[b.e.req * p.lse_stride[0] + h * p.lse_stride[1] + i * p.lse_stride[2]] = lse;
      }
    }
    __syncthreads();  // weights in shared memory
    sm90::mbarrier_wait(bars + 8 * stage, (k / kBulkStages) & 1);
    const float4* x = reinterpret_cast<const float4*>(smem + stage * kBulkStageBytes);
    for (int idx = tid; idx < b.rows * (kDimV / 4); idx += kBulkThreads) {
      const int r = idx / (kDimV / 4), c4 = idx % (kDimV / 4);
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
      if (row_lse[stage * kBulkPairs + r] != INFINITY) {  // every slot empty: out = 0
        for (int s = 0; s < splits; ++s) {
          const float wgt = w_s[s * b.rows + r];
          const float4 v = x[(s * b.rows + r) * (kDimV / 4) + c4];
          acc.x += wgt * v.x;
          acc.y += wgt * v.y;
          acc.z += wgt * v.z;
          acc.w += wgt * v.w;
        }
      }
      const int64_t rem = b.r0 + r;
      const int i = static_cast<int>(rem / p.h_q), h = static_cast<int>(rem % p.h_q);
      store4<T>(static_cast<T*>(p.out) + b.e.req * p.out_stride[0] + i * p.out_stride[1] +
                    h * p.out_stride[2] + c4 * 4,
                acc);
    }
    __syncthreads();  // the stage's data and weights consumed
    if (tid == 0 && t + kBulkStages * stride < n_tiles) issue(t + kBulkStages * stride, stage);
  }
}

// Blocks of one resident wave of the combine kernel on the current device (cached per device).
template <int kParts>
int combine_wave_blocks() {
  static PerDeviceCache cache;
  int dev = 0;
  FLASHMLA_CUDA_CHECK(cudaGetDevice(&dev));
  return cache.get(dev, [](int device) {
    int per_sm = 0;
    // (the fp16 instantiation has the bf16 one's shape: same registers, ptxas)
    FLASHMLA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, combine_kernel<__nv_bfloat16, kParts>, kCombineWarpsPerBlock * 32, 0));
    return device_sm_count(device) * (per_sm > 0 ? per_sm : 1);
  });
}

// The bulk combine's launch: one CTA per SM, its dynamic shared memory allowed once per device.
void launch_combine_bulk(const MainParams& p, bool is_fp16, cudaStream_t stream) {
  static PerDeviceCache cache;
  int dev = 0;
  FLASHMLA_CUDA_CHECK(cudaGetDevice(&dev));
  const int sms = cache.get(dev, [](int device) {
    FLASHMLA_CUDA_CHECK(cudaFuncSetAttribute(combine_bulk_kernel<__nv_bfloat16>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             kBulkSmemBytes));
    FLASHMLA_CUDA_CHECK(cudaFuncSetAttribute(combine_bulk_kernel<__half>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             kBulkSmemBytes));
    return device_sm_count(device);
  });
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(sms));
  config.blockDim = dim3(kBulkThreads);
  config.dynamicSmemBytes = kBulkSmemBytes;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  if (is_fp16)
    FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(&config, combine_bulk_kernel<__half>, p));
  else
    FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(&config, combine_bulk_kernel<__nv_bfloat16>, p));
  FLASHMLA_CUDA_CHECK_LAUNCH("dense_decode combine_bulk_kernel");
}

}  // namespace

void launch_combine(const MainParams& p, bool is_fp16, cudaStream_t stream) {
#if defined(FLASHMLA_DENSE_DECODE_PROBE_NO_COMBINE)  // diagnostic build: partials never merged
  return;
#endif
  if (p.combine_bulk) {
    launch_combine_bulk(p, is_fp16, stream);
    return;
  }
  // Rows cut in quarters when one pass of the grid's warps covers them that way even if the
  // most requests the schedule can split were split (each of its num_parts - 1 part boundaries
  // cuts at most one request): few rows of many slots (L6: 128 rows of 34 slots) spread over more
  // warps; many rows (L3, L4: 4,096 and 7,296 rows of 2-3 slots) keep one warp per row, whose
  // chain of dependent loads per item is the cost (session 9: quarters everywhere made L3
  // +14 %, L4 +2 %). (Two kernels: one with both paths needed 120 registers.)
  const int64_t rows = std::min<int64_t>(p.b, p.num_parts - 1) * p.s_q * p.h_q;
  // Both waves, the rows kernel's first: with lazy module loading (CUDA's default) a kernel is
  // placed in GPU code memory at its first use, and that placement moves the latency cases' main
  // kernel (session 18: L1 / L2 +1.3 µs with the quarters kernel loaded first, +0.6 µs this way,
  // no difference with CUDA_MODULE_LOADING=EAGER; the main kernel's SASS is the same).
  const int64_t rows_wave = combine_wave_blocks<1>();
  const int64_t quarters_wave = combine_wave_blocks<4>();
  const bool quarters = rows * 4 <= quarters_wave * kCombineWarpsPerBlock;
  const int64_t wave = quarters ? quarters_wave : rows_wave;
  const int64_t warps = quarters ? rows * 4 : rows;
  // A warp per item, up to kCombineMaxWaves resident waves (past that the warps stride): blocks
  // of a later wave start wherever earlier ones finish, so SMs whose main-kernel CTAs ended
  // early and rows of few slots take more of the work (session 23, against one resident wave
  // whose warps strode: B4 -1.0 µs; blocks without an item leave before the wait). At least
  // one block: with one part nothing is split and the grid just returns.
  const int64_t blocks = std::max<int64_t>(
      1, std::min<int64_t>((warps + kCombineWarpsPerBlock - 1) / kCombineWarpsPerBlock,
                           wave * kCombineMaxWaves));
  // Programmatic dependent launch: the combine grid is scheduled while the main kernel runs (it
  // triggers at its start) and waits in griddepcontrol.wait, hiding the launch latency.
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(kCombineWarpsPerBlock * 32);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  if (is_fp16)
    FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(
        &config, quarters ? combine_kernel<__half, 4> : combine_kernel<__half, 1>, p));
  else
    FLASHMLA_CUDA_CHECK(cudaLaunchKernelEx(
        &config, quarters ? combine_kernel<__nv_bfloat16, 4> : combine_kernel<__nv_bfloat16, 1>,
        p));
  FLASHMLA_CUDA_CHECK_LAUNCH("dense_decode combine_kernel");
}

}  // namespace flashmla::cuda::mla_decode
