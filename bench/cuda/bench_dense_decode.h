// GPU benchmark of dense MLA decode (main + combine kernels) on the cases of anchors.md
// (D1-D6, L1-L6), timed both ways anchors.md timed FlashMLA: "ev-flushed" (CUDA events around
// each single call after a 256 MB memset, median of --runs >= 30) and kernel time (the GPU time
// of a call from CUPTI's kernel records, each call after an 8 GB memset, median of 30; CUPTI is
// loaded at run time, kernel_timer.h); the plan is computed once per case. Prints µs, TFLOPS,
// GB/s (SPEC.md formulas, from the kernel time), the fraction of the ceilings (740 TFLOPS,
// 3000 GB/s) and the ratios to FlashMLA's figures measured the same way on our H100.
//
// Options: --runs R (50)  --case NAME (all)  --csv FILE (append rows)  --json FILE (write one
// object: the GPU, the method and a record per case with named fields; null = not measured)
// Reproduce one row: flashmla_bench --gpu-only  (or bench_dense_decode --case D1)
// Returns 0 on success, also when there is no GPU (it says so).
#pragma once

int bench_dense_decode(int argc, char** argv);
