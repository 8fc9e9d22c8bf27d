// flash_mla._C: the nanobind module. Thin wrappers that turn Python arguments into the C++
// params structs (include/flashmla/params.h), release the GIL, and call the entry points.
// Outputs are allocated by the Python layer (python/flash_mla/) in the caller's framework; this
// module never allocates tensor memory. CUDA work runs on the stream handle passed in (the
// Python layer passes torch.cuda.current_stream()).
//
// Errors: flashmla::Error kinds map to ValueError (kValue), TypeError (kType),
// NotImplementedError (kNotImplemented), RuntimeError (kCuda). The message is the library's
// ("flashmla::<op>: argument '<name>': expected ..., got ..."); ArgumentError also sets the
// exception's `argument` and `op` attributes so the Python layer can rename an argument to the
// public parameter name (sched_meta -> tile_scheduler_metadata, ...).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>

#include "decode_metadata.h"
#include "flashmla/flashmla.h"
#include "tensor_convert.h"

namespace nb = nanobind;

// Tensor arguments are nb::handle (bound with .none(), so None means "absent"): ArgTensors turns
// them into TensorViews and keeps the imported arrays alive for the call.

namespace flashmla::bindings {

namespace {

Stream as_stream(uintptr_t handle) { return reinterpret_cast<Stream>(handle); }

KVCacheLayout parse_layout(const std::string& name, const char* op) {
  if (name == "v32") return KVCacheLayout::kV32;
  if (name == "model1") return KVCacheLayout::kModel1;
  throw ArgumentError(ErrorKind::kValue, op, "layout",
                      "expected \"v32\" or \"model1\", got \"" + name + "\"");
}

void raise_python(const Error& e) {
  PyObject* type = PyExc_RuntimeError;
  switch (e.kind()) {
    case ErrorKind::kValue: type = PyExc_ValueError; break;
    case ErrorKind::kType: type = PyExc_TypeError; break;
    case ErrorKind::kNotImplemented: type = PyExc_NotImplementedError; break;
    case ErrorKind::kCuda: type = PyExc_RuntimeError; break;
  }
  PyObject* exc = PyObject_CallFunction(type, "s", e.what());
  if (!exc) return;  // the call set its own error
  if (const auto* ae = dynamic_cast<const ArgumentError*>(&e)) {
    PyObject* arg = PyUnicode_FromString(ae->argument().c_str());
    PyObject* op = PyUnicode_FromString(ae->op().c_str());
    if (arg && op) {
      PyObject_SetAttrString(exc, "argument", arg);
      PyObject_SetAttrString(exc, "op", op);
    }
    Py_XDECREF(arg);
    Py_XDECREF(op);
  }
  PyErr_SetObject(type, exc);
  Py_DECREF(exc);
}

// The plan for a decode call's shape, or std::nullopt when the shape itself is invalid (then the
// operation's own validation reports the bad argument, with its usual message).
std::optional<DecodePlan> plan_for(int64_t b, int s_q, int h_q, int h_kv, int head_dim_v,
                                   bool causal, Device device) {
  try {
    return dense_decode_plan_info(b, s_q, h_q, h_kv, head_dim_v, causal, device);
  } catch (const ArgumentError&) {
    return std::nullopt;
  }
}

// Checks the packed metadata tensor against the plan and splits it into sched_meta + workspace.
void unpack_metadata(const char* op, const TensorView& meta, const DecodePlan& plan,
                     TensorView* sched_meta, TensorView* workspace) {
  const char* arg = "tile_scheduler_metadata";
  if (!meta.defined())
    throw ArgumentError(ErrorKind::kValue, op, arg,
                        "is required: pass the metadata from get_mla_metadata()");
  if (meta.dtype != DType::kInt32)
    throw ArgumentError(ErrorKind::kType, op, arg,
                        std::string("expected dtype int32, got ") + dtype_name(meta.dtype));
  const DecodeMetadataLayout m = decode_metadata_layout(plan);
  if (meta.rank != 2 || !meta.is_contiguous())
    throw ArgumentError(ErrorKind::kValue, op, arg,
                        "expected a contiguous tensor [num_parts, cols] from get_mla_metadata(), "
                        "got shape " + meta.shape_str() + ", strides " + meta.stride_str());
  if (meta.shape[0] != m.rows || meta.shape[1] < m.cols)
    throw ArgumentError(
        ErrorKind::kValue, op, arg,
        "was planned for another batch shape or device: expected shape [" +
            std::to_string(m.rows) + ", " + std::to_string(m.cols) + "] for (b=" +
            std::to_string(plan.b) + ", s_q=" + std::to_string(plan.s_q) + ", h_q=" +
            std::to_string(plan.h_q) + ", h_kv=" + std::to_string(plan.h_kv) + ", " +
            device_name(plan.device) + "), got " + meta.shape_str());
  int32_t* base = static_cast<int32_t*>(meta.data);
  *sched_meta = TensorView::contiguous(base, DType::kInt32, meta.device, {m.sched_meta_elems});
  *workspace = TensorView::contiguous(base + m.workspace_begin, DType::kUInt8, meta.device,
                                      {m.workspace_bytes});
}

Device device_of(int device_type, int device_index) {
  return device_type == 0 ? kCPU : cuda_device(device_index);
}

// ---- dense decode ----

// (rows, cols, num_splits_begin) of the packed metadata for a batch shape on a device.
std::tuple<int64_t, int64_t, int64_t> decode_metadata_shape(int64_t b, int s_q, int h_q, int h_kv,
                                                            int head_dim_v, bool causal,
                                                            int device_type, int device_index) {
  const DecodePlan plan =
      dense_decode_plan_info(b, s_q, h_q, h_kv, head_dim_v, causal,
                             device_of(device_type, device_index));
  const DecodeMetadataLayout m = decode_metadata_layout(plan);
  return {m.rows, m.cols, m.num_splits_begin};
}

void py_dense_decode_plan(nb::handle cache_seqlens, nb::handle tile_scheduler_metadata, int s_q,
                          int h_q, int h_kv, int head_dim_v, bool causal, uintptr_t stream) {
  const char* op = "dense_decode_plan";
  ArgTensors args(op);
  DensePlanParams p;
  p.cache_seqlens = args.view(cache_seqlens, "cache_seqlens", "int32");
  const TensorView meta = args.view(tile_scheduler_metadata, "tile_scheduler_metadata", "int32");
  if (!p.cache_seqlens.defined())
    throw ArgumentError(ErrorKind::kValue, op, "cache_seqlens", "is required but was not given");
  if (p.cache_seqlens.rank != 1)
    throw ArgumentError(ErrorKind::kValue, op, "cache_seqlens",
                        "expected rank 1 [b], got shape " + p.cache_seqlens.shape_str());
  p.plan = dense_decode_plan_info(p.cache_seqlens.shape[0], s_q, h_q, h_kv, head_dim_v, causal,
                                  p.cache_seqlens.device);
  TensorView workspace;
  unpack_metadata(op, meta, p.plan, &p.sched_meta, &workspace);
  nb::gil_scoped_release release;
  dense_decode_plan(p, as_stream(stream));
}

void py_dense_decode(nb::handle q, nb::handle k_cache, nb::handle block_table,
                     nb::handle cache_seqlens, nb::handle tile_scheduler_metadata, nb::handle out,
                     nb::handle lse, int head_dim_v, std::optional<float> softmax_scale,
                     bool causal, uintptr_t stream) {
  const char* op = "dense_decode";
  ArgTensors args(op);
  DenseDecodeParams p;
  p.q = args.view(q, "q", "bfloat16 or float16");
  p.k_cache = args.view(k_cache, "k_cache", "bfloat16 or float16 (q's dtype)");
  p.block_table = args.view(block_table, "block_table", "int32");
  p.cache_seqlens = args.view(cache_seqlens, "cache_seqlens", "int32");
  const TensorView meta = args.view(tile_scheduler_metadata, "tile_scheduler_metadata", "int32");
  p.out = args.view(out, "out", "q's dtype");
  p.lse = args.view(lse, "lse", "float32");
  p.head_dim_v = head_dim_v;
  p.softmax_scale = softmax_scale;
  p.causal = causal;
  std::optional<DecodePlan> plan;
  if (p.q.rank == 4 && p.k_cache.rank == 4)
    plan = plan_for(p.q.shape[0], static_cast<int>(p.q.shape[1]), static_cast<int>(p.q.shape[2]),
                    static_cast<int>(p.k_cache.shape[2]), head_dim_v, causal, p.q.device);
  if (plan) {
    p.plan = *plan;
    if (meta.defined() && !(meta.device == p.q.device))
      throw ArgumentError(ErrorKind::kValue, op, "tile_scheduler_metadata",
                          "expected a tensor on " + device_name(p.q.device) +
                              " (q's device), got " + device_name(meta.device));
    unpack_metadata(op, meta, p.plan, &p.sched_meta, &p.workspace);
  } else {
    // The shape is invalid, so no plan exists: hand over empty schedule views and let the
    // operation's validation name the bad argument (it checks q, k_cache, head_dim_v, ...
    // before it gets to the plan).
    alignas(16) static int32_t empty_buffer[4] = {};
    p.sched_meta = TensorView::contiguous(empty_buffer, DType::kInt32, p.q.device, {0});
    p.workspace = TensorView::contiguous(empty_buffer, DType::kUInt8, p.q.device, {0});
  }
  nb::gil_scoped_release release;
  dense_decode(p, as_stream(stream));
}

// ---- sparse ----

void py_sparse_decode(nb::handle q, nb::handle k_cache, nb::handle indices,
                      nb::handle topk_length, nb::handle attn_sink, nb::handle extra_k_cache,
                      nb::handle extra_indices, nb::handle extra_topk_length, nb::handle out,
                      nb::handle lse, int head_dim_v, std::optional<float> softmax_scale,
                      uintptr_t stream) {
  ArgTensors args("sparse_decode");
  SparseDecodeParams p;
  p.q = args.view(q, "q", "bfloat16");
  p.k_cache = args.view(k_cache, "k_cache", "uint8 or float8_e4m3fn");
  p.indices = args.view(indices, "indices", "int32");
  p.topk_length = args.view(topk_length, "topk_length", "int32");
  p.attn_sink = args.view(attn_sink, "attn_sink", "float32");
  p.extra_k_cache = args.view(extra_k_cache, "extra_k_cache", "uint8 or float8_e4m3fn");
  p.extra_indices = args.view(extra_indices, "extra_indices", "int32");
  p.extra_topk_length = args.view(extra_topk_length, "extra_topk_length", "int32");
  p.out = args.view(out, "out", "bfloat16");
  p.lse = args.view(lse, "lse", "float32");
  p.head_dim_v = head_dim_v;
  p.softmax_scale = softmax_scale;
  nb::gil_scoped_release release;
  sparse_decode(p, as_stream(stream));
}

void py_sparse_prefill(nb::handle q, nb::handle kv, nb::handle indices, float sm_scale, int d_v,
                       nb::handle attn_sink, nb::handle topk_length, nb::handle out,
                       nb::handle max_logits, nb::handle lse, uintptr_t stream) {
  ArgTensors args("sparse_prefill");
  SparsePrefillParams p;
  p.q = args.view(q, "q", "bfloat16");
  p.kv = args.view(kv, "kv", "bfloat16");
  p.indices = args.view(indices, "indices", "int32");
  p.sm_scale = sm_scale;
  p.d_v = d_v;
  p.attn_sink = args.view(attn_sink, "attn_sink", "float32");
  p.topk_length = args.view(topk_length, "topk_length", "int32");
  p.out = args.view(out, "out", "bfloat16");
  p.max_logits = args.view(max_logits, "max_logits", "float32");
  p.lse = args.view(lse, "lse", "float32");
  nb::gil_scoped_release release;
  sparse_prefill(p, as_stream(stream));
}

// ---- dense prefill ----

void py_mha_varlen_fwd(nb::handle q, nb::handle k, nb::handle v, nb::handle cu_seqlens_q,
                       nb::handle cu_seqlens_k, int max_seqlen_q, int max_seqlen_k,
                       std::optional<float> softmax_scale, bool causal, nb::handle out,
                       nb::handle lse, uintptr_t stream) {
  ArgTensors args("mha_varlen_fwd");
  MhaVarlenFwdParams p;
  p.q = args.view(q, "q", "bfloat16 or float16");
  p.k = args.view(k, "k", "q's dtype");
  p.v = args.view(v, "v", "q's dtype");
  p.cu_seqlens_q = args.view(cu_seqlens_q, "cu_seqlens_q", "int32");
  p.cu_seqlens_k = args.view(cu_seqlens_k, "cu_seqlens_k", "int32");
  p.max_seqlen_q = max_seqlen_q;
  p.max_seqlen_k = max_seqlen_k;
  p.softmax_scale = softmax_scale;
  p.causal = causal;
  p.out = args.view(out, "out", "q's dtype");
  p.lse = args.view(lse, "lse", "float32");
  nb::gil_scoped_release release;
  mha_varlen_fwd(p, as_stream(stream));
}

void py_mha_varlen_bwd(nb::handle dout, nb::handle q, nb::handle k, nb::handle v, nb::handle out,
                       nb::handle lse, nb::handle dlse, nb::handle cu_seqlens_q,
                       nb::handle cu_seqlens_k, int max_seqlen_q, int max_seqlen_k,
                       std::optional<float> softmax_scale, bool causal, nb::handle dq,
                       nb::handle dk, nb::handle dv, uintptr_t stream) {
  ArgTensors args("mha_varlen_bwd");
  MhaVarlenBwdParams p;
  p.dout = args.view(dout, "dout", "q's dtype");
  p.q = args.view(q, "q", "bfloat16 or float16");
  p.k = args.view(k, "k", "q's dtype");
  p.v = args.view(v, "v", "q's dtype");
  p.out = args.view(out, "out", "q's dtype");
  p.lse = args.view(lse, "lse", "float32");
  p.dlse = args.view(dlse, "dlse", "float32");
  p.cu_seqlens_q = args.view(cu_seqlens_q, "cu_seqlens_q", "int32");
  p.cu_seqlens_k = args.view(cu_seqlens_k, "cu_seqlens_k", "int32");
  p.max_seqlen_q = max_seqlen_q;
  p.max_seqlen_k = max_seqlen_k;
  p.softmax_scale = softmax_scale;
  p.causal = causal;
  p.dq = args.view(dq, "dq", "q's dtype");
  p.dk = args.view(dk, "dk", "q's dtype");
  p.dv = args.view(dv, "dv", "q's dtype");
  nb::gil_scoped_release release;
  mha_varlen_bwd(p, as_stream(stream));
}

// ---- FP8 KV cache codecs ----

void py_kv_quantize(const std::string& layout, nb::handle k_cache, nb::handle quant_cache,
                    uintptr_t stream) {
  ArgTensors args("kv_quantize");
  KVQuantizeParams p;
  p.layout = parse_layout(layout, "kv_quantize");
  p.k_cache = args.view(k_cache, "k_cache", "bfloat16");
  p.quant_cache = args.view(quant_cache, "quant_cache", "uint8 or float8_e4m3fn");
  nb::gil_scoped_release release;
  kv_quantize(p, as_stream(stream));
}

void py_kv_dequantize(const std::string& layout, nb::handle quant_cache, nb::handle k_cache,
                      uintptr_t stream) {
  ArgTensors args("kv_dequantize");
  KVDequantizeParams p;
  p.layout = parse_layout(layout, "kv_dequantize");
  p.quant_cache = args.view(quant_cache, "quant_cache", "uint8 or float8_e4m3fn");
  p.k_cache = args.view(k_cache, "k_cache", "bfloat16");
  nb::gil_scoped_release release;
  kv_dequantize(p, as_stream(stream));
}

}  // namespace

}  // namespace flashmla::bindings

