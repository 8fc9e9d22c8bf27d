// GPU benchmark of sparse decode over an FP8 V3.2 cache (flashmla::sparse_decode) and of sparse
// prefill (flashmla::sparse_prefill) on the cases of anchors.md (S1-S4, P1-P4), through the
// public API and timed as bench_dense_decode.h times dense decode, which is how anchors.md timed
// FlashMLA:
//   ev:  CUDA events around each single call after a 256 MB memset and a ~0.5 ms spin, median of
//        --runs >= 30 (ev hot: the same without the spin);
//   krn: the call's GPU time from CUPTI's kernel records (first kernel start to last kernel end),
//        each call after an 8 GB memset, median of 30 (CUPTI is loaded at run time).
// Prints µs, TFLOPS, GB/s (decode only) by anchors.md's formulas from krn (from ev without
// CUPTI), the fraction of the ceilings (740 TFLOPS, 3000 GB/s), FlashMLA's figures and the ratio
// ours / FlashMLA (> 1: slower). Before timing, part of each case (decode: the first and last
// request; prefill: 8 query rows) is recomputed by the CPU backend, so that a fast but wrong
// kernel cannot post a number unnoticed.
//
// Data (anchors.md): decode q = randn clamped to [-1, 1]; KV and prefill q = randn/10 clamped; the
// decode cache is that bf16 KV quantized by flashmla::kv_quantize (V3.2, 656 bytes a token). Every
// decode request owns 32768 tokens (S3/S4 too: the GB/s anchors.md gives for them imply ~24,576
// unique tokens a request, which is what two queries of 16384 distinct tokens out of 32768 read)
// in randomly placed pages of 64. Each query's indices: topk distinct random tokens of its own
// request (decode) or of kv (prefill), in random order; all valid.
//
// Options: --runs R (50)  --case S1,P2 (all; or FLASHMLA_BENCH_CASES)  --csv FILE (append rows)
// --json FILE (one object: the GPU, the method, a record per case; null = not measured).
// Reproduce: flashmla_bench --sparse [--case S1].
// A case whose call throws a flashmla::Error is reported on one line and skipped. Returns 0 when
// every case ran and matched the CPU backend or was skipped as NotImplementedError, also when
// there is no GPU (it says so); 1 when a case failed otherwise (other error, wrong output).
#pragma once

int bench_sparse(int argc, char** argv);
