// Bad inputs: every invalid argument throws flashmla::ArgumentError naming the params-struct
// field (argument()), with kind() kType for a wrong dtype and kValue for everything else, and a
// message that names the argument; nothing crashes. Checks run in a fixed order (presence, rank,
// device, dtype, layout, shapes, cross-argument consistency, host-readable values), so when two
// arguments are wrong the earlier check names its argument; the Order tests pin that down.
//
// Each fixture builds one small valid problem with the harness, checks that it runs, then
// breaks one thing at a time on a copy of the params.
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>

#include "cases.h"
#include "core/decode_schedule.h"
#include "flashmla/flashmla.h"
#include "harness.h"
#include "test_util.h"

namespace flashmla::test {
namespace {

constexpr ErrorKind kValue = ErrorKind::kValue;
constexpr ErrorKind kType = ErrorKind::kType;
constexpr float kNaNF = std::numeric_limits<float>::quiet_NaN();
constexpr float kInfF = std::numeric_limits<float>::infinity();

const char* kind_name(ErrorKind k) {
  switch (k) {
    case ErrorKind::kValue:
      return "kValue";
    case ErrorKind::kType:
      return "kType";
    case ErrorKind::kNotImplemented:
      return "kNotImplemented";
    case ErrorKind::kCuda:
      return "kCuda";
  }
  return "?";
}

// Runs f; succeeds when it throws ArgumentError with argument() in `args`, the given kind, and
// a message containing the argument's name.
::testing::AssertionResult throws_argument_error(const std::function<void()>& f,
                                                 std::initializer_list<const char*> args,
                                                 ErrorKind kind) {
  std::string want;
  for (const char* a : args) want += (want.empty() ? "" : " or ") + std::string("'") + a + "'";
  try {
    f();
  } catch (const ArgumentError& e) {
    bool name_ok = false;
    for (const char* a : args) name_ok |= e.argument() == a;
    const bool msg_ok = std::string(e.what()).find(e.argument()) != std::string::npos;
    if (name_ok && e.kind() == kind && msg_ok) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << "threw ArgumentError(argument '" << e.argument() << "', " << kind_name(e.kind())
           << "), expected argument " << want << ", " << kind_name(kind)
           << (msg_ok ? "" : "; the message does not name the argument")
           << "; message: " << e.what();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure()
           << "threw another exception (expected ArgumentError " << want << "): " << e.what();
  } catch (...) {
    return ::testing::AssertionFailure() << "threw a non-std exception";
  }
  return ::testing::AssertionFailure()
         << "did not throw (expected ArgumentError " << want << ", " << kind_name(kind) << ")";
}

#define EXPECT_ARG_ERROR(stmt, name, kind) \
  EXPECT_TRUE(throws_argument_error([&] { stmt; }, {name}, kind)) << "statement: " #stmt
// f: a callable; the names follow the kind.
#define EXPECT_ARG_ERROR_ANY_OF(f, kind, ...) \
  EXPECT_TRUE(throws_argument_error(f, {__VA_ARGS__}, kind)) << "call: " #f

TensorView on_cuda(TensorView t) {
  t.device = cuda_device(0);
  return t;
}
TensorView with_dtype(TensorView t, DType d) {
  t.dtype = d;
  return t;
}
TensorView with_dim(TensorView t, int dim, int64_t size) {
  t.shape[dim] = size;
  return t;
}
TensorView with_rank(TensorView t, int rank) {
  t.rank = rank;
  return t;
}
TensorView with_stride(TensorView t, int dim, int64_t stride) {
  t.stride[dim] = stride;
  return t;
}
TensorView with_null_data(TensorView t) {
  t.data = nullptr;
  return t;
}

// ---- dense decode -----------------------------------------------------------------------------

class DenseDecodeBadInput : public ::testing::Test {
 protected:
  // b = 2, s_q = 2, h_q = 4, h_kv = 2, d_qk = 576, page 16: 2 and 1 pages used, 2 unused blocks.
  DenseDecodeCase c{.b = 2, .s_q = 2, .h_q = 4, .h_kv = 2, .page = 16, .seqlens = {20, 5}};
  Rng rng{fresh_seed()};
  DenseDecodeInputs in = make_dense_decode_inputs(c, rng);
  DenseDecodeOutputs out = make_dense_decode_outputs(c);
  DecodePlan plan = dense_decode_plan_info(c.b, c.s_q, c.h_q, c.h_kv, 512, c.causal, kCPU);
  HostTensor sched{DType::kInt32, {plan.sched_meta_elems}};
  HostTensor ws{DType::kUInt8, {plan.workspace_bytes}};

  void SetUp() override { dense_decode_plan({plan, in.cache_seqlens.view(), sched.view()}); }

