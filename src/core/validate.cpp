// Boundary validation of every operation's params struct (see validate.h for the order).
#include "core/validate.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "core/decode_schedule.h"
#include "flashmla/kv_layout.h"

namespace flashmla {

namespace {

std::string dims_of(const TensorView& t) { return t.shape_str(); }

std::string list_dtypes(std::initializer_list<DType> allowed) {
  std::string s;
  for (DType d : allowed) s += (s.empty() ? "" : " or ") + std::string(dtype_name(d));
  return s;
}

}  // namespace

// ---- Checker ----------------------------------------------------------------------------------

void Checker::fail(const char* arg, ErrorKind kind, const std::string& detail) const {
  throw ArgumentError(kind, op_, arg, detail);
}

void Checker::present(const TensorView& t, const char* arg) const {
  if (!t.defined()) fail(arg, ErrorKind::kValue, "is required but was not given");
}

void Checker::rank(const TensorView& t, const char* arg, int rank, const char* dims) const {
  if (t.rank != rank)
    fail(arg, ErrorKind::kValue,
         "expected rank " + std::to_string(rank) + " " + dims + ", got rank " +
             std::to_string(t.rank) + " " + dims_of(t));
}

void Checker::same_device(const TensorView& t, const char* arg, Device device) const {
  if (!(t.device == device))
    fail(arg, ErrorKind::kValue,
         "expected a tensor on " + device_name(device) + " (the device of the call's first "
         "tensor), got " + device_name(t.device));
}

void Checker::dtype(const TensorView& t, const char* arg,
                    std::initializer_list<DType> allowed) const {
  for (DType d : allowed)
    if (t.dtype == d) return;
  fail(arg, ErrorKind::kType,
       "expected dtype " + list_dtypes(allowed) + ", got " + dtype_name(t.dtype));
}

void Checker::layout(const TensorView& t, const char* arg) const {
  for (int i = 0; i < t.rank; ++i)
    if (t.shape[i] < 0)
      fail(arg, ErrorKind::kValue, "has a negative dimension: shape " + dims_of(t));
  for (int i = 0; i < t.rank; ++i)
    if (t.stride[i] < 0)
      fail(arg, ErrorKind::kValue, "has a negative stride: strides " + t.stride_str());
  if (t.rank > 0 && t.shape[t.rank - 1] > 1 && t.stride[t.rank - 1] != 1)
    fail(arg, ErrorKind::kValue,
         "expected the last dimension to be contiguous (stride 1), got strides " +
             t.stride_str());
  if (t.numel() > 0 && t.data == nullptr)
    fail(arg, ErrorKind::kValue, "has a null data pointer but shape " + dims_of(t));
}

void Checker::shape(const TensorView& t, const char* arg, std::initializer_list<int64_t> expected,
                    const char* dims) const {
  bool ok = t.rank == static_cast<int>(expected.size());
  int i = 0;
  std::string want = "[";
  for (int64_t e : expected) {
    if (ok && t.shape[i] != e) ok = false;
    want += (i ? ", " : "") + std::to_string(e);
    ++i;
  }
  want += "]";
  if (!ok)
    fail(arg, ErrorKind::kValue,
         std::string("expected shape ") + dims + " = " + want + ", got " + dims_of(t));
}

void Checker::at_least(const char* arg, const char* what, int64_t value, int64_t min) const {
  if (value < min)
    fail(arg, ErrorKind::kValue,
         std::string("expected ") + what + " >= " + std::to_string(min) + ", got " +
             std::to_string(value));
}

float Checker::scale(const std::optional<float>& scale, const char* arg, int d_qk) const {
  if (!scale) return 1.0f / std::sqrt(static_cast<float>(d_qk));
  if (!std::isfinite(*scale) || *scale <= 0.0f)
    fail(arg, ErrorKind::kValue,
         "expected a finite value > 0, got " + std::to_string(*scale));
  return *scale;
}

namespace {

// Shared by every op: all given tensors on `device`, each with a valid layout.
void check_devices_and_layouts(const Checker& c, Device device,
                               std::initializer_list<std::pair<const TensorView*, const char*>> ts) {
  for (auto [t, name] : ts)
    if (t->defined()) c.same_device(*t, name, device);
}

void check_layouts(const Checker& c,
                   std::initializer_list<std::pair<const TensorView*, const char*>> ts) {
  for (auto [t, name] : ts)
    if (t->defined()) c.layout(*t, name);
}

// Host-readable int32 vector element (only called for CPU tensors).
int32_t at(const TensorView& t, int64_t i) { return t.ptr<const int32_t>()[i * t.stride[0]]; }

void check_lengths(const Checker& c, const TensorView& t, const char* arg, int64_t max_len,
                   const char* max_what) {
  if (!t.device.is_cpu()) return;
  for (int64_t r = 0; r < t.shape[0]; ++r) {
    const int32_t v = at(t, r);
    if (v < 0 || v > max_len)
      c.fail(arg, ErrorKind::kValue,
             "element " + std::to_string(r) + " is " + std::to_string(v) + ", expected 0 <= " +
                 arg + " <= " + max_what + " = " + std::to_string(max_len));
  }
}

// FP8 cache view: [num_blocks, pbs, 1, token_bytes], tokens dense inside a block, block stride
// (bytes) a multiple of 16 covering the block's data.
void check_fp8_cache(const Checker& c, const TensorView& t, const char* arg, KVCacheLayout layout) {
  const int bytes = kv_layout_token_bytes(layout);
  if (t.shape[3] != bytes)
    c.fail(arg, ErrorKind::kValue,
           std::string("expected last dim ") + std::to_string(bytes) + " bytes per token for the " +
               kv_layout_name(layout) + " layout, got shape " + t.shape_str());
  if (t.shape[2] != 1)
    c.fail(arg, ErrorKind::kValue,
           "expected h_kv = 1 (dim 2) for an FP8 cache, got shape " + t.shape_str());
  c.at_least(arg, "page_block_size (dim 1)", t.shape[1], 1);
  if (t.shape[1] > 1 && t.stride[1] != bytes)
    c.fail(arg, ErrorKind::kValue,
           "expected tokens of a page block to be contiguous (stride[1] = " +
               std::to_string(bytes) + "), got strides " + t.stride_str());
  const int64_t pbs = t.shape[1];
  const int64_t min_block = layout == KVCacheLayout::kV32 ? pbs * v32::kBytesPerToken
                                                          : pbs * model1::kNominalBytesPerToken;
  if (t.shape[0] > 1 && (t.stride[0] < min_block || t.stride[0] % 16 != 0))
    c.fail(arg, ErrorKind::kValue,
           "expected a block stride (stride[0]) that is a multiple of 16 bytes and >= " +
               std::to_string(min_block) + ", got strides " + t.stride_str());
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0)
    c.fail(arg, ErrorKind::kValue, "expected a 16-byte aligned data pointer");
}

int64_t block_stride_bytes(const TensorView& t, int64_t min_block) {
  return t.shape[0] > 1 ? t.stride[0] * dtype_size(t.dtype) : min_block;
}

}  // namespace

