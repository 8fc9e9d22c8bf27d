// GPU benchmark of dense MLA decode (main + combine kernels) on the cases of anchors.md
// (D1-D6, L1-L6), timed as anchors.md's "ev-flushed": CUDA events around each single call after
// a 256 MB memset (cold L2), median of --runs (>= 30); the plan is computed once per case.
// Prints µs, TFLOPS, GB/s (SPEC.md formulas), the fraction of the ceilings (740 TFLOPS,
// 3000 GB/s) and the ratio to FlashMLA's kernel µs and ev-flushed µs on our H100.
//
// Options: --runs R (50)  --case NAME (all)  --csv FILE (append rows)
// Reproduce one row: flashmla_bench --gpu-only  (or bench_dense_decode --case D1)
// Returns 0 on success, also when there is no GPU (it says so).
#pragma once

int bench_dense_decode(int argc, char** argv);