  DenseDecodeParams valid() const {
    DenseDecodeParams p = dense_decode_params(c, in, out, host_view);
    p.plan = plan;
    p.sched_meta = sched.view();
    p.workspace = ws.view();
    return p;
  }
  int64_t num_blocks() const { return in.k_cache.size(0); }
};

#define DENSE_BAD(mutation, name, kind)                                        \
  do {                                                                         \
    DenseDecodeParams p = valid();                                             \
    mutation;                                                                  \
    EXPECT_TRUE(throws_argument_error([&] { dense_decode(p); }, {name}, kind)) \
        << "after: " #mutation;                                                \
  } while (0)

TEST_F(DenseDecodeBadInput, ValidProblemRuns) { EXPECT_NO_THROW(dense_decode(valid())); }

TEST_F(DenseDecodeBadInput, MissingOrWrongRank) {
  DENSE_BAD(p.q = TensorView{}, "q", kValue);
  DENSE_BAD(p.q = with_rank(p.q, 3), "q", kValue);
  DENSE_BAD(p.k_cache = TensorView{}, "k_cache", kValue);
  DENSE_BAD(p.k_cache = with_rank(p.k_cache, 3), "k_cache", kValue);
  DENSE_BAD(p.block_table = TensorView{}, "block_table", kValue);
  DENSE_BAD(p.block_table = with_rank(p.block_table, 1), "block_table", kValue);
  DENSE_BAD(p.cache_seqlens = TensorView{}, "cache_seqlens", kValue);
  DENSE_BAD(p.cache_seqlens = with_rank(p.cache_seqlens, 2), "cache_seqlens", kValue);
  DENSE_BAD(p.out = TensorView{}, "out", kValue);
  DENSE_BAD(p.out = with_rank(p.out, 3), "out", kValue);
  DENSE_BAD(p.lse = TensorView{}, "lse", kValue);
  DENSE_BAD(p.lse = with_rank(p.lse, 2), "lse", kValue);
  DENSE_BAD(p.sched_meta = TensorView{}, "sched_meta", kValue);
  DENSE_BAD(p.workspace = TensorView{}, "workspace", kValue);
}

TEST_F(DenseDecodeBadInput, DeviceMismatchNamesTheArgument) {
  DENSE_BAD(p.k_cache = on_cuda(p.k_cache), "k_cache", kValue);
  DENSE_BAD(p.block_table = on_cuda(p.block_table), "block_table", kValue);
  DENSE_BAD(p.cache_seqlens = on_cuda(p.cache_seqlens), "cache_seqlens", kValue);
  DENSE_BAD(p.out = on_cuda(p.out), "out", kValue);
  DENSE_BAD(p.lse = on_cuda(p.lse), "lse", kValue);
  DENSE_BAD(p.sched_meta = on_cuda(p.sched_meta), "sched_meta", kValue);
  DENSE_BAD(p.workspace = on_cuda(p.workspace), "workspace", kValue);
}

TEST_F(DenseDecodeBadInput, WrongDtype) {
  DENSE_BAD(p.q = with_dtype(p.q, DType::kFloat32), "q", kType);
  DENSE_BAD(p.k_cache = with_dtype(p.k_cache, DType::kFloat16), "k_cache", kType);
  DENSE_BAD(p.block_table = with_dtype(p.block_table, DType::kFloat32), "block_table", kType);
  DENSE_BAD(p.cache_seqlens = with_dtype(p.cache_seqlens, DType::kUInt8), "cache_seqlens", kType);
  DENSE_BAD(p.out = with_dtype(p.out, DType::kFloat16), "out", kType);
  DENSE_BAD(p.out = with_dtype(p.out, DType::kFloat32), "out", kType);
  DENSE_BAD(p.lse = with_dtype(p.lse, DType::kBFloat16), "lse", kType);
  DENSE_BAD(p.sched_meta = with_dtype(p.sched_meta, DType::kUInt8), "sched_meta", kType);
  DENSE_BAD(p.workspace = with_dtype(p.workspace, DType::kFloat32), "workspace", kType);
}

TEST_F(DenseDecodeBadInput, BadLayout) {
  DENSE_BAD(p.q = with_stride(p.q, 3, 2), "q", kValue);  // last dim not contiguous
  DENSE_BAD(p.k_cache = with_stride(p.k_cache, 0, -p.k_cache.stride[0]), "k_cache", kValue);
  DENSE_BAD(p.out = with_stride(p.out, 3, 2), "out", kValue);
  DENSE_BAD(p.lse = with_stride(p.lse, 0, -1), "lse", kValue);
  DENSE_BAD(p.q = with_null_data(p.q), "q", kValue);
  DENSE_BAD(p.k_cache = with_null_data(p.k_cache), "k_cache", kValue);
  DENSE_BAD(p.block_table = with_null_data(p.block_table), "block_table", kValue);
  DENSE_BAD(p.out = with_null_data(p.out), "out", kValue);
  DENSE_BAD(p.lse = with_null_data(p.lse), "lse", kValue);
}

TEST_F(DenseDecodeBadInput, WrongShapes) {
  // Unsupported head dim (q and cache agree, so q is the one named).
  DENSE_BAD((p.q = with_dim(p.q, 3, 128), p.k_cache = with_dim(p.k_cache, 3, 128)), "q", kValue);
  DENSE_BAD(p.q = with_dim(p.q, 0, 0), "q", kValue);  // b = 0
  DENSE_BAD(p.head_dim_v = 256, "head_dim_v", kValue);
  DENSE_BAD(p.head_dim_v = 576, "head_dim_v", kValue);
  DENSE_BAD(p.k_cache = with_dim(p.k_cache, 2, 3), "k_cache", kValue);  // h_kv 3 does not divide 4
  DENSE_BAD(p.k_cache = with_dim(p.k_cache, 1, 0), "k_cache", kValue);  // page_block_size 0
  DENSE_BAD(p.k_cache = with_dim(p.k_cache, 3, 512), "k_cache", kValue);  // d_qk differs from q
  DENSE_BAD(p.block_table = with_dim(p.block_table, 0, 3), "block_table", kValue);
  DENSE_BAD(p.cache_seqlens = with_dim(p.cache_seqlens, 0, 1), "cache_seqlens", kValue);
  DENSE_BAD(p.out = with_dim(p.out, 3, 256), "out", kValue);
  DENSE_BAD(p.out = with_dim(p.out, 2, 2), "out", kValue);
  DENSE_BAD(p.lse = with_dim(p.lse, 2, 4), "lse", kValue);
  DENSE_BAD((p.lse.shape[1] = 2, p.lse.shape[2] = 4), "lse", kValue);  // [b, s_q, h_q]
}

TEST_F(DenseDecodeBadInput, PlanScheduleAndScale) {
  DENSE_BAD(p.plan.b = 3, "plan", kValue);
  DENSE_BAD(p.plan.causal = !p.plan.causal, "plan", kValue);
  DENSE_BAD(p.plan.h_kv = 1, "plan", kValue);
  DENSE_BAD(p.plan.s_q = 1, "plan", kValue);
  DENSE_BAD(p.plan.device = cuda_device(0), "plan", kValue);
  DENSE_BAD(p.sched_meta = with_dim(p.sched_meta, 0, plan.sched_meta_elems - 1), "sched_meta",
            kValue);
  // num_parts raised by hand, sizes kept: the schedule and the partial slots outgrow the buffers
  DENSE_BAD(p.plan.num_parts += 8, "sched_meta", kValue);
  HostTensor big_sched(DType::kInt32, {sched::meta_elems(plan.b, plan.num_parts + 8)});
  DENSE_BAD((p.plan.num_parts += 8, p.sched_meta = big_sched.view()), "workspace", kValue);
  if (plan.workspace_bytes > 0)
    DENSE_BAD(p.workspace = with_dim(p.workspace, 0, plan.workspace_bytes - 1), "workspace",
              kValue);
  for (float s : {kNaNF, kInfF, -kInfF, 0.0f, -0.5f})
    DENSE_BAD(p.softmax_scale = s, "softmax_scale", kValue);
  // A schedule buffer that dense_decode_plan() never wrote.
  HostTensor garbage(DType::kInt32, {plan.sched_meta_elems});
  garbage.poison();
  auto run_unplanned = [&] {
    DenseDecodeParams p = valid();
    p.sched_meta = garbage.view();
    dense_decode(p);
  };
  EXPECT_ARG_ERROR_ANY_OF(run_unplanned, kValue, "sched_meta", "plan");
}

TEST_F(DenseDecodeBadInput, BadValues) {
  const int64_t capacity = in.block_table.size(1) * c.page;
  for (int32_t bad : {-1, INT32_MIN, static_cast<int32_t>(capacity + 1)}) {
    const HostTensor lens = int32_tensor({bad, 5});
    DENSE_BAD(p.cache_seqlens = lens.view(), "cache_seqlens", kValue);
  }
  // A block id used by request 0 (page 1 of its 2) outside [0, num_blocks).
  for (int32_t bad : {-1, static_cast<int32_t>(num_blocks()), INT32_MAX}) {
    HostTensor table = in.block_table.clone();
    table.ptr<int32_t>()[table.offset({0, 1})] = bad;
    DENSE_BAD(p.block_table = table.view(), "block_table", kValue);
  }
  // Garbage past a request's pages is never read: no error.
  HostTensor table = in.block_table.clone();
  table.ptr<int32_t>()[table.offset({1, 1})] = INT32_MIN;
  table.ptr<int32_t>()[table.offset({1, table.size(1) - 1})] = -7;
  DenseDecodeParams p = valid();
  p.block_table = table.view();
  EXPECT_NO_THROW(dense_decode(p));
}

// Two problems at once: the check that runs first names its argument.
TEST_F(DenseDecodeBadInput, Order) {
  // rank before dtype
  DENSE_BAD((p.q = with_rank(p.q, 3), p.k_cache = with_dtype(p.k_cache, DType::kFloat32)), "q",
            kValue);
  // every rank check before any dtype check
  DENSE_BAD((p.q = with_dtype(p.q, DType::kFloat32), p.out = with_rank(p.out, 3)), "out", kValue);
  // device before dtype
  DENSE_BAD(p.k_cache = with_dtype(on_cuda(p.k_cache), DType::kFloat32), "k_cache", kValue);
  // dtype before layout
  DENSE_BAD((p.q = with_stride(p.q, 3, 2), p.lse = with_dtype(p.lse, DType::kBFloat16)), "lse",
            kType);
  // dtype before shapes
  DENSE_BAD(
      (p.out = with_dim(p.out, 3, 256), p.block_table = with_dtype(p.block_table, DType::kFloat32)),
      "block_table", kType);
  // layout before shapes
  DENSE_BAD((p.out = with_dim(p.out, 3, 256), p.q = with_stride(p.q, 3, 2)), "q", kValue);
  // shapes before cross-argument consistency and values
  const HostTensor lens = int32_tensor({-1, 5});
  DENSE_BAD((p.out = with_dim(p.out, 3, 256), p.cache_seqlens = lens.view()), "out", kValue);
  DENSE_BAD((p.plan.b = 3, p.lse = with_dim(p.lse, 2, 4)), "lse", kValue);
  // cross-argument consistency before values
  DENSE_BAD((p.plan.b = 3, p.cache_seqlens = lens.view()), "plan", kValue);
}

// ---- dense decode plan --------------------------------------------------------------------------

TEST_F(DenseDecodeBadInput, PlanStep) {
  auto bad = [&](auto mutate, const char* name, ErrorKind kind) {
    DensePlanParams pp{plan, in.cache_seqlens.view(), sched.view()};
    mutate(pp);
    EXPECT_ARG_ERROR(dense_decode_plan(pp), name, kind);
  };
  bad([](DensePlanParams& pp) { pp.cache_seqlens = TensorView{}; }, "cache_seqlens", kValue);
  bad([](DensePlanParams& pp) { pp.sched_meta = TensorView{}; }, "sched_meta", kValue);
  bad([](DensePlanParams& pp) { pp.cache_seqlens = with_dtype(pp.cache_seqlens, DType::kFloat32); },
      "cache_seqlens", kType);
  bad([](DensePlanParams& pp) { pp.sched_meta = with_dtype(pp.sched_meta, DType::kFloat32); },
      "sched_meta", kType);
  bad([](DensePlanParams& pp) { pp.sched_meta = on_cuda(pp.sched_meta); }, "sched_meta", kValue);
  bad([](DensePlanParams& pp) { pp.sched_meta.shape[0] -= 1; }, "sched_meta", kValue);
  bad([](DensePlanParams& pp) { pp.cache_seqlens.shape[0] = 1; }, "cache_seqlens", kValue);
  bad([](DensePlanParams& pp) { pp.plan.num_parts = 0; }, "plan", kValue);
  // A plan edited by hand: more parts need a larger schedule than sched_meta_elems says.
  bad([](DensePlanParams& pp) { pp.plan.num_parts += 8; }, "sched_meta", kValue);
  bad([](DensePlanParams& pp) { pp.plan.device = cuda_device(0); }, "plan", kValue);
  const HostTensor lens = int32_tensor({-3, 5});
  bad([&](DensePlanParams& pp) { pp.cache_seqlens = lens.view(); }, "cache_seqlens", kValue);
}

TEST(DenseDecodePlanInfo, RejectsBadShapes) {
  EXPECT_ARG_ERROR(dense_decode_plan_info(0, 1, 8, 1, 512, false, kCPU), "b", kValue);
  EXPECT_ARG_ERROR(dense_decode_plan_info(2, 0, 8, 1, 512, false, kCPU), "s_q", kValue);
  EXPECT_ARG_ERROR(dense_decode_plan_info(2, 1, 0, 1, 512, false, kCPU), "h_q", kValue);
  EXPECT_ARG_ERROR(dense_decode_plan_info(2, 1, 8, 3, 512, false, kCPU), "h_kv", kValue);
  EXPECT_ARG_ERROR(dense_decode_plan_info(2, 1, 8, 1, 256, false, kCPU), "head_dim_v", kValue);
}

// ---- sparse decode ----------------------------------------------------------------------------

class SparseDecodeBadInput : public ::testing::Test {
 protected:
  SparseDecodeCase c{
      .b = 2,
      .s_q = 2,
      .h_q = 4,
      .d_qk = 576,
      .main = {.page = 16, .tokens = 64, .topk = 8, .topk_length = true},
      .extra = SparseScopeSpec{.page = 4, .tokens = 16, .topk = 4, .topk_length = true},
      .sink = Sink::kFinite};
  Rng rng{fresh_seed()};
  SparseDecodeInputs in = make_sparse_decode_inputs(c, rng);
  SparseDecodeOutputs out = make_sparse_decode_outputs(c);

