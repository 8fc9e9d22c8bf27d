// GPU benchmark of dense MHA prefill, forward and backward (flashmla::mha_varlen_fwd, _bwd)
// through the public API, with the sm_90a kernels switched on for its own calls
// (FLASHMLA_MHA_FWD=1, FLASHMLA_MHA_BWD=1; they are opt-in until a GPU run has checked them). Cases M1-M5: DeepSeek-V3-style MHA prefill (d_qk 192,
// d_v 128) at 128 and 16 heads, chunked prefill (s_q < s_k), GQA with d_qk 128, and one
// non-causal case; bf16, random inputs randn/10.
//   µs: CUDA events around each call after two warm-up calls, median of --runs (20). Prefill is
//       compute-bound, so no L2 flush.
//   TFLOPS: 2 (d_qk + d_v) h_q per attended (query, key) pair (causal: bottom-right), against
//       the measured bf16 matmul ceiling (GPU-NOTES.md: 742 TFLOPS); the backward 2.5x that.
// Before timing, six rows of each case (two heads at three tokens of the first sequence) are
// recomputed in float64 on the host from the device's inputs, so a fast but wrong kernel cannot
// post a number unnoticed (the backward's gradients are only checked to be finite: the tests
// grade them). Options: --runs R, --case M1,M3, --csv FILE (append rows).
// Reproduce: flashmla_bench --mha [--case M1]. Returns 0 when every case ran and matched, also
// without a GPU (it says so); 1 otherwise.
#pragma once

int bench_mha(int argc, char** argv);