// ---- dense decode -----------------------------------------------------------------------------

// The sched_meta elements the plan's own fields need (the schedule's size grows with b and
// num_parts): a plan edited by hand, say num_parts raised with sched_meta_elems kept, must not
// send the plan or the run step past the buffer.
void check_meta_size(const Checker& c, const DecodePlan& plan, const TensorView& sched_meta) {
  if (plan.b < 1 || plan.num_parts < 1)
    c.fail("plan", ErrorKind::kValue,
           "expected a plan from dense_decode_plan_info(), got b=" + std::to_string(plan.b) +
               ", num_parts=" + std::to_string(plan.num_parts));
  const int64_t need =
      std::max(plan.sched_meta_elems, sched::meta_elems(plan.b, plan.num_parts));
  if (sched_meta.shape[0] < need)
    c.fail("sched_meta", ErrorKind::kValue,
           "expected at least " + std::to_string(need) +
               " elements (plan.sched_meta_elems for the plan's b and num_parts), got " +
               std::to_string(sched_meta.shape[0]));
}

void validate_dense_plan(const DensePlanParams& p) {
  const Checker c("dense_decode_plan");
  c.present(p.cache_seqlens, "cache_seqlens");
  c.present(p.sched_meta, "sched_meta");
  c.rank(p.cache_seqlens, "cache_seqlens", 1, "[b]");
  c.rank(p.sched_meta, "sched_meta", 1, "[sched_meta_elems]");
  const Device dev = p.cache_seqlens.device;
  c.same_device(p.sched_meta, "sched_meta", dev);
  c.dtype(p.cache_seqlens, "cache_seqlens", {DType::kInt32});
  c.dtype(p.sched_meta, "sched_meta", {DType::kInt32});
  check_layouts(c, {{&p.cache_seqlens, "cache_seqlens"}, {&p.sched_meta, "sched_meta"}});
  if (!p.sched_meta.is_contiguous())
    c.fail("sched_meta", ErrorKind::kValue, "expected a contiguous tensor");
  if (p.plan.num_parts < 1 || !(p.plan.device == dev))
    c.fail("plan", ErrorKind::kValue,
           "expected a plan from dense_decode_plan_info() for " + device_name(dev) +
               ", got one for " + device_name(p.plan.device) + " with num_parts " +
               std::to_string(p.plan.num_parts));
  if (p.cache_seqlens.shape[0] != p.plan.b)
    c.fail("cache_seqlens", ErrorKind::kValue,
           "expected shape [b] = [" + std::to_string(p.plan.b) + "] (the plan's b), got " +
               p.cache_seqlens.shape_str());
  check_meta_size(c, p.plan, p.sched_meta);
  check_lengths(c, p.cache_seqlens, "cache_seqlens", INT32_MAX, "INT32_MAX");
}