  SparseDecodeParams valid() const { return sparse_decode_params(c, in, out, host_view); }
};

#define SPARSE_BAD(mutation, name, kind)                                        \
  do {                                                                          \
    SparseDecodeParams p = valid();                                             \
    mutation;                                                                   \
    EXPECT_TRUE(throws_argument_error([&] { sparse_decode(p); }, {name}, kind)) \
        << "after: " #mutation;                                                 \
  } while (0)

TEST_F(SparseDecodeBadInput, ValidProblemRuns) {
  EXPECT_NO_THROW(sparse_decode(valid()));
  // Optional arguments may be absent.
  SparseDecodeParams p = valid();
  p.topk_length = p.attn_sink = p.extra_k_cache = p.extra_indices = p.extra_topk_length =
      TensorView{};
  EXPECT_NO_THROW(sparse_decode(p));
}

TEST_F(SparseDecodeBadInput, MissingWrongRankOrDevice) {
  SPARSE_BAD(p.q = TensorView{}, "q", kValue);
  SPARSE_BAD(p.q = with_rank(p.q, 3), "q", kValue);
  SPARSE_BAD(p.k_cache = TensorView{}, "k_cache", kValue);
  SPARSE_BAD(p.k_cache = with_rank(p.k_cache, 3), "k_cache", kValue);
  SPARSE_BAD(p.indices = TensorView{}, "indices", kValue);
  SPARSE_BAD(p.indices = with_rank(p.indices, 2), "indices", kValue);
  SPARSE_BAD(p.topk_length = with_rank(p.topk_length, 2), "topk_length", kValue);
  SPARSE_BAD(p.attn_sink = with_rank(p.attn_sink, 2), "attn_sink", kValue);
  SPARSE_BAD(p.extra_indices = TensorView{}, "extra_indices", kValue);  // extra cache without
  SPARSE_BAD((p.extra_k_cache = TensorView{}, p.extra_topk_length = TensorView{}), "extra_indices",
             kValue);  // extra indices without a cache
  SPARSE_BAD(p.out = TensorView{}, "out", kValue);
  SPARSE_BAD(p.lse = with_rank(p.lse, 2), "lse", kValue);
  SPARSE_BAD(p.k_cache = on_cuda(p.k_cache), "k_cache", kValue);
  SPARSE_BAD(p.indices = on_cuda(p.indices), "indices", kValue);
  SPARSE_BAD(p.topk_length = on_cuda(p.topk_length), "topk_length", kValue);
  SPARSE_BAD(p.attn_sink = on_cuda(p.attn_sink), "attn_sink", kValue);
  SPARSE_BAD(p.extra_k_cache = on_cuda(p.extra_k_cache), "extra_k_cache", kValue);
  SPARSE_BAD(p.extra_indices = on_cuda(p.extra_indices), "extra_indices", kValue);
  SPARSE_BAD(p.extra_topk_length = on_cuda(p.extra_topk_length), "extra_topk_length", kValue);
  SPARSE_BAD(p.out = on_cuda(p.out), "out", kValue);
  SPARSE_BAD(p.lse = on_cuda(p.lse), "lse", kValue);
}

TEST_F(SparseDecodeBadInput, WrongDtype) {
  SPARSE_BAD(p.q = with_dtype(p.q, DType::kFloat16), "q", kType);
  SPARSE_BAD(p.k_cache = with_dtype(p.k_cache, DType::kBFloat16), "k_cache", kType);
  SPARSE_BAD(p.indices = with_dtype(p.indices, DType::kFloat32), "indices", kType);
  SPARSE_BAD(p.topk_length = with_dtype(p.topk_length, DType::kFloat32), "topk_length", kType);
  SPARSE_BAD(p.attn_sink = with_dtype(p.attn_sink, DType::kBFloat16), "attn_sink", kType);
  SPARSE_BAD(p.extra_k_cache = with_dtype(p.extra_k_cache, DType::kInt32), "extra_k_cache", kType);
  SPARSE_BAD(p.extra_indices = with_dtype(p.extra_indices, DType::kUInt8), "extra_indices", kType);
  SPARSE_BAD(p.out = with_dtype(p.out, DType::kFloat16), "out", kType);
  SPARSE_BAD(p.lse = with_dtype(p.lse, DType::kBFloat16), "lse", kType);
}

TEST_F(SparseDecodeBadInput, WrongShapesAndLayouts) {
  SPARSE_BAD(p.q = with_dim(p.q, 3, 128), "q", kValue);
  SPARSE_BAD(p.q = with_stride(p.q, 3, 2), "q", kValue);
  SPARSE_BAD(p.head_dim_v = 576, "head_dim_v", kValue);
  SPARSE_BAD(p.k_cache = with_dim(p.k_cache, 3, 584), "k_cache", kValue);  // MODEL1 bytes, d 576
  SPARSE_BAD(p.k_cache = with_dim(p.k_cache, 3, 576), "k_cache", kValue);
  SPARSE_BAD(p.k_cache = with_dim(p.k_cache, 2, 2), "k_cache", kValue);  // h_kv must be 1
  SPARSE_BAD(p.k_cache = with_dim(p.k_cache, 1, 0), "k_cache", kValue);  // page 0
  SPARSE_BAD(p.k_cache = with_stride(p.k_cache, 0, 16 * v32::kBytesPerToken - 16), "k_cache",
             kValue);  // blocks overlap
  SPARSE_BAD(p.k_cache = with_null_data(p.k_cache), "k_cache", kValue);
  SPARSE_BAD(p.indices = with_dim(p.indices, 0, 3), "indices", kValue);
  SPARSE_BAD(p.indices = with_dim(p.indices, 1, 1), "indices", kValue);
  SPARSE_BAD(p.topk_length = with_dim(p.topk_length, 0, 3), "topk_length", kValue);
  SPARSE_BAD(p.attn_sink = with_dim(p.attn_sink, 0, 5), "attn_sink", kValue);
  SPARSE_BAD(p.extra_k_cache = with_dim(p.extra_k_cache, 3, 584), "extra_k_cache", kValue);
  SPARSE_BAD(p.extra_indices = with_dim(p.extra_indices, 0, 1), "extra_indices", kValue);
  SPARSE_BAD(p.extra_topk_length = with_dim(p.extra_topk_length, 0, 1), "extra_topk_length",
             kValue);
  SPARSE_BAD(p.out = with_dim(p.out, 3, 576), "out", kValue);
  SPARSE_BAD(p.lse = with_dim(p.lse, 1, 2), "lse", kValue);
  for (float s : {kNaNF, kInfF, 0.0f, -1.0f})
    SPARSE_BAD(p.softmax_scale = s, "softmax_scale", kValue);
}

TEST_F(SparseDecodeBadInput, BadValues) {
  for (int32_t bad : {-1, 9}) {  // topk = 8, extra_topk = 4
    const HostTensor len = int32_tensor({bad, 2});
    SPARSE_BAD(p.topk_length = len.view(), "topk_length", kValue);
  }
  const HostTensor extra_len = int32_tensor({1, 5});
  SPARSE_BAD(p.extra_topk_length = extra_len.view(), "extra_topk_length", kValue);
}

// d_qk 512 picks MODEL1: a V3.2 cache (656 bytes per token) is the wrong layout.
TEST(SparseDecodeModel1BadInput, LayoutFollowsHeadDim) {
  SparseDecodeCase c{.b = 1, .h_q = 4, .d_qk = 512, .main = {.page = 16, .tokens = 32, .topk = 8}};
  Rng rng(fresh_seed());
  SparseDecodeInputs in = make_sparse_decode_inputs(c, rng);
  SparseDecodeOutputs out = make_sparse_decode_outputs(c);
  EXPECT_NO_THROW(sparse_decode(sparse_decode_params(c, in, out, host_view)));
  HostTensor v32_cache(DType::kUInt8, {2, 16, 1, v32::kBytesPerToken});
  SparseDecodeParams p = sparse_decode_params(c, in, out, host_view);
  p.k_cache = v32_cache.view();
  EXPECT_ARG_ERROR(sparse_decode(p), "k_cache", kValue);
}

// ---- sparse prefill ---------------------------------------------------------------------------

class SparsePrefillBadInput : public ::testing::Test {
 protected:
  SparsePrefillCase c{
      .s_q = 3, .s_kv = 40, .h_q = 4, .topk = 8, .topk_length = true, .sink = Sink::kFinite};
  Rng rng{fresh_seed()};
  SparsePrefillInputs in = make_sparse_prefill_inputs(c, rng);
  SparsePrefillOutputs out = make_sparse_prefill_outputs(c);

