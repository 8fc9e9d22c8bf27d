#!/usr/bin/env python3
"""Plots the dense-decode rows of a flashmla_bench CSV against FlashMLA's anchors.

CSV rows (flashmla_bench --csv): op, shape, us, TFLOPS, GB/s, ratio-to-anchor. The figure has
two panels: our time over FlashMLA's kernel time per case (below 1 = faster), and the fraction
of the roof that binds the case (tensor roof 740 TFLOPS for h_q * s_q >= 128, else the copy
bandwidth of the same run).

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
    dense = [r for r in rows if r[0].startswith("gpu dense_decode")]
    names = [r[0].split()[-1] for r in dense]
    ratio = [float(r[5]) for r in dense]
    roof = []
    for r in dense:
        shape = dict(kv.split("=") for kv in r[1].split() if "=" in kv)  # "varlen", "causal"
        compute_bound = int(shape["h_q"]) * int(shape["s_q"]) >= 128
        roof.append(float(r[3]) / TENSOR_ROOF_TFLOPS if compute_bound
                    else float(r[4]) / copy_gbps)

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(names, ratio, color=["tab:green" if x <= 1.0 else "tab:red" for x in ratio])
    a.axhline(1.0, color="black", linewidth=1)
    a.set_title("time / FlashMLA kernel time (lower is better)")
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