DenseDecodeProblem validate_dense_decode(const DenseDecodeParams& p) {
  const Checker c("dense_decode");
  // Presence and rank.
  c.present(p.q, "q");
  c.rank(p.q, "q", 4, "[b, s_q, h_q, d_qk]");
  c.present(p.k_cache, "k_cache");
  c.rank(p.k_cache, "k_cache", 4, "[num_blocks, page_block_size, h_kv, d_qk]");
  c.present(p.block_table, "block_table");
  c.rank(p.block_table, "block_table", 2, "[b, max_blocks_per_seq]");
  c.present(p.cache_seqlens, "cache_seqlens");
  c.rank(p.cache_seqlens, "cache_seqlens", 1, "[b]");
  c.present(p.out, "out");
  c.rank(p.out, "out", 4, "[b, s_q, h_q, head_dim_v]");
  c.present(p.lse, "lse");
  c.rank(p.lse, "lse", 3, "[b, h_q, s_q]");
  c.present(p.sched_meta, "sched_meta");
  c.rank(p.sched_meta, "sched_meta", 1, "[plan.sched_meta_elems]");
  c.present(p.workspace, "workspace");
  c.rank(p.workspace, "workspace", 1, "[plan.workspace_bytes]");
  // Device.
  const Device dev = p.q.device;
  check_devices_and_layouts(c, dev, {{&p.k_cache, "k_cache"}, {&p.block_table, "block_table"},
                                     {&p.cache_seqlens, "cache_seqlens"}, {&p.out, "out"},
                                     {&p.lse, "lse"}, {&p.sched_meta, "sched_meta"},
                                     {&p.workspace, "workspace"}});
  // Dtype.
  c.dtype(p.q, "q", {DType::kBFloat16, DType::kFloat16});
  c.dtype(p.k_cache, "k_cache", {p.q.dtype});
  c.dtype(p.block_table, "block_table", {DType::kInt32});
  c.dtype(p.cache_seqlens, "cache_seqlens", {DType::kInt32});
  c.dtype(p.out, "out", {p.q.dtype});
  c.dtype(p.lse, "lse", {DType::kFloat32});
  c.dtype(p.sched_meta, "sched_meta", {DType::kInt32});
  c.dtype(p.workspace, "workspace", {DType::kUInt8});
  // Layout.
  check_layouts(c, {{&p.q, "q"}, {&p.k_cache, "k_cache"}, {&p.block_table, "block_table"},
                    {&p.cache_seqlens, "cache_seqlens"}, {&p.out, "out"}, {&p.lse, "lse"},
                    {&p.sched_meta, "sched_meta"}, {&p.workspace, "workspace"}});
  // Shapes.
  DenseDecodeProblem pb{};
  pb.b = p.q.shape[0];
  pb.s_q = static_cast<int>(p.q.shape[1]);
  pb.h_q = static_cast<int>(p.q.shape[2]);
  pb.d_qk = static_cast<int>(p.q.shape[3]);
  c.at_least("q", "b (dim 0)", pb.b, 1);
  c.at_least("q", "s_q (dim 1)", pb.s_q, 1);
  c.at_least("q", "h_q (dim 2)", pb.h_q, 1);
  if (pb.d_qk != v32::kDimQK && pb.d_qk != model1::kDimQK)
    c.fail("q", ErrorKind::kValue,
           "expected head dim d_qk (dim 3) 576 or 512, got " + std::to_string(pb.d_qk));
  if (p.head_dim_v != 512)
    c.fail("head_dim_v", ErrorKind::kValue,
           "expected 512, got " + std::to_string(p.head_dim_v));
  pb.d_v = p.head_dim_v;
  pb.num_blocks = p.k_cache.shape[0];
  pb.page_block_size = static_cast<int>(p.k_cache.shape[1]);
  pb.h_kv = static_cast<int>(p.k_cache.shape[2]);
  c.at_least("k_cache", "page_block_size (dim 1)", pb.page_block_size, 1);
  c.at_least("k_cache", "h_kv (dim 2)", pb.h_kv, 1);
  if (pb.h_q % pb.h_kv != 0)
    c.fail("k_cache", ErrorKind::kValue,
           "expected h_kv (dim 2) to divide h_q = " + std::to_string(pb.h_q) + ", got h_kv = " +
               std::to_string(pb.h_kv));
  if (p.k_cache.shape[3] != pb.d_qk)
    c.fail("k_cache", ErrorKind::kValue,
           "expected head dim (dim 3) = d_qk of q = " + std::to_string(pb.d_qk) + ", got shape " +
               p.k_cache.shape_str());
  if (p.block_table.shape[0] != pb.b)
    c.fail("block_table", ErrorKind::kValue,
           "expected shape [b, max_blocks_per_seq] with b = " + std::to_string(pb.b) + ", got " +
               p.block_table.shape_str());
  pb.max_blocks_per_seq = p.block_table.shape[1];
  c.shape(p.cache_seqlens, "cache_seqlens", {pb.b}, "[b]");
  c.shape(p.out, "out", {pb.b, pb.s_q, pb.h_q, pb.d_v}, "[b, s_q, h_q, head_dim_v]");
  c.shape(p.lse, "lse", {pb.b, pb.h_q, pb.s_q}, "[b, h_q, s_q]");
  // Cross-argument: the plan must be the one made for this shape.
  const DecodePlan& plan = p.plan;
  if (plan.b != pb.b || plan.s_q != pb.s_q || plan.h_q != pb.h_q || plan.h_kv != pb.h_kv ||
      plan.head_dim_v != pb.d_v || plan.causal != p.causal || !(plan.device == dev) ||
      plan.num_parts < 1)
    c.fail("plan", ErrorKind::kValue,
           "was made for (b=" + std::to_string(plan.b) + ", s_q=" + std::to_string(plan.s_q) +
               ", h_q=" + std::to_string(plan.h_q) + ", h_kv=" + std::to_string(plan.h_kv) +
               ", head_dim_v=" + std::to_string(plan.head_dim_v) +
               ", causal=" + std::to_string(plan.causal) + ", " + device_name(plan.device) +
               "), expected (b=" + std::to_string(pb.b) + ", s_q=" + std::to_string(pb.s_q) +
               ", h_q=" + std::to_string(pb.h_q) + ", h_kv=" + std::to_string(pb.h_kv) +
               ", head_dim_v=" + std::to_string(pb.d_v) + ", causal=" +
               std::to_string(p.causal) + ", " + device_name(dev) + ")");
  check_meta_size(c, plan, p.sched_meta);
  // (the partial slots' size from the plan's own fields, as for sched_meta)
  const int64_t ws_need = std::max(
      plan.workspace_bytes,
      sched::workspace_bytes(plan.num_parts, plan.s_q, plan.h_q, plan.head_dim_v));
  if (p.workspace.shape[0] < ws_need)
    c.fail("workspace", ErrorKind::kValue,
           "expected at least " + std::to_string(ws_need) +
               " bytes (plan.workspace_bytes for the plan's num_parts and heads), got " +
               std::to_string(p.workspace.shape[0]));
  if (reinterpret_cast<uintptr_t>(p.workspace.data) % 16 != 0)
    c.fail("workspace", ErrorKind::kValue, "expected a 16-byte aligned data pointer");
  pb.scale = c.scale(p.softmax_scale, "softmax_scale", pb.d_qk);
  pb.is_fp16 = p.q.dtype == DType::kFloat16;
  // Values (host-resident data only; device kernels clamp instead of reading out of bounds).
  if (dev.is_cpu()) {
    const int64_t capacity = pb.max_blocks_per_seq * pb.page_block_size;
    check_lengths(c, p.cache_seqlens, "cache_seqlens", capacity,
                  "max_blocks_per_seq * page_block_size");
    const auto* table = p.block_table.ptr<const int32_t>();
    for (int64_t r = 0; r < pb.b; ++r) {
      const int64_t used = (at(p.cache_seqlens, r) + pb.page_block_size - 1) / pb.page_block_size;
      for (int64_t i = 0; i < used; ++i) {
        const int32_t blk = table[r * p.block_table.stride[0] + i];
        if (blk < 0 || blk >= pb.num_blocks)
          c.fail("block_table", ErrorKind::kValue,
                 "entry [" + std::to_string(r) + ", " + std::to_string(i) + "] = " +
                     std::to_string(blk) + " is used by request " + std::to_string(r) +
                     " but is outside [0, num_blocks = " + std::to_string(pb.num_blocks) + ")");
      }
    }
    const sched::View v{p.sched_meta.ptr<int32_t>(), pb.b, plan.num_parts};
    if (v.header()[0] != sched::kMagic || v.header()[1] != pb.b || v.header()[2] != plan.num_parts)
      c.fail("sched_meta", ErrorKind::kValue,
             "does not hold a schedule made by dense_decode_plan() for this plan");
  }
  return pb;
}