  SparsePrefillParams valid() const { return sparse_prefill_params(c, in, out, host_view); }
};

#define PREFILL_BAD(mutation, name, kind)                                        \
  do {                                                                           \
    SparsePrefillParams p = valid();                                             \
    mutation;                                                                    \
    EXPECT_TRUE(throws_argument_error([&] { sparse_prefill(p); }, {name}, kind)) \
        << "after: " #mutation;                                                  \
  } while (0)

TEST_F(SparsePrefillBadInput, ValidProblemRuns) { EXPECT_NO_THROW(sparse_prefill(valid())); }

TEST_F(SparsePrefillBadInput, Everything) {
  PREFILL_BAD(p.q = TensorView{}, "q", kValue);
  PREFILL_BAD(p.q = with_rank(p.q, 4), "q", kValue);
  PREFILL_BAD(p.kv = TensorView{}, "kv", kValue);
  PREFILL_BAD(p.indices = with_rank(p.indices, 2), "indices", kValue);
  PREFILL_BAD(p.max_logits = TensorView{}, "max_logits", kValue);
  PREFILL_BAD(p.kv = on_cuda(p.kv), "kv", kValue);
  PREFILL_BAD(p.max_logits = on_cuda(p.max_logits), "max_logits", kValue);
  PREFILL_BAD(p.q = with_dtype(p.q, DType::kFloat16), "q", kType);
  PREFILL_BAD(p.kv = with_dtype(p.kv, DType::kFloat16), "kv", kType);
  PREFILL_BAD(p.indices = with_dtype(p.indices, DType::kFloat32), "indices", kType);
  PREFILL_BAD(p.attn_sink = with_dtype(p.attn_sink, DType::kBFloat16), "attn_sink", kType);
  PREFILL_BAD(p.max_logits = with_dtype(p.max_logits, DType::kBFloat16), "max_logits", kType);
  PREFILL_BAD(p.lse = with_dtype(p.lse, DType::kBFloat16), "lse", kType);
  PREFILL_BAD(p.kv = with_stride(p.kv, 2, 2), "kv", kValue);
  PREFILL_BAD((p.q = with_dim(p.q, 2, 128), p.kv = with_dim(p.kv, 2, 128)), "q", kValue);
  PREFILL_BAD(p.kv = with_dim(p.kv, 2, 512), "kv", kValue);
  PREFILL_BAD(p.kv = with_dim(p.kv, 1, 3), "kv", kValue);  // h_kv 3 does not divide 4
  PREFILL_BAD(p.d_v = 128, "d_v", kValue);
  PREFILL_BAD(p.indices = with_dim(p.indices, 0, 2), "indices", kValue);
  PREFILL_BAD(p.indices = with_dim(p.indices, 1, 2), "indices", kValue);
  PREFILL_BAD(p.attn_sink = with_dim(p.attn_sink, 0, 3), "attn_sink", kValue);
  PREFILL_BAD(p.topk_length = with_dim(p.topk_length, 0, 2), "topk_length", kValue);
  PREFILL_BAD(p.out = with_dim(p.out, 2, 256), "out", kValue);
  PREFILL_BAD(p.max_logits = with_dim(p.max_logits, 1, 5), "max_logits", kValue);
  PREFILL_BAD(p.lse = with_dim(p.lse, 0, 2), "lse", kValue);
  for (float s : {kNaNF, kInfF, 0.0f, -1.0f}) PREFILL_BAD(p.sm_scale = s, "sm_scale", kValue);
  const HostTensor len = int32_tensor({1, 9, 2});  // > topk
  PREFILL_BAD(p.topk_length = len.view(), "topk_length", kValue);
}

// ---- dense MHA prefill ------------------------------------------------------------------------

class MhaVarlenBadInput : public ::testing::Test {
 protected:
  MhaVarlenCase c{
      .h_q = 4, .h_kv = 2, .d_qk = 128, .causal = true, .q_lens = {3, 5}, .k_lens = {4, 6}};
  Rng rng{fresh_seed()};
  MhaVarlenInputs in = make_mha_varlen_inputs(c, rng);
  MhaVarlenOutputs out = make_mha_varlen_outputs(c);

