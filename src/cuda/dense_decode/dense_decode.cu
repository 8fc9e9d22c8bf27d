// CUDA backend entry points of dense decode: resolves DenseDecodeParams into MainParams, checks
// the few layout requirements of the kernels (16-byte rows for the async copies), then launches
// the main kernel of the right (dtype, d_qk) variant and the combine kernel.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <string>

#include "core/decode_schedule.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_guard.h"
#include "cuda/cuda_backend.h"
#include "cuda/dense_decode/kernel.h"
#include "flashmla/errors.h"

namespace flashmla::cuda {
namespace {

// 16-byte copies need every row of q and k_cache to start on a 16-byte boundary; the 8-byte
// output stores of the combine need rows on 8-byte boundaries. Views that break this are rare
// (slices at odd offsets); they get a clear error rather than a misaligned access.
void require_aligned(const TensorView& t, const char* name, int bytes) {
  bool ok = reinterpret_cast<uintptr_t>(t.data) % bytes == 0;
  const int elems = bytes / dtype_size(t.dtype);
  for (int d = 0; d + 1 < t.rank; ++d) ok = ok && (t.shape[d] <= 1 || t.stride[d] % elems == 0);
  if (!ok)
    throw NotImplementedError(std::string("flashmla::dense_decode: the CUDA kernel needs ") +
                              name + " rows aligned to " + std::to_string(bytes) +
                              " bytes (data pointer and strides), got strides " + t.stride_str());
}

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

// L2 promotion of the KV boxes' misses; FLASHMLA_DENSE_DECODE_L2PROMO=0/64/128/256 for A/B.
CUtensorMapL2promotion l2_promotion() {
  if (const char* v = std::getenv("FLASHMLA_DENSE_DECODE_L2PROMO")) {
    const std::string s = v;
    if (s == "0") return CU_TENSOR_MAP_L2_PROMOTION_NONE;
    if (s == "64") return CU_TENSOR_MAP_L2_PROMOTION_L2_64B;
    if (s == "128") return CU_TENSOR_MAP_L2_PROMOTION_L2_128B;
  }
  return CU_TENSOR_MAP_L2_PROMOTION_L2_256B;
}

// TMA is used when a 64-token box always lies inside one page and the strides suit the copy
// engine (multiples of 16 bytes). Returns false to select the cp.async gather path.
bool make_kv_tensor_map(const DenseDecodeParams& p, const DenseDecodeProblem& pb,
                        CUtensorMap* map) {
  if (pb.page_block_size % mla_decode::kTokensPerTile != 0) return false;
  if (const char* env = std::getenv("FLASHMLA_DENSE_DECODE_NO_TMA"); env && *env == '1')
    return false;
  const TensorView& k = p.k_cache;
  const int64_t row_bytes = int64_t{pb.d_qk} * 2;
  // Strides of size-1 dimensions are never used: give them any legal value.
  const int64_t token_stride = k.stride[1] * 2;
  const int64_t head_stride = pb.h_kv > 1 ? k.stride[2] * 2 : row_bytes;
  const int64_t block_stride =
      pb.num_blocks > 1 ? k.stride[0] * 2 : token_stride * pb.page_block_size;
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
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  const CUresult r = encode_tiled()(
      map, pb.is_fp16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4,
      k.data, dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, l2_promotion(),
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

}  // namespace

void dense_decode_plan(const DensePlanParams& p, Stream stream) {
  const DeviceGuard guard(p.cache_seqlens.device.index);
  mla_decode::launch_plan(p.cache_seqlens.ptr<int32_t>(), p.cache_seqlens.stride[0], p.plan.b,
                            p.plan.num_parts, p.sched_meta.ptr<int32_t>(), stream);
}

void dense_decode(const DenseDecodeParams& p, const DenseDecodeProblem& pb, Stream stream) {
  require_aligned(p.q, "q", 16);
  require_aligned(p.k_cache, "k_cache", 16);
  require_aligned(p.out, "out", 8);
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
  m.b = pb.b;
  m.num_parts = p.plan.num_parts;
  m.s_q = pb.s_q;
  m.h_q = pb.h_q;
  m.h_kv = pb.h_kv;
  m.group = pb.h_q / pb.h_kv;
  m.rows = pb.s_q * m.group;
  m.page_block_size = pb.page_block_size;
  m.num_blocks = pb.num_blocks;
  m.max_len = pb.max_blocks_per_seq * pb.page_block_size;
  m.scale_log2 = pb.scale * mla_decode::kLog2e;
  m.causal = p.causal ? 1 : 0;
  // A/B switches for timing and tests (read per call, like FLASHMLA_DENSE_DECODE_NO_TMA): run the
  // TMA path through the lockstep or the seesaw kernel instead of the pair kernel.
  m.variant = mla_decode::kVariantPair;
  if (const char* v = std::getenv("FLASHMLA_DENSE_DECODE_SEESAW"); v && *v == '1')
    m.variant = mla_decode::kVariantSeesaw;
  if (const char* v = std::getenv("FLASHMLA_DENSE_DECODE_LOCKSTEP"); v && *v == '1')
    m.variant = mla_decode::kVariantLockstep;

  // Grid order A/B (FLASHMLA_DENSE_DECODE_GRID): "tiles" (default) puts the q tiles of a part
  // in adjacent CTAs, "cluster" also clusters them in pairs, "parts" is the session-1 order.
  m.tiles_fastest = 1;
  m.cluster_tiles = 1;
  if (const char* g = std::getenv("FLASHMLA_DENSE_DECODE_GRID")) {
    const std::string grid = g;
    if (grid == "parts") m.tiles_fastest = 0;
    const int q_tiles = (m.rows + mla_decode::kRowsPerTile - 1) / mla_decode::kRowsPerTile;
    if (grid == "cluster" && q_tiles % 2 == 0) m.cluster_tiles = 2;
  }

  if (const char* v = std::getenv("FLASHMLA_DENSE_DECODE_EVICT"); v && std::string(v) == "normal")
    m.kv_evict_normal = 1;

  if (const char* v = std::getenv("FLASHMLA_DD_DEBUG")) m.debug = std::atoi(v);
  CUtensorMap tmap{};
  m.use_tma = make_kv_tensor_map(p, pb, &tmap) ? 1 : 0;

  if (pb.is_fp16) {
    if (pb.d_qk == 576) mla_decode::launch_main<__half, 576>(m, tmap, stream);
    else mla_decode::launch_main<__half, 512>(m, tmap, stream);
  } else {
    if (pb.d_qk == 576) mla_decode::launch_main<__nv_bfloat16, 576>(m, tmap, stream);
    else mla_decode::launch_main<__nv_bfloat16, 512>(m, tmap, stream);
  }
  mla_decode::launch_combine(m, pb.is_fp16, stream);
}

}  // namespace flashmla::cuda