// ---- sparse decode ----------------------------------------------------------------------------

SparseDecodeProblem validate_sparse_decode(const SparseDecodeParams& p) {
  const Checker c("sparse_decode");
  c.present(p.q, "q");
  c.rank(p.q, "q", 4, "[b, s_q, h_q, d_qk]");
  c.present(p.k_cache, "k_cache");
  c.rank(p.k_cache, "k_cache", 4, "[num_blocks, page_block_size, 1, bytes_per_token]");
  c.present(p.indices, "indices");
  c.rank(p.indices, "indices", 3, "[b, s_q, topk]");
  if (p.topk_length.defined()) c.rank(p.topk_length, "topk_length", 1, "[b]");
  if (p.attn_sink.defined()) c.rank(p.attn_sink, "attn_sink", 1, "[h_q]");
  const bool has_extra = p.extra_k_cache.defined();
  if (has_extra) {
    c.rank(p.extra_k_cache, "extra_k_cache", 4, "[num_blocks, page_block_size, 1, bytes_per_token]");
    c.present(p.extra_indices, "extra_indices");
    c.rank(p.extra_indices, "extra_indices", 3, "[b, s_q, extra_topk]");
    if (p.extra_topk_length.defined())
      c.rank(p.extra_topk_length, "extra_topk_length", 1, "[b]");
  } else {
    if (p.extra_indices.defined())
      c.fail("extra_indices", ErrorKind::kValue, "was given without extra_k_cache");
    if (p.extra_topk_length.defined())
      c.fail("extra_topk_length", ErrorKind::kValue, "was given without extra_k_cache");
  }
  c.present(p.out, "out");
  c.rank(p.out, "out", 4, "[b, s_q, h_q, head_dim_v]");
  c.present(p.lse, "lse");
  c.rank(p.lse, "lse", 3, "[b, h_q, s_q]");

  const Device dev = p.q.device;
  check_devices_and_layouts(
      c, dev,
      {{&p.k_cache, "k_cache"}, {&p.indices, "indices"}, {&p.topk_length, "topk_length"},
       {&p.attn_sink, "attn_sink"}, {&p.extra_k_cache, "extra_k_cache"},
       {&p.extra_indices, "extra_indices"}, {&p.extra_topk_length, "extra_topk_length"},
       {&p.out, "out"}, {&p.lse, "lse"}});

  c.dtype(p.q, "q", {DType::kBFloat16});
  c.dtype(p.k_cache, "k_cache", {DType::kUInt8, DType::kFloat8E4M3});
  c.dtype(p.indices, "indices", {DType::kInt32});
  if (p.topk_length.defined()) c.dtype(p.topk_length, "topk_length", {DType::kInt32});
  if (p.attn_sink.defined()) c.dtype(p.attn_sink, "attn_sink", {DType::kFloat32});
  if (has_extra) {
    c.dtype(p.extra_k_cache, "extra_k_cache", {DType::kUInt8, DType::kFloat8E4M3});
    c.dtype(p.extra_indices, "extra_indices", {DType::kInt32});
    if (p.extra_topk_length.defined())
      c.dtype(p.extra_topk_length, "extra_topk_length", {DType::kInt32});
  }
  c.dtype(p.out, "out", {DType::kBFloat16});
  c.dtype(p.lse, "lse", {DType::kFloat32});

  check_layouts(c, {{&p.q, "q"}, {&p.k_cache, "k_cache"}, {&p.indices, "indices"},
                    {&p.topk_length, "topk_length"}, {&p.attn_sink, "attn_sink"},
                    {&p.extra_k_cache, "extra_k_cache"}, {&p.extra_indices, "extra_indices"},
                    {&p.extra_topk_length, "extra_topk_length"}, {&p.out, "out"}, {&p.lse, "lse"}});

  SparseDecodeProblem pb{};
  pb.b = p.q.shape[0];
  pb.s_q = static_cast<int>(p.q.shape[1]);
  pb.h_q = static_cast<int>(p.q.shape[2]);
  pb.d_qk = static_cast<int>(p.q.shape[3]);
  c.at_least("q", "b (dim 0)", pb.b, 1);
  c.at_least("q", "s_q (dim 1)", pb.s_q, 1);
  c.at_least("q", "h_q (dim 2)", pb.h_q, 1);
  if (pb.d_qk == v32::kDimQK) {
    pb.layout = KVCacheLayout::kV32;
  } else if (pb.d_qk == model1::kDimQK) {
    pb.layout = KVCacheLayout::kModel1;
  } else {
    c.fail("q", ErrorKind::kValue,
           "expected head dim d_qk (dim 3) 576 (V3.2 FP8 layout) or 512 (MODEL1), got " +
               std::to_string(pb.d_qk));
  }
  if (p.head_dim_v != 512)
    c.fail("head_dim_v", ErrorKind::kValue, "expected 512, got " + std::to_string(p.head_dim_v));
  pb.d_v = p.head_dim_v;
  check_fp8_cache(c, p.k_cache, "k_cache", pb.layout);
  pb.num_blocks = p.k_cache.shape[0];
  pb.page_block_size = p.k_cache.shape[1];
  pb.block_stride_bytes = block_stride_bytes(
      p.k_cache, pb.layout == KVCacheLayout::kV32 ? pb.page_block_size * v32::kBytesPerToken
                                                  : model1::min_block_bytes(pb.page_block_size));
  if (p.indices.shape[0] != pb.b || p.indices.shape[1] != pb.s_q)
    c.fail("indices", ErrorKind::kValue,
           "expected shape [b, s_q, topk] with b = " + std::to_string(pb.b) +
               ", s_q = " + std::to_string(pb.s_q) + ", got " + p.indices.shape_str());
  pb.topk = static_cast<int>(p.indices.shape[2]);
  c.at_least("indices", "topk (dim 2)", pb.topk, 1);
  if (p.topk_length.defined()) c.shape(p.topk_length, "topk_length", {pb.b}, "[b]");
  if (p.attn_sink.defined()) c.shape(p.attn_sink, "attn_sink", {pb.h_q}, "[h_q]");
  pb.has_extra = has_extra;
  if (has_extra) {
    check_fp8_cache(c, p.extra_k_cache, "extra_k_cache", pb.layout);
    pb.extra_num_blocks = p.extra_k_cache.shape[0];
    pb.extra_page_block_size = p.extra_k_cache.shape[1];
    pb.extra_block_stride_bytes = block_stride_bytes(
        p.extra_k_cache, pb.layout == KVCacheLayout::kV32
                             ? pb.extra_page_block_size * v32::kBytesPerToken
                             : model1::min_block_bytes(pb.extra_page_block_size));
    if (p.extra_indices.shape[0] != pb.b || p.extra_indices.shape[1] != pb.s_q)
      c.fail("extra_indices", ErrorKind::kValue,
             "expected shape [b, s_q, extra_topk] with b = " + std::to_string(pb.b) +
                 ", s_q = " + std::to_string(pb.s_q) + ", got " + p.extra_indices.shape_str());
    pb.extra_topk = static_cast<int>(p.extra_indices.shape[2]);
    c.at_least("extra_indices", "extra_topk (dim 2)", pb.extra_topk, 1);
    if (p.extra_topk_length.defined())
      c.shape(p.extra_topk_length, "extra_topk_length", {pb.b}, "[b]");
  }
  c.shape(p.out, "out", {pb.b, pb.s_q, pb.h_q, pb.d_v}, "[b, s_q, h_q, head_dim_v]");
  c.shape(p.lse, "lse", {pb.b, pb.h_q, pb.s_q}, "[b, h_q, s_q]");
  pb.scale = c.scale(p.softmax_scale, "softmax_scale", pb.d_qk);
  if (dev.is_cpu()) {
    if (p.topk_length.defined()) check_lengths(c, p.topk_length, "topk_length", pb.topk, "topk");
    if (p.extra_topk_length.defined())
      check_lengths(c, p.extra_topk_length, "extra_topk_length", pb.extra_topk, "extra_topk");
  }
  return pb;
}