  MhaVarlenFwdParams valid() const { return mha_varlen_params(c, in, out, host_view); }
};

#define MHA_BAD(mutation, name, kind)                                            \
  do {                                                                           \
    MhaVarlenFwdParams p = valid();                                              \
    mutation;                                                                    \
    EXPECT_TRUE(throws_argument_error([&] { mha_varlen_fwd(p); }, {name}, kind)) \
        << "after: " #mutation;                                                  \
  } while (0)

TEST_F(MhaVarlenBadInput, ValidProblemRuns) { EXPECT_NO_THROW(mha_varlen_fwd(valid())); }

TEST_F(MhaVarlenBadInput, TensorsAndShapes) {
  MHA_BAD(p.q = TensorView{}, "q", kValue);
  MHA_BAD(p.k = with_rank(p.k, 2), "k", kValue);
  MHA_BAD(p.v = TensorView{}, "v", kValue);
  MHA_BAD(p.cu_seqlens_q = TensorView{}, "cu_seqlens_q", kValue);
  MHA_BAD(p.cu_seqlens_k = with_rank(p.cu_seqlens_k, 2), "cu_seqlens_k", kValue);
  MHA_BAD(p.v = on_cuda(p.v), "v", kValue);
  MHA_BAD(p.cu_seqlens_q = on_cuda(p.cu_seqlens_q), "cu_seqlens_q", kValue);
  MHA_BAD(p.q = with_dtype(p.q, DType::kFloat32), "q", kType);
  MHA_BAD(p.k = with_dtype(p.k, DType::kFloat16), "k", kType);
  MHA_BAD(p.v = with_dtype(p.v, DType::kFloat16), "v", kType);
  MHA_BAD(p.cu_seqlens_q = with_dtype(p.cu_seqlens_q, DType::kFloat32), "cu_seqlens_q", kType);
  MHA_BAD(p.cu_seqlens_k = with_dtype(p.cu_seqlens_k, DType::kUInt8), "cu_seqlens_k", kType);
  MHA_BAD(p.out = with_dtype(p.out, DType::kFloat16), "out", kType);
  MHA_BAD(p.lse = with_dtype(p.lse, DType::kBFloat16), "lse", kType);
  MHA_BAD(p.q = with_stride(p.q, 2, 3), "q", kValue);
  MHA_BAD((p.q = with_dim(p.q, 2, 64), p.k = with_dim(p.k, 2, 64)), "q", kValue);
  MHA_BAD(p.k = with_dim(p.k, 2, 192), "k", kValue);
  MHA_BAD(p.k = with_dim(p.k, 1, 3), "k", kValue);  // h_kv 3 does not divide 4
  MHA_BAD(p.v = with_dim(p.v, 2, 64), "v", kValue);
  MHA_BAD(p.v = with_dim(p.v, 0, 9), "v", kValue);  // rows differ from k
  MHA_BAD(p.cu_seqlens_k = with_dim(p.cu_seqlens_k, 0, 2), "cu_seqlens_k", kValue);
  MHA_BAD(p.out = with_dim(p.out, 2, 64), "out", kValue);
  MHA_BAD(p.lse = with_dim(p.lse, 0, 2), "lse", kValue);
  for (float s : {kNaNF, 0.0f, -2.0f}) MHA_BAD(p.softmax_scale = s, "softmax_scale", kValue);
}

TEST_F(MhaVarlenBadInput, BadOffsetsAndMaxLengths) {
  // total_q = 8, total_k = 10.
  const HostTensor q_decreasing = int32_tensor({0, 5, 3});
  MHA_BAD(p.cu_seqlens_q = q_decreasing.view(), "cu_seqlens_q", kValue);
  const HostTensor q_past_end = int32_tensor({0, 3, 9});
  MHA_BAD(p.cu_seqlens_q = q_past_end.view(), "cu_seqlens_q", kValue);
  const HostTensor q_first = int32_tensor({1, 3, 8});
  MHA_BAD(p.cu_seqlens_q = q_first.view(), "cu_seqlens_q", kValue);
  const HostTensor k_decreasing = int32_tensor({0, 6, 4});
  MHA_BAD(p.cu_seqlens_k = k_decreasing.view(), "cu_seqlens_k", kValue);
  const HostTensor k_past_end = int32_tensor({0, 4, 11});
  MHA_BAD(p.cu_seqlens_k = k_past_end.view(), "cu_seqlens_k", kValue);
  MHA_BAD(p.max_seqlen_q = 4, "max_seqlen_q", kValue);  // a sequence of 5
  MHA_BAD(p.max_seqlen_k = 5, "max_seqlen_k", kValue);  // a sequence of 6
  MHA_BAD(p.max_seqlen_q = -1, "max_seqlen_q", kValue);
}

class MhaVarlenBwdBadInput : public MhaVarlenBadInput {
 protected:
  MhaVarlenGradInputs gin = [this] {
    c.id = 1;  // odd: with a dlse
    return make_mha_varlen_grad_inputs(c, in, rng);
  }();
  MhaVarlenGrads grads = make_mha_varlen_grads(c, in);

