// CUDA backend entry points of dense decode: resolves DenseDecodeParams into MainParams, checks
// the few layout requirements of the kernels (16-byte rows for the async copies), then launches
// the main kernel of the right (dtype, d_qk) variant and the combine kernel.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "core/decode_schedule.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_guard.h"
#include "cuda/common/env_switch.h"
#include "cuda/common/layout_checks.h"
#include "cuda/cuda_backend.h"
#include "cuda/dense_decode/kernel.h"
#include "flashmla/errors.h"

namespace flashmla::cuda {
namespace {

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                 const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                 const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// cuTensorMapEncodeTiled from the driver through the runtime (no -lcuda at link time).
EncodeTiled encode_tiled() {
  static const EncodeTiled fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status{};
    FLASHMLA_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000,
                                                         cudaEnableDefault, &status));
    if (status != cudaDriverEntryPointSuccess || ptr == nullptr)
      throw CudaError("flashmla::dense_decode: cuTensorMapEncodeTiled is not available");
    return reinterpret_cast<EncodeTiled>(ptr);
  }();
  return fn;
}

// A 16-bit tensor map with 128-byte swizzled boxes and unit element strides (the layout every
// TMA copy of the dense decode kernels lands in); true when the driver accepts it.
bool encode_swizzled(CUtensorMap* map, bool is_fp16, int rank, void* data,
                     const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                     CUtensorMapL2promotion promo) {
  const cuuint32_t elem_strides[5] = {1, 1, 1, 1, 1};
  return encode_tiled()(map,
                        is_fp16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                        rank, data, dims, strides, box, elem_strides,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, promo,
                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// k_cache's byte strides of a page row, a kv head and a cache block (those of size-1
// dimensions are never used: they get a legal value).
struct KvStrides {
  int64_t token, head, block;
};
KvStrides kv_strides(const DenseDecodeParams& p, const DenseDecodeProblem& pb) {
  const TensorView& k = p.k_cache;
  const int64_t token = k.stride[1] * 2;
  return {token, pb.h_kv > 1 ? k.stride[2] * 2 : int64_t{pb.d_qk} * 2,
          pb.num_blocks > 1 ? k.stride[0] * 2 : token * pb.page_block_size};
}

// TMA is used when a 64-token box always lies inside one page and the strides suit the copy
// engine (multiples of 16 bytes). Returns false to select the cp.async gather path.
bool make_kv_tensor_map(const DenseDecodeParams& p, const DenseDecodeProblem& pb,
                        CUtensorMap* map) {
  if (pb.page_block_size % mla_decode::kTokensPerTile != 0) return false;
  if (env_is("FLASHMLA_DENSE_DECODE_NO_TMA", "1")) return false;
  const TensorView& k = p.k_cache;
  const auto [token_stride, head_stride, block_stride] = kv_strides(p, pb);
  for (int64_t st : {token_stride, head_stride, block_stride})
    if (st % 16 != 0 || st <= 0 || st >= (int64_t{1} << 40)) return false;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(pb.d_qk),
                              static_cast<cuuint64_t>(pb.page_block_size),
                              static_cast<cuuint64_t>(pb.h_kv),
                              static_cast<cuuint64_t>(pb.num_blocks)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(token_stride),
                                 static_cast<cuuint64_t>(head_stride),
                                 static_cast<cuuint64_t>(block_stride)};
  const cuuint32_t box[4] = {mla_decode::kAtomDims, mla_decode::kTokensPerTile, 1, 1};
  // FLASHMLA_DENSE_DECODE_L2PROMO = none | 64 | 128 | 256 (default): A/B switch of the L2 sector
  // promotion of the KV copies.
  CUtensorMapL2promotion promo = CU_TENSOR_MAP_L2_PROMOTION_L2_256B;
  if (env_is("FLASHMLA_DENSE_DECODE_L2PROMO", "none")) promo = CU_TENSOR_MAP_L2_PROMOTION_NONE;
  if (env_is("FLASHMLA_DENSE_DECODE_L2PROMO", "64")) promo = CU_TENSOR_MAP_L2_PROMOTION_L2_64B;
  if (env_is("FLASHMLA_DENSE_DECODE_L2PROMO", "128")) promo = CU_TENSOR_MAP_L2_PROMOTION_L2_128B;
  return encode_swizzled(map, pb.is_fp16, 4, k.data, dims, strides, box, promo);
}

// The pair kernel's V halves as one box each (the V-box form, config.h): k_cache as 5-D
// {64 dims, page row, atom column, kv head, block}, box {64, 64, kVBoxAtoms, 1, 1}, which lands
// as kVBoxAtoms consecutive 8 KB atom columns, the layout of the per-atom copies. Called after
// make_kv_tensor_map accepted the strides.
bool make_kv_box_map(const DenseDecodeParams& p, const DenseDecodeProblem& pb, CUtensorMap* map) {
  const TensorView& k = p.k_cache;
  const auto [token_stride, head_stride, block_stride] = kv_strides(p, pb);
  const cuuint64_t dims[5] = {mla_decode::kAtomDims,
                              static_cast<cuuint64_t>(pb.page_block_size),
                              static_cast<cuuint64_t>(pb.d_qk / mla_decode::kAtomDims),
                              static_cast<cuuint64_t>(pb.h_kv),
                              static_cast<cuuint64_t>(pb.num_blocks)};
  const cuuint64_t strides[4] = {static_cast<cuuint64_t>(token_stride),
                                 mla_decode::kAtomDims * 2,
                                 static_cast<cuuint64_t>(head_stride),
                                 static_cast<cuuint64_t>(block_stride)};
  const cuuint32_t box[5] = {mla_decode::kAtomDims, mla_decode::kTokensPerTile,
                             mla_decode::kVBoxAtoms, 1, 1};
  return encode_swizzled(map, pb.is_fp16, 5, k.data, dims, strides, box,
                         CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

// The pair kernel's Q tiles by TMA (p.q_tma): q as 5-D {d_qk, head in its kv head's
// group, kv head, query, request}, box {64 dims, min(group, 64) heads, 1, 64 / that queries, 1},
// so one box is one 64-row atom column of a q tile (row = query * group + head, the kernels' row
// order) when the group divides 64 or is a multiple of it; queries past s_q are the copy engine's
// zero fill. Returns false (the consumers' cp.async copies) for other groups and strides the copy
// engine cannot take; FLASHMLA_DENSE_DECODE_QLOAD=copies forces that path (A/B, tests).
bool make_q_tensor_map(const DenseDecodeParams& p, const DenseDecodeProblem& pb,
                       CUtensorMap* map) {
  if (env_is("FLASHMLA_DENSE_DECODE_QLOAD", "copies")) return false;
  const int64_t group = pb.h_q / pb.h_kv;
  if (group % mla_decode::kRowsPerTile != 0 && mla_decode::kRowsPerTile % group != 0)
    return false;
  const TensorView& q = p.q;
  if (q.stride[3] != 1) return false;
  const int64_t row_bytes = int64_t{pb.d_qk} * 2;
  // Strides of size-1 dimensions are never used: give them any legal value.
  const int64_t head_stride = group > 1 ? q.stride[2] * 2 : row_bytes;
  const int64_t kvh_stride = pb.h_kv > 1 ? q.stride[2] * 2 * group : row_bytes;
  const int64_t query_stride = pb.s_q > 1 ? q.stride[1] * 2 : row_bytes;
  const int64_t req_stride = pb.b > 1 ? q.stride[0] * 2 : row_bytes;
  for (int64_t st : {head_stride, kvh_stride, query_stride, req_stride})
    if (st % 16 != 0 || st <= 0 || st >= (int64_t{1} << 40)) return false;
  const int64_t box_heads = std::min<int64_t>(group, mla_decode::kRowsPerTile);
  const cuuint64_t dims[5] = {static_cast<cuuint64_t>(pb.d_qk), static_cast<cuuint64_t>(group),
                              static_cast<cuuint64_t>(pb.h_kv), static_cast<cuuint64_t>(pb.s_q),
                              static_cast<cuuint64_t>(pb.b)};
  const cuuint64_t strides[4] = {
      static_cast<cuuint64_t>(head_stride), static_cast<cuuint64_t>(kvh_stride),
      static_cast<cuuint64_t>(query_stride), static_cast<cuuint64_t>(req_stride)};
  const cuuint32_t box[5] = {mla_decode::kAtomDims, static_cast<cuuint32_t>(box_heads), 1,
                             static_cast<cuuint32_t>(mla_decode::kRowsPerTile / box_heads), 1};
  return encode_swizzled(map, pb.is_fp16, 5, q.data, dims, strides, box,
                         CU_TENSOR_MAP_L2_PROMOTION_L2_128B);
}

// Kernel choice for page sizes that are multiples of 64 (docs/dense-decode-design.md, measured in
// docs/perf-journal.md): above kSmallRows query rows per kv head, the pair kernel with
// evict-first KV loads (the q tiles of a part share each block in L2). Up to kSmallRows the job is
// bandwidth-bound, and which kernel streams fastest depends on the memory: on the H100 (3.35 TB/s
// peak) the seesaw kernel with evict-normal loads (session 5: D5 / D6 at 97 / 95 % of copy
// bandwidth; the pair kernel lost there in session 2, in an older form), on the H200 (4.8 TB/s)
// the pair kernel with evict-first loads (session 11, same run against the seesaw: D5 -7 %, D6
// -5 %, L6 -5.5 %, B2 -17 %). Devices above kFastDramGbps take the latter.
// Environment switches, read per call, for A/B timing and for the tests:
//   FLASHMLA_DENSE_DECODE_PAIR / _SEESAW / _LOCKSTEP = 1   force that kernel
//   FLASHMLA_DENSE_DECODE_EVICT = normal | first           force the L2 hint of KV loads
//   FLASHMLA_DENSE_DECODE_SYNC_HANDOFFS = 1                 pair / seesaw, bar.sync hand-offs
//                                                           (for racecheck; slower)
//   FLASHMLA_DENSE_DECODE_LOADS = inline                    pair kernel without the producer
//                                                           warpgroup (consumer lanes load)
//   FLASHMLA_DENSE_DECODE_L2PROMO = none | 64 | 128         L2 promotion of the KV tensor map
//                                                           (default 256 B; make_kv_tensor_map)
//   FLASHMLA_DENSE_DECODE_QLOAD = copies                    pair kernel: Q by the consumers'
//                                                           cp.async copies, not TMA
//   FLASHMLA_DENSE_DECODE_COMBINE = bulk                    the combine's bulk-copy kernel
//                                                           (slower so far: perf-journal.md,
//                                                           session 16)
void choose_kernel(mla_decode::MainParams* m, int device_index) {
  constexpr int kSmallRows = 32;
  constexpr int kFastDramGbps = 4000;
  const bool seesaw =
      m->rows <= kSmallRows && device_peak_dram_gbps(device_index) <= kFastDramGbps;
  m->variant = seesaw ? mla_decode::kVariantSeesaw : mla_decode::kVariantPair;
  if (env_is("FLASHMLA_DENSE_DECODE_PAIR", "1")) m->variant = mla_decode::kVariantPair;
  if (env_is("FLASHMLA_DENSE_DECODE_SEESAW", "1")) m->variant = mla_decode::kVariantSeesaw;
  if (env_is("FLASHMLA_DENSE_DECODE_LOCKSTEP", "1")) m->variant = mla_decode::kVariantLockstep;
  // Each kernel's better hint: evict-normal for the seesaw kernel (session 2), evict-first for
  // the others (the cp.async gathers of other page sizes take no hint).
  m->kv_evict_normal = m->variant == mla_decode::kVariantSeesaw ? 1 : 0;
  if (env_is("FLASHMLA_DENSE_DECODE_EVICT", "normal")) m->kv_evict_normal = 1;
  if (env_is("FLASHMLA_DENSE_DECODE_EVICT", "first")) m->kv_evict_normal = 0;
  m->sync_handoffs = env_is("FLASHMLA_DENSE_DECODE_SYNC_HANDOFFS", "1") ? 1 : 0;
  m->inline_loads = env_is("FLASHMLA_DENSE_DECODE_LOADS", "inline") ? 1 : 0;
  m->combine_bulk = env_is("FLASHMLA_DENSE_DECODE_COMBINE", "bulk") ? 1 : 0;
}

}  // namespace

void dense_decode_plan(const DensePlanParams& p, Stream stream) {
  const DeviceGuard guard(p.cache_seqlens.device.index);
  mla_decode::launch_plan(p.cache_seqlens.ptr<int32_t>(), p.cache_seqlens.stride[0], p.plan.b,
                            p.plan.num_parts, p.sched_meta.ptr<int32_t>(), stream);
}

void dense_decode(const DenseDecodeParams& p, const DenseDecodeProblem& pb, Stream stream) {
  require_aligned("dense_decode", p.q, "q", 16);
  require_aligned("dense_decode", p.k_cache, "k_cache", 16);
  require_aligned("dense_decode", p.out, "out", 8);
  const DeviceGuard guard(p.q.device.index);

  mla_decode::MainParams m{};
  m.q = p.q.data;
  for (int d = 0; d < 3; ++d) m.q_stride[d] = p.q.stride[d];
  m.k_cache = p.k_cache.data;
  for (int d = 0; d < 3; ++d) m.k_stride[d] = p.k_cache.stride[d];
  m.block_table = p.block_table.ptr<int32_t>();
  m.bt_stride[0] = p.block_table.stride[0];
  m.bt_stride[1] = p.block_table.stride[1];
  m.seqlens = p.cache_seqlens.ptr<int32_t>();
  m.seqlens_stride = p.cache_seqlens.stride[0];
  m.out = p.out.data;
  for (int d = 0; d < 3; ++d) m.out_stride[d] = p.out.stride[d];
  m.lse = p.lse.ptr<float>();
  for (int d = 0; d < 3; ++d) m.lse_stride[d] = p.lse.stride[d];
  m.sched_meta = p.sched_meta.ptr<int32_t>();
  const int64_t rows_all = int64_t{pb.s_q} * pb.h_q;
  m.o_partial = p.workspace.ptr<float>();
  m.lse_partial = m.o_partial + sched::max_slots(p.plan.num_parts) * rows_all * pb.d_v;
  // 16-byte output stores where out's rows allow them (4-byte stores otherwise; the partials'
  // workspace is always 16-byte aligned).
  m.out_vec16 = rows_aligned(p.out, 16) ? 1 : 0;
  m.b = pb.b;
  m.num_parts = p.plan.num_parts;
  m.s_q = pb.s_q;
  m.h_q = pb.h_q;
  m.h_kv = pb.h_kv;
  m.group = pb.h_q / pb.h_kv;
  m.group_div = FastDiv(static_cast<uint32_t>(m.group));
  m.rows = pb.s_q * m.group;
  m.page_block_size = pb.page_block_size;
  m.page_div = FastDiv(static_cast<uint32_t>(pb.page_block_size));
  m.num_blocks = pb.num_blocks;
  m.max_len = pb.max_blocks_per_seq * pb.page_block_size;
  m.scale_log2 = pb.scale * mla_decode::kLog2e;
  m.causal = p.causal ? 1 : 0;
  choose_kernel(&m, p.q.device.index);

  CUtensorMap tmap{};
  m.use_tma = make_kv_tensor_map(p, pb, &tmap) ? 1 : 0;
  // The pair kernel with its producer warpgroup: Q by TMA, and the V-box form where more than
  // two q-tile CTAs share each KV block (config.h).
  const bool producer =
      m.use_tma && m.variant == mla_decode::kVariantPair && !m.inline_loads;
  const int q_tiles = (m.rows + mla_decode::kRowsPerTile - 1) / mla_decode::kRowsPerTile;
  bool box = producer && q_tiles >= mla_decode::kVBoxMinQTiles;
  if (env_is("FLASHMLA_DENSE_DECODE_VBOX", "0")) box = false;
  if (env_is("FLASHMLA_DENSE_DECODE_VBOX", "1")) box = producer;
  m.v_box = box ? 1 : 0;
  CUtensorMap vmap = tmap;  // unused unless v_box
  if (m.v_box && !make_kv_box_map(p, pb, &vmap)) m.v_box = 0;
  CUtensorMap qmap{};
  m.q_tma = producer && make_q_tensor_map(p, pb, &qmap) ? 1 : 0;

  if (pb.is_fp16) {
    if (pb.d_qk == 576) mla_decode::launch_main<__half, 576>(m, tmap, qmap, vmap, stream);
    else mla_decode::launch_main<__half, 512>(m, tmap, qmap, vmap, stream);
  } else {
    if (pb.d_qk == 576) mla_decode::launch_main<__nv_bfloat16, 576>(m, tmap, qmap, vmap, stream);
    else mla_decode::launch_main<__nv_bfloat16, 512>(m, tmap, qmap, vmap, stream);
  }
  mla_decode::launch_combine(m, pb.is_fp16, stream);
}

}  // namespace flashmla::cuda