// ---- sparse prefill ---------------------------------------------------------------------------

SparsePrefillProblem validate_sparse_prefill(const SparsePrefillParams& p) {
  const Checker c("sparse_prefill");
  c.present(p.q, "q");
  c.rank(p.q, "q", 3, "[s_q, h_q, d_qk]");
  c.present(p.kv, "kv");
  c.rank(p.kv, "kv", 3, "[s_kv, h_kv, d_qk]");
  c.present(p.indices, "indices");
  c.rank(p.indices, "indices", 3, "[s_q, h_kv, topk]");
  if (p.attn_sink.defined()) c.rank(p.attn_sink, "attn_sink", 1, "[h_q]");
  if (p.topk_length.defined()) c.rank(p.topk_length, "topk_length", 1, "[s_q]");
  c.present(p.out, "out");
  c.rank(p.out, "out", 3, "[s_q, h_q, d_v]");
  c.present(p.max_logits, "max_logits");
  c.rank(p.max_logits, "max_logits", 2, "[s_q, h_q]");
  c.present(p.lse, "lse");
  c.rank(p.lse, "lse", 2, "[s_q, h_q]");

  const Device dev = p.q.device;
  check_devices_and_layouts(c, dev,
                            {{&p.kv, "kv"}, {&p.indices, "indices"}, {&p.attn_sink, "attn_sink"},
                             {&p.topk_length, "topk_length"}, {&p.out, "out"},
                             {&p.max_logits, "max_logits"}, {&p.lse, "lse"}});
  c.dtype(p.q, "q", {DType::kBFloat16});
  c.dtype(p.kv, "kv", {DType::kBFloat16});
  c.dtype(p.indices, "indices", {DType::kInt32});
  if (p.attn_sink.defined()) c.dtype(p.attn_sink, "attn_sink", {DType::kFloat32});
  if (p.topk_length.defined()) c.dtype(p.topk_length, "topk_length", {DType::kInt32});
  c.dtype(p.out, "out", {DType::kBFloat16});
  c.dtype(p.max_logits, "max_logits", {DType::kFloat32});
  c.dtype(p.lse, "lse", {DType::kFloat32});
  check_layouts(c, {{&p.q, "q"}, {&p.kv, "kv"}, {&p.indices, "indices"},
                    {&p.attn_sink, "attn_sink"}, {&p.topk_length, "topk_length"},
                    {&p.out, "out"}, {&p.max_logits, "max_logits"}, {&p.lse, "lse"}});

  SparsePrefillProblem pb{};
  pb.s_q = p.q.shape[0];
  pb.h_q = static_cast<int>(p.q.shape[1]);
  pb.d_qk = static_cast<int>(p.q.shape[2]);
  c.at_least("q", "s_q (dim 0)", pb.s_q, 1);
  c.at_least("q", "h_q (dim 1)", pb.h_q, 1);
  if (pb.d_qk != v32::kDimQK && pb.d_qk != model1::kDimQK)
    c.fail("q", ErrorKind::kValue,
           "expected head dim d_qk (dim 2) 576 or 512, got " + std::to_string(pb.d_qk));
  if (p.d_v != 512) c.fail("d_v", ErrorKind::kValue, "expected 512, got " + std::to_string(p.d_v));
  pb.d_v = p.d_v;
  pb.s_kv = p.kv.shape[0];
  pb.h_kv = static_cast<int>(p.kv.shape[1]);
  c.at_least("kv", "h_kv (dim 1)", pb.h_kv, 1);
  if (pb.h_q % pb.h_kv != 0)
    c.fail("kv", ErrorKind::kValue,
           "expected h_kv (dim 1) to divide h_q = " + std::to_string(pb.h_q) + ", got h_kv = " +
               std::to_string(pb.h_kv));
  if (p.kv.shape[2] != pb.d_qk)
    c.fail("kv", ErrorKind::kValue,
           "expected head dim (dim 2) = d_qk of q = " + std::to_string(pb.d_qk) + ", got shape " +
               p.kv.shape_str());
  if (p.indices.shape[0] != pb.s_q || p.indices.shape[1] != pb.h_kv)
    c.fail("indices", ErrorKind::kValue,
           "expected shape [s_q, h_kv, topk] with s_q = " + std::to_string(pb.s_q) +
               ", h_kv = " + std::to_string(pb.h_kv) + ", got " + p.indices.shape_str());
  pb.topk = static_cast<int>(p.indices.shape[2]);
  c.at_least("indices", "topk (dim 2)", pb.topk, 1);
  if (p.attn_sink.defined()) c.shape(p.attn_sink, "attn_sink", {pb.h_q}, "[h_q]");
  if (p.topk_length.defined()) c.shape(p.topk_length, "topk_length", {pb.s_q}, "[s_q]");
  c.shape(p.out, "out", {pb.s_q, pb.h_q, pb.d_v}, "[s_q, h_q, d_v]");
  c.shape(p.max_logits, "max_logits", {pb.s_q, pb.h_q}, "[s_q, h_q]");
  c.shape(p.lse, "lse", {pb.s_q, pb.h_q}, "[s_q, h_q]");
  if (!std::isfinite(p.sm_scale) || p.sm_scale <= 0.0f)
    c.fail("sm_scale", ErrorKind::kValue,
           "expected a finite value > 0, got " + std::to_string(p.sm_scale));
  pb.scale = p.sm_scale;
  if (dev.is_cpu() && p.topk_length.defined())
    check_lengths(c, p.topk_length, "topk_length", pb.topk, "topk");
  return pb;
}