  MhaVarlenBwdParams valid_bwd() const {
    return mha_varlen_bwd_params(c, in, out, gin, grads, host_view);
  }
};

#define MHA_BWD_BAD(mutation, name, kind)                                        \
  do {                                                                           \
    MhaVarlenBwdParams p = valid_bwd();                                          \
    mutation;                                                                    \
    EXPECT_TRUE(throws_argument_error([&] { mha_varlen_bwd(p); }, {name}, kind)) \
        << "after: " #mutation;                                                  \
  } while (0)

TEST_F(MhaVarlenBwdBadInput, ValidProblemRuns) {
  ASSERT_TRUE(valid_bwd().dlse.defined());
  EXPECT_NO_THROW(mha_varlen_bwd(valid_bwd()));
  MhaVarlenBwdParams no_dlse = valid_bwd();
  no_dlse.dlse = TensorView{};
  EXPECT_NO_THROW(mha_varlen_bwd(no_dlse));
}

TEST_F(MhaVarlenBwdBadInput, TensorsAndShapes) {
  // Its own tensors...
  MHA_BWD_BAD(p.dout = TensorView{}, "dout", kValue);
  MHA_BWD_BAD(p.out = with_rank(p.out, 2), "out", kValue);
  MHA_BWD_BAD(p.lse = TensorView{}, "lse", kValue);
  MHA_BWD_BAD(p.dlse = with_rank(p.dlse, 3), "dlse", kValue);
  MHA_BWD_BAD(p.dq = TensorView{}, "dq", kValue);
  MHA_BWD_BAD(p.dk = with_rank(p.dk, 4), "dk", kValue);
  MHA_BWD_BAD(p.dv = TensorView{}, "dv", kValue);
  MHA_BWD_BAD(p.dout = on_cuda(p.dout), "dout", kValue);
  MHA_BWD_BAD(p.dlse = on_cuda(p.dlse), "dlse", kValue);
  MHA_BWD_BAD(p.dk = on_cuda(p.dk), "dk", kValue);
  MHA_BWD_BAD(p.dout = with_dtype(p.dout, DType::kFloat16), "dout", kType);
  MHA_BWD_BAD(p.out = with_dtype(p.out, DType::kFloat32), "out", kType);
  MHA_BWD_BAD(p.lse = with_dtype(p.lse, DType::kBFloat16), "lse", kType);
  MHA_BWD_BAD(p.dlse = with_dtype(p.dlse, DType::kFloat16), "dlse", kType);
  MHA_BWD_BAD(p.dq = with_dtype(p.dq, DType::kFloat16), "dq", kType);
  MHA_BWD_BAD(p.dk = with_dtype(p.dk, DType::kFloat32), "dk", kType);
  MHA_BWD_BAD(p.dv = with_dtype(p.dv, DType::kFloat16), "dv", kType);
  MHA_BWD_BAD(p.dout = with_stride(p.dout, 2, 2), "dout", kValue);
  MHA_BWD_BAD(p.dq = with_stride(p.dq, 2, 3), "dq", kValue);
  MHA_BWD_BAD(p.dout = with_dim(p.dout, 0, 7), "dout", kValue);
  MHA_BWD_BAD(p.out = with_dim(p.out, 1, 2), "out", kValue);
  MHA_BWD_BAD(p.lse = with_dim(p.lse, 1, 9), "lse", kValue);
  MHA_BWD_BAD(p.dlse = with_dim(p.dlse, 0, 2), "dlse", kValue);
  MHA_BWD_BAD(p.dq = with_dim(p.dq, 2, 128 + 64), "dq", kValue);
  MHA_BWD_BAD(p.dk = with_dim(p.dk, 1, 4), "dk", kValue);  // h_kv is 2
  MHA_BWD_BAD(p.dv = with_dim(p.dv, 0, 11), "dv", kValue);
  // ...and the inputs it shares with the forward.
  MHA_BWD_BAD(p.q = TensorView{}, "q", kValue);
  MHA_BWD_BAD(p.k = with_dtype(p.k, DType::kFloat16), "k", kType);
  MHA_BWD_BAD(p.v = with_dim(p.v, 2, 64), "v", kValue);
  MHA_BWD_BAD(p.cu_seqlens_k = with_dim(p.cu_seqlens_k, 0, 2), "cu_seqlens_k", kValue);
  for (float s : {kNaNF, 0.0f, -2.0f}) MHA_BWD_BAD(p.softmax_scale = s, "softmax_scale", kValue);
  const HostTensor q_past_end = int32_tensor({0, 3, 9});
  MHA_BWD_BAD(p.cu_seqlens_q = q_past_end.view(), "cu_seqlens_q", kValue);
  MHA_BWD_BAD(p.max_seqlen_k = 5, "max_seqlen_k", kValue);  // a sequence of 6
}

// ---- FP8 codecs -------------------------------------------------------------------------------

class KVCodecBadInput : public ::testing::Test {
 protected:
  HostTensor k576{DType::kBFloat16, {3, 16, 1, 576}};
  HostTensor k512{DType::kBFloat16, {3, 16, 1, 512}};
  HostTensor q656{DType::kUInt8, {3, 16, 1, 656}};
  HostTensor q584{DType::kUInt8, {3, 16, 1, 584}, {model1::min_block_bytes(16), 584, 584, 1}};

