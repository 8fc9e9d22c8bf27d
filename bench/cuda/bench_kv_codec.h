// GPU benchmark of the FP8 KV-cache codecs (kv_quantize / kv_dequantize) against the device's
// measured copy bandwidth. Compiled only in CUDA builds; flashmla_bench calls it.
//
// Options: --tokens N (655360)  --page P (64)  --runs R (50)  --warmup W (5)
//          --copy-mib M (1024, size of the copy-ceiling buffer)  --csv FILE (append rows)
// Returns 0 on success, also when there is no GPU (it says so); non-zero on a bad option, a
// CUDA/flashmla error or a GPU result that differs from the CPU backend.
#pragma once

int bench_kv_codec(int argc, char** argv);