// ---- dense MHA prefill ------------------------------------------------------------------------
//
// mha_varlen_fwd and mha_varlen_bwd share their inputs (q, k, v, the offsets, the lengths and the
// scale); each op runs these checks stage by stage, its own tensors beside them.

namespace {

struct VarlenInputs {
  const TensorView &q, &k, &v, &cu_q, &cu_k;
  int max_q, max_k;
  const std::optional<float>& scale;
};

void varlen_present(const Checker& c, const VarlenInputs& in) {
  c.present(in.q, "q");
  c.rank(in.q, "q", 3, "[total_q, h_q, d_qk]");
  c.present(in.k, "k");
  c.rank(in.k, "k", 3, "[total_k, h_kv, d_qk]");
  c.present(in.v, "v");
  c.rank(in.v, "v", 3, "[total_k, h_kv, d_v]");
  c.present(in.cu_q, "cu_seqlens_q");
  c.rank(in.cu_q, "cu_seqlens_q", 1, "[b + 1]");
  c.present(in.cu_k, "cu_seqlens_k");
  c.rank(in.cu_k, "cu_seqlens_k", 1, "[b + 1]");
}

void varlen_dtypes(const Checker& c, const VarlenInputs& in) {
  c.dtype(in.q, "q", {DType::kBFloat16, DType::kFloat16});
  c.dtype(in.k, "k", {in.q.dtype});
  c.dtype(in.v, "v", {in.q.dtype});
  c.dtype(in.cu_q, "cu_seqlens_q", {DType::kInt32});
  c.dtype(in.cu_k, "cu_seqlens_k", {DType::kInt32});
}

// An lse-like float32 [h_q, total_q] tensor may be the transposed view FlashMLA allocates, so
// only its strides' signs matter.
void any_strides(const Checker& c, const TensorView& t, const char* arg) {
  for (int i = 0; i < t.rank; ++i)
    if (t.stride[i] < 0 || t.shape[i] < 0)
      c.fail(arg, ErrorKind::kValue, "has a negative stride or dimension");
  if (t.numel() > 0 && t.data == nullptr)
    c.fail(arg, ErrorKind::kValue, "has a null data pointer but shape " + t.shape_str());
}

MhaVarlenProblem varlen_shapes(const Checker& c, const VarlenInputs& in) {
  MhaVarlenProblem pb{};
  pb.total_q = in.q.shape[0];
  pb.h_q = static_cast<int>(in.q.shape[1]);
  pb.d_qk = static_cast<int>(in.q.shape[2]);
  c.at_least("q", "h_q (dim 1)", pb.h_q, 1);
  if (pb.d_qk != 128 && pb.d_qk != 192)
    c.fail("q", ErrorKind::kValue,
           "expected head dim d_qk (dim 2) 128 or 192, got " + std::to_string(pb.d_qk));
  pb.total_k = in.k.shape[0];
  pb.h_kv = static_cast<int>(in.k.shape[1]);
  c.at_least("k", "h_kv (dim 1)", pb.h_kv, 1);
  if (pb.h_q % pb.h_kv != 0)
    c.fail("k", ErrorKind::kValue,
           "expected h_kv (dim 1) to divide h_q = " + std::to_string(pb.h_q) + ", got h_kv = " +
               std::to_string(pb.h_kv));
  if (in.k.shape[2] != pb.d_qk)
    c.fail("k", ErrorKind::kValue,
           "expected head dim (dim 2) = d_qk of q = " + std::to_string(pb.d_qk) + ", got shape " +
               in.k.shape_str());
  pb.d_v = static_cast<int>(in.v.shape[2]);
  if (pb.d_v != 128)
    c.fail("v", ErrorKind::kValue, "expected head dim d_v (dim 2) 128, got " +
                                       std::to_string(pb.d_v));
  if (in.v.shape[0] != pb.total_k || in.v.shape[1] != pb.h_kv)
    c.fail("v", ErrorKind::kValue,
           "expected shape [total_k, h_kv, d_v] = [" + std::to_string(pb.total_k) + ", " +
               std::to_string(pb.h_kv) + ", 128] (matching k), got " + in.v.shape_str());
  c.at_least("cu_seqlens_q", "length b + 1", in.cu_q.shape[0], 2);
  pb.b = in.cu_q.shape[0] - 1;
  c.shape(in.cu_k, "cu_seqlens_k", {pb.b + 1}, "[b + 1]");
  c.at_least("max_seqlen_q", "max_seqlen_q", in.max_q, 0);
  c.at_least("max_seqlen_k", "max_seqlen_k", in.max_k, 0);
  pb.scale = c.scale(in.scale, "softmax_scale", pb.d_qk);
  pb.is_fp16 = in.q.dtype == DType::kFloat16;
  return pb;
}

// The offsets' values, when host-resident: start at 0, non-decreasing, within the tensors, no
// sequence longer than its max_seqlen.
void varlen_offsets(const Checker& c, const VarlenInputs& in, const MhaVarlenProblem& pb) {
  if (!in.q.device.is_cpu()) return;
  auto check_cu = [&](const TensorView& cu, const char* arg, int64_t total, int max_len,
                      const char* max_arg) {
    if (at(cu, 0) != 0)
      c.fail(arg, ErrorKind::kValue, "expected element 0 to be 0, got " +
                                         std::to_string(at(cu, 0)));
    for (int64_t r = 0; r < pb.b; ++r) {
      const int32_t lo = at(cu, r), hi = at(cu, r + 1);
      if (hi < lo || hi > total)
        c.fail(arg, ErrorKind::kValue,
               "expected non-decreasing offsets <= " + std::to_string(total) + ", got [" +
                   std::to_string(r) + "] = " + std::to_string(lo) + ", [" +
                   std::to_string(r + 1) + "] = " + std::to_string(hi));
      if (hi - lo > max_len)
        c.fail(max_arg, ErrorKind::kValue,
               "is " + std::to_string(max_len) + " but sequence " + std::to_string(r) +
                   " has length " + std::to_string(hi - lo));
    }
  };
  check_cu(in.cu_q, "cu_seqlens_q", pb.total_q, in.max_q, "max_seqlen_q");
  check_cu(in.cu_k, "cu_seqlens_k", pb.total_k, in.max_k, "max_seqlen_k");
}

}  // namespace

