#!/usr/bin/env python3
"""Plots the dense-decode rows of a flashmla_bench CSV against FlashMLA's anchors.

CSV rows (flashmla_bench --csv): op, shape, us, TFLOPS, GB/s, ratio-to-anchor, and since session 5
krn-us, krn-median, kernel-sum-us, krn-ratio (bench/cuda/bench_dense_decode.cu: the ratio column
is then ev-flushed over FlashMLA's ev-flushed, krn-ratio our kernel time over FlashMLA's). The
figure has two panels: our time over FlashMLA's per case (below 1 = faster; both methods where the
row has both), and the fraction of the roof that binds the case (tensor roof 740 TFLOPS for
h_q * s_q >= 128, else the copy bandwidth of the same run).

usage: scripts/plot_bench.py CSV PNG   (scripts/plot-bench sets up a pinned matplotlib)
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TENSOR_ROOF_TFLOPS = 740.0  # anchors.md: bf16 matmul 742-780 on our H100


def main(csv_path: str, png_path: str) -> None:
    rows = list(csv.reader(open(csv_path)))
    copy_gbps = next((float(r[4]) for r in rows if r[0] == "gpu d2d copy"), 3000.0)
    # rows with a FlashMLA figure (the B cases have none: ratio columns 0)
    dense = [r for r in rows if r[0].startswith("gpu dense_decode") and float(r[5]) > 0]
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
    if any(krn):
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
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
