#!/usr/bin/env python3
"""Plots the dense-decode rows of a flashmla_bench CSV against FlashMLA's anchors.

CSV rows (flashmla_bench --csv): op, shape, us, TFLOPS, GB/s, ratio-to-anchor, and since session 5
krn-us, krn-median, kernel-sum-us, krn-ratio (bench/cuda/bench_dense_decode.cu: the ratio column
is then ev-flushed over FlashMLA's ev-flushed, krn-ratio our kernel time over FlashMLA's). The
figure has two panels: our time over FlashMLA's per case (below 1 = faster; both methods where the
row has both), and the fraction of the roof that binds the case (tensor roof 740 TFLOPS for
h_q * s_q >= 128, else the copy bandwidth of the same run).

With a third argument, the log of bench/flashmla_ref/time_flashmla.py from the same run, the
left panel is instead our kernel time over FlashMLA's measured on the same GPU in that run (no
anchors), for every case the log has.

usage: scripts/plot_bench.py CSV PNG [FLASHMLA_LOG]   (scripts/plot-bench: a pinned matplotlib)
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TENSOR_ROOF_TFLOPS = 740.0  # anchors.md: bf16 matmul 742-780 on our H100


def same_gpu_ratios(log_path: str) -> dict:
    """Case -> our krn / FlashMLA's krn, from time_flashmla.py's table rows."""
    ratios = {}
    for line in open(log_path):
        cols = line.split()
        if len(cols) > 7 and cols[0][:1] in "DLB" and cols[0][1:].isdigit():
            ratios[cols[0]] = float(cols[7]) / float(cols[1])
    return ratios


def main(csv_path: str, png_path: str, fm_log: str = "") -> None:
    rows = list(csv.reader(open(csv_path)))
    copy_gbps = next((float(r[4]) for r in rows if r[0] == "gpu d2d copy"), 3000.0)
    # rows with a FlashMLA figure (the B cases have none: ratio columns 0)
    same_gpu = same_gpu_ratios(fm_log) if fm_log else {}
    dense = [r for r in rows if r[0].startswith("gpu dense_decode") and
             (float(r[5]) > 0 or r[0].split()[-1] in same_gpu)]
    names = [r[0].split()[-1] for r in dense]
    ratio = [float(r[5]) for r in dense]
    krn = [float(r[9]) if len(r) > 9 else 0.0 for r in dense]
    roof = []
    for r in dense:
        shape = dict(kv.split("=") for kv in r[1].split() if "=" in kv)  # "varlen", "causal"
        compute_bound = int(shape["h_q"]) * int(shape["s_q"]) >= 128
        tflops, gbps = float(r[3]), float(r[4])
        if len(r) > 9 and float(r[6]) > 0:  # rates from the kernel time
            tflops, gbps = [x * float(r[2]) / float(r[6]) for x in (tflops, gbps)]
        roof.append(tflops / TENSOR_ROOF_TFLOPS if compute_bound else gbps / copy_gbps)

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = list(range(len(names)))
    if same_gpu:
        v = [same_gpu.get(n, 0.0) for n in names]
        a.bar(x, v, color=["tab:green" if r <= 1.0 else "tab:red" for r in v])
        a.set_title("kernel time / FlashMLA's, same GPU, same run (lower is better)", fontsize=9)
    elif any(krn):
        w = 0.4
        a.bar([i - w / 2 for i in x], krn, w, label="kernel time / FlashMLA kernel time",
              color=["tab:green" if v <= 1.0 else "tab:red" for v in krn])
        a.bar([i + w / 2 for i in x], ratio, w, label="ev-flushed / FlashMLA ev-flushed",
              color=["tab:olive" if v <= 1.0 else "tab:orange" for v in ratio])
        a.legend(fontsize=7)
        a.set_title("time / FlashMLA's, same method (lower is better)")
    else:
        a.bar(x, ratio, color=["tab:green" if v <= 1.0 else "tab:red" for v in ratio])
        a.set_title("time / FlashMLA kernel time (lower is better)")
    a.set_xticks(x, names)
    a.axhline(1.0, color="black", linewidth=1)
    b.bar(names, roof, color="tab:blue")
    b.set_ylim(0, 1)
    b.set_title("fraction of the binding roof (740 TFLOPS or copy GB/s)")
    fig.suptitle(f"flashmla dense decode, {csv_path.split('/')[-1]}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