MhaVarlenProblem validate_mha_varlen_fwd(const MhaVarlenFwdParams& p) {
  const Checker c("mha_varlen_fwd");
  const VarlenInputs in{p.q, p.k, p.v, p.cu_seqlens_q, p.cu_seqlens_k,
                        p.max_seqlen_q, p.max_seqlen_k, p.softmax_scale};
  varlen_present(c, in);
  c.present(p.out, "out");
  c.rank(p.out, "out", 3, "[total_q, h_q, d_v]");
  c.present(p.lse, "lse");
  c.rank(p.lse, "lse", 2, "[h_q, total_q]");

  check_devices_and_layouts(c, p.q.device,
                            {{&p.k, "k"}, {&p.v, "v"}, {&p.cu_seqlens_q, "cu_seqlens_q"},
                             {&p.cu_seqlens_k, "cu_seqlens_k"}, {&p.out, "out"}, {&p.lse, "lse"}});
  varlen_dtypes(c, in);
  c.dtype(p.out, "out", {p.q.dtype});
  c.dtype(p.lse, "lse", {DType::kFloat32});
  check_layouts(c, {{&p.q, "q"}, {&p.k, "k"}, {&p.v, "v"}, {&p.cu_seqlens_q, "cu_seqlens_q"},
                    {&p.cu_seqlens_k, "cu_seqlens_k"}, {&p.out, "out"}});
  any_strides(c, p.lse, "lse");

  const MhaVarlenProblem pb = varlen_shapes(c, in);
  c.shape(p.out, "out", {pb.total_q, pb.h_q, pb.d_v}, "[total_q, h_q, d_v]");
  c.shape(p.lse, "lse", {pb.h_q, pb.total_q}, "[h_q, total_q]");
  varlen_offsets(c, in, pb);
  return pb;
}