NB_MODULE(_C, m) {
  using namespace flashmla;
  using namespace flashmla::bindings;
  m.doc() = "flashmla C++ API bindings (internal; use the flash_mla package)";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      raise_python(e);
    }
  });

  nb::enum_<DType>(m, "DType")
      .value("float32", DType::kFloat32)
      .value("bfloat16", DType::kBFloat16)
      .value("float16", DType::kFloat16)
      .value("int32", DType::kInt32)
      .value("uint8", DType::kUInt8)
      .value("float8_e4m3fn", DType::kFloat8E4M3);

  m.def("describe_backends", &describe_backends);
  m.def("built_with_cuda", &built_with_cuda);

  // Byte layouts of the FP8 caches (include/flashmla/kv_layout.h).
  m.attr("V32_DIM_QK") = v32::kDimQK;
  m.attr("V32_BYTES_PER_TOKEN") = v32::kBytesPerToken;
  m.attr("MODEL1_DIM_QK") = model1::kDimQK;
  m.attr("MODEL1_BYTES_PER_TOKEN") = model1::kNominalBytesPerToken;
  m.def("model1_min_block_bytes", &model1::min_block_bytes, nb::arg("page_block_size"));

  m.def("decode_metadata_shape", &decode_metadata_shape, nb::arg("b"), nb::arg("s_q"),
        nb::arg("h_q"), nb::arg("h_kv"), nb::arg("head_dim_v"), nb::arg("causal"),
        nb::arg("device_type"), nb::arg("device_index"),
        "(rows, cols, num_splits_begin) of the packed dense-decode metadata tensor "
        "(device_type 0 = CPU, 1 = CUDA)");
  m.def("dense_decode_plan", &py_dense_decode_plan, nb::arg("cache_seqlens").none(),
        nb::arg("tile_scheduler_metadata").none(), nb::arg("s_q"), nb::arg("h_q"), nb::arg("h_kv"),
        nb::arg("head_dim_v"), nb::arg("causal"), nb::arg("stream"));
  m.def("dense_decode", &py_dense_decode, nb::arg("q").none(), nb::arg("k_cache").none(),
        nb::arg("block_table").none(), nb::arg("cache_seqlens").none(), nb::arg("tile_scheduler_metadata").none(),
        nb::arg("out").none(), nb::arg("lse").none(), nb::arg("head_dim_v"), nb::arg("softmax_scale").none(),
        nb::arg("causal"), nb::arg("stream"));
  m.def("sparse_decode", &py_sparse_decode, nb::arg("q").none(), nb::arg("k_cache").none(), nb::arg("indices").none(),
        nb::arg("topk_length").none(), nb::arg("attn_sink").none(), nb::arg("extra_k_cache").none(),
        nb::arg("extra_indices").none(), nb::arg("extra_topk_length").none(), nb::arg("out").none(), nb::arg("lse").none(),
        nb::arg("head_dim_v"), nb::arg("softmax_scale").none(), nb::arg("stream"));
  m.def("sparse_prefill", &py_sparse_prefill, nb::arg("q").none(), nb::arg("kv").none(), nb::arg("indices").none(),
        nb::arg("sm_scale"), nb::arg("d_v"), nb::arg("attn_sink").none(), nb::arg("topk_length").none(),
        nb::arg("out").none(), nb::arg("max_logits").none(), nb::arg("lse").none(), nb::arg("stream"));
  m.def("mha_varlen_fwd", &py_mha_varlen_fwd, nb::arg("q").none(), nb::arg("k").none(), nb::arg("v").none(),
        nb::arg("cu_seqlens_q").none(), nb::arg("cu_seqlens_k").none(), nb::arg("max_seqlen_q"),
        nb::arg("max_seqlen_k"), nb::arg("softmax_scale").none(), nb::arg("causal"),
        nb::arg("out").none(), nb::arg("lse").none(), nb::arg("stream"));
  m.def("mha_varlen_bwd", &py_mha_varlen_bwd, nb::arg("dout").none(), nb::arg("q").none(),
        nb::arg("k").none(), nb::arg("v").none(), nb::arg("out").none(), nb::arg("lse").none(),
        nb::arg("dlse").none(), nb::arg("cu_seqlens_q").none(), nb::arg("cu_seqlens_k").none(),
        nb::arg("max_seqlen_q"), nb::arg("max_seqlen_k"), nb::arg("softmax_scale").none(),
        nb::arg("causal"), nb::arg("dq").none(), nb::arg("dk").none(), nb::arg("dv").none(),
        nb::arg("stream"));
  m.def("kv_quantize", &py_kv_quantize, nb::arg("layout"), nb::arg("k_cache").none(),
        nb::arg("quant_cache").none(), nb::arg("stream"));
  m.def("kv_dequantize", &py_kv_dequantize, nb::arg("layout"), nb::arg("quant_cache").none(),
        nb::arg("k_cache").none(), nb::arg("stream"));
}