  KVQuantizeParams quantize_v32() const { return {KVCacheLayout::kV32, k576.view(), q656.view()}; }
  KVDequantizeParams dequantize_v32() const {
    return {KVCacheLayout::kV32, q656.view(), k576.view()};
  }
};

#define QUANT_BAD(mutation, name, kind)                                       \
  do {                                                                        \
    KVQuantizeParams p = quantize_v32();                                      \
    mutation;                                                                 \
    EXPECT_TRUE(throws_argument_error([&] { kv_quantize(p); }, {name}, kind)) \
        << "after: " #mutation;                                               \
  } while (0)
#define DEQUANT_BAD(mutation, name, kind)                                       \
  do {                                                                          \
    KVDequantizeParams p = dequantize_v32();                                    \
    mutation;                                                                   \
    EXPECT_TRUE(throws_argument_error([&] { kv_dequantize(p); }, {name}, kind)) \
        << "after: " #mutation;                                                 \
  } while (0)

TEST_F(KVCodecBadInput, ValidProblemsRun) {
  EXPECT_NO_THROW(kv_quantize(quantize_v32()));
  EXPECT_NO_THROW(kv_dequantize(dequantize_v32()));
  EXPECT_NO_THROW(kv_quantize({KVCacheLayout::kModel1, k512.view(), q584.view()}));
  EXPECT_NO_THROW(kv_dequantize({KVCacheLayout::kModel1, q584.view(), k512.view()}));
}

TEST_F(KVCodecBadInput, Quantize) {
  QUANT_BAD(p.k_cache = TensorView{}, "k_cache", kValue);
  QUANT_BAD(p.quant_cache = TensorView{}, "quant_cache", kValue);
  QUANT_BAD(p.k_cache = with_rank(p.k_cache, 3), "k_cache", kValue);
  QUANT_BAD(p.quant_cache = on_cuda(p.quant_cache), "quant_cache", kValue);
  QUANT_BAD(p.k_cache = with_dtype(p.k_cache, DType::kFloat32), "k_cache", kType);
  QUANT_BAD(p.quant_cache = with_dtype(p.quant_cache, DType::kBFloat16), "quant_cache", kType);
  QUANT_BAD(p.k_cache = k512.view(), "k_cache", kValue);  // d 512 for V3.2
  QUANT_BAD(p.k_cache = with_dim(p.k_cache, 2, 2), "k_cache", kValue);
  QUANT_BAD(p.quant_cache = with_dim(p.quant_cache, 3, 600), "quant_cache", kValue);
  QUANT_BAD(p.quant_cache = with_dim(p.quant_cache, 0, 2), "quant_cache", kValue);
  QUANT_BAD(p.quant_cache = with_dim(p.quant_cache, 1, 8), "quant_cache", kValue);
  QUANT_BAD(p.quant_cache = with_stride(p.quant_cache, 0, 656 * 16 - 16), "quant_cache", kValue);
  QUANT_BAD(p.k_cache = with_stride(p.k_cache, 3, 2), "k_cache", kValue);
  // MODEL1: the layout decides both widths.
  QUANT_BAD((p.layout = KVCacheLayout::kModel1, p.k_cache = k512.view()), "quant_cache", kValue);
  QUANT_BAD((p.layout = KVCacheLayout::kModel1, p.quant_cache = q584.view()), "k_cache", kValue);
}

TEST_F(KVCodecBadInput, Dequantize) {
  DEQUANT_BAD(p.quant_cache = TensorView{}, "quant_cache", kValue);
  DEQUANT_BAD(p.k_cache = TensorView{}, "k_cache", kValue);
  DEQUANT_BAD(p.k_cache = with_dtype(p.k_cache, DType::kFloat16), "k_cache", kType);
  DEQUANT_BAD(p.quant_cache = with_dtype(p.quant_cache, DType::kInt32), "quant_cache", kType);
  DEQUANT_BAD(p.k_cache = k512.view(), "k_cache", kValue);
  DEQUANT_BAD(p.quant_cache = with_dim(p.quant_cache, 3, 584), "quant_cache", kValue);
  // One tensor on another device: the error names one of the two (see the report: the contract
  // says codecs follow k_cache's device, the implementation validates the input first).
  auto run_mixed = [&] {
    KVDequantizeParams p = dequantize_v32();
    p.k_cache = on_cuda(p.k_cache);
    kv_dequantize(p);
  };
  EXPECT_ARG_ERROR_ANY_OF(run_mixed, kValue, "k_cache", "quant_cache");
}

// ---- all tensors on a CUDA device in a build without CUDA ---------------------------------------

TEST(NoCudaBuild, CudaTensorsRaiseNotImplemented) {
  if (built_with_cuda()) GTEST_SKIP() << "this build has CUDA kernels";
  DenseDecodeCase c{.b = 1, .h_q = 4, .page = 16, .seqlens = {5}};
  Rng rng(fresh_seed());
  const DenseDecodeInputs in = make_dense_decode_inputs(c, rng);
  const DenseDecodeOutputs out = make_dense_decode_outputs(c);
  DenseDecodeParams p =
      dense_decode_params(c, in, out, [](const HostTensor& t) { return on_cuda(t.view()); });
  // A plan sized as the CPU sizes it, claimed for cuda:0: every argument is valid but the
  // device, so the error must be the missing CUDA support, not an argument.
  p.plan = dense_decode_plan_info(1, 1, 4, 1, 512, false, kCPU);
  p.plan.device = cuda_device(0);
  HostTensor meta(DType::kInt32, {p.plan.sched_meta_elems});
  HostTensor ws(DType::kUInt8, {p.plan.workspace_bytes});
  p.sched_meta = on_cuda(meta.view());
  p.workspace = on_cuda(ws.view());
  try {
    dense_decode(p);
    ADD_FAILURE() << "did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotImplemented) << e.what();
  }
  try {
    dense_decode_plan_info(1, 1, 4, 1, 512, false, cuda_device(0));
    ADD_FAILURE() << "did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotImplemented) << e.what();
  }
}

// The MHA prefill operations likewise, forward and backward.
TEST(NoCudaBuild, MhaVarlenOnCudaTensorsRaisesNotImplemented) {
  if (built_with_cuda()) GTEST_SKIP() << "this build has CUDA kernels";
  const MhaVarlenCase c{.h_q = 2, .h_kv = 1, .q_lens = {3}, .k_lens = {4}};
  Rng rng(fresh_seed());
  const MhaVarlenInputs in = make_mha_varlen_inputs(c, rng);
  const MhaVarlenOutputs out = make_mha_varlen_outputs(c);
  const MhaVarlenGradInputs gin = make_mha_varlen_grad_inputs(c, in, rng);
  const MhaVarlenGrads grads = make_mha_varlen_grads(c, in);
  const ViewFn cuda_view = [](const HostTensor& t) { return on_cuda(t.view()); };
  for (int op = 0; op < 2; ++op) {
    try {
      if (op == 0) mha_varlen_fwd(mha_varlen_params(c, in, out, cuda_view));
      else mha_varlen_bwd(mha_varlen_bwd_params(c, in, out, gin, grads, cuda_view));
      ADD_FAILURE() << "did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kNotImplemented) << e.what();
    }
  }
}

}  // namespace
}  // namespace flashmla::test