MhaVarlenProblem validate_mha_varlen_bwd(const MhaVarlenBwdParams& p) {
  const Checker c("mha_varlen_bwd");
  const VarlenInputs in{p.q, p.k, p.v, p.cu_seqlens_q, p.cu_seqlens_k,
                        p.max_seqlen_q, p.max_seqlen_k, p.softmax_scale};
  c.present(p.dout, "dout");
  c.rank(p.dout, "dout", 3, "[total_q, h_q, d_v]");
  varlen_present(c, in);
  c.present(p.out, "out");
  c.rank(p.out, "out", 3, "[total_q, h_q, d_v]");
  c.present(p.lse, "lse");
  c.rank(p.lse, "lse", 2, "[h_q, total_q]");
  if (p.dlse.defined()) c.rank(p.dlse, "dlse", 2, "[h_q, total_q]");
  c.present(p.dq, "dq");
  c.rank(p.dq, "dq", 3, "[total_q, h_q, d_qk]");
  c.present(p.dk, "dk");
  c.rank(p.dk, "dk", 3, "[total_k, h_kv, d_qk]");
  c.present(p.dv, "dv");
  c.rank(p.dv, "dv", 3, "[total_k, h_kv, d_v]");

  check_devices_and_layouts(
      c, p.q.device,
      {{&p.dout, "dout"}, {&p.k, "k"}, {&p.v, "v"}, {&p.out, "out"}, {&p.lse, "lse"},
       {&p.dlse, "dlse"}, {&p.cu_seqlens_q, "cu_seqlens_q"}, {&p.cu_seqlens_k, "cu_seqlens_k"},
       {&p.dq, "dq"}, {&p.dk, "dk"}, {&p.dv, "dv"}});
  varlen_dtypes(c, in);
  for (auto [t, name] : {std::pair{&p.dout, "dout"}, {&p.out, "out"}, {&p.dq, "dq"},
                         {&p.dk, "dk"}, {&p.dv, "dv"}})
    c.dtype(*t, name, {p.q.dtype});
  c.dtype(p.lse, "lse", {DType::kFloat32});
  if (p.dlse.defined()) c.dtype(p.dlse, "dlse", {DType::kFloat32});
  check_layouts(c, {{&p.dout, "dout"}, {&p.q, "q"}, {&p.k, "k"}, {&p.v, "v"}, {&p.out, "out"},
                    {&p.cu_seqlens_q, "cu_seqlens_q"}, {&p.cu_seqlens_k, "cu_seqlens_k"},
                    {&p.dq, "dq"}, {&p.dk, "dk"}, {&p.dv, "dv"}});
  any_strides(c, p.lse, "lse");
  if (p.dlse.defined()) any_strides(c, p.dlse, "dlse");

  const MhaVarlenProblem pb = varlen_shapes(c, in);
  c.shape(p.dout, "dout", {pb.total_q, pb.h_q, pb.d_v}, "[total_q, h_q, d_v]");
  c.shape(p.out, "out", {pb.total_q, pb.h_q, pb.d_v}, "[total_q, h_q, d_v]");
  c.shape(p.lse, "lse", {pb.h_q, pb.total_q}, "[h_q, total_q]");
  if (p.dlse.defined()) c.shape(p.dlse, "dlse", {pb.h_q, pb.total_q}, "[h_q, total_q]");
  c.shape(p.dq, "dq", {pb.total_q, pb.h_q, pb.d_qk}, "[total_q, h_q, d_qk]");
  c.shape(p.dk, "dk", {pb.total_k, pb.h_kv, pb.d_qk}, "[total_k, h_kv, d_qk]");
  c.shape(p.dv, "dv", {pb.total_k, pb.h_kv, pb.d_v}, "[total_k, h_kv, d_v]");
  varlen_offsets(c, in, pb);
  return pb;
}

// ---- FP8 codecs -------------------------------------------------------------------------------

KVCodecProblem validate_kv_codec(const char* op, KVCacheLayout layout, const TensorView& k_cache,
                                 const TensorView& quant_cache, bool quant_is_output) {
  const Checker c(op);
  // The input is validated first, so errors name the input before the output.
  const TensorView& first = quant_is_output ? k_cache : quant_cache;
  const char* first_name = quant_is_output ? "k_cache" : "quant_cache";
  const TensorView& second = quant_is_output ? quant_cache : k_cache;
  const char* second_name = quant_is_output ? "quant_cache" : "k_cache";
  c.present(first, first_name);
  c.rank(first, first_name, 4, "[num_blocks, page_block_size, 1, d]");
  c.present(second, second_name);
  c.rank(second, second_name, 4, "[num_blocks, page_block_size, 1, d]");
  c.same_device(second, second_name, first.device);
  const std::initializer_list<DType> bf16 = {DType::kBFloat16};
  const std::initializer_list<DType> bytes = {DType::kUInt8, DType::kFloat8E4M3};
  c.dtype(first, first_name, quant_is_output ? bf16 : bytes);
  c.dtype(second, second_name, quant_is_output ? bytes : bf16);
  c.layout(first, first_name);
  c.layout(second, second_name);
  const int d = kv_layout_dim(layout);
  if (k_cache.shape[3] != d || k_cache.shape[2] != 1)
    c.fail("k_cache", ErrorKind::kValue,
           std::string("expected shape [num_blocks, page_block_size, 1, ") + std::to_string(d) +
               "] for the " + kv_layout_name(layout) + " layout, got " + k_cache.shape_str());
  c.at_least("k_cache", "page_block_size (dim 1)", k_cache.shape[1], 1);
  check_fp8_cache(c, quant_cache, "quant_cache", layout);
  if (quant_cache.shape[0] != k_cache.shape[0] || quant_cache.shape[1] != k_cache.shape[1])
    c.fail("quant_cache", ErrorKind::kValue,
           "expected num_blocks and page_block_size (dims 0, 1) equal to k_cache's " +
               k_cache.shape_str() + ", got " + quant_cache.shape_str());
  KVCodecProblem pb{};
  pb.layout = layout;
  pb.num_blocks = k_cache.shape[0];
  pb.page_block_size = static_cast<int>(k_cache.shape[1]);
  pb.quant_block_stride_bytes = block_stride_bytes(
      quant_cache, layout == KVCacheLayout::kV32 ? pb.page_block_size * v32::kBytesPerToken
                                                 : model1::min_block_bytes(pb.page_block_size));
  return pb;
}

}  // namespace flashmla
