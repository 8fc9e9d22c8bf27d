#!/usr/bin/env python3
"""Summarises ncu's source page (SASS view, CSV) of one kernel: the sample totals per column,
the lines holding the most samples of one column, and (--buckets N) the samples, instruction-fetch
stalls and executed instructions per run of N SASS lines (where in the code the time goes).

usage: ncu_source.py [--top N] [--column SUBSTRING] [--buckets N] FILE.csv
"""
import argparse
import csv
import sys


def read(path):
    with open(path, newline="", errors="replace") as f:
        lines = f.read().splitlines()
    start = next((i for i, l in enumerate(lines) if "Address" in l and "Source" in l), None)
    if start is None:
        sys.exit(f"{path}: no source-page header (Address, Source) found")
    rows = list(csv.reader(lines[start:]))
    return rows[0], rows[1:]


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--column", default="Warp Stall Sampling (All")
    ap.add_argument("--buckets", type=int, default=0)
    a = ap.parse_args()
    head, rows = read(a.file)
    addr_i = head.index("Address")
    src_i = head.index("Source")
    numeric = [i for i, h in enumerate(head)
               if i not in (addr_i, src_i) and any(number(r[i]) is not None for r in rows[:50]
                                                   if i < len(r))]
    key = next((i for i in numeric if a.column in head[i]), None)
    print(f"== {a.file}: {len(rows)} SASS lines")
    totals = {head[i]: sum(number(r[i]) or 0 for r in rows if i < len(r)) for i in numeric}
    for h, t in totals.items():
        if t:
            print(f"  total {h}: {t:.0f}")
    if key is None:
        print(f"  no column containing {a.column!r}")
        return
    ranked = sorted(range(len(rows)), key=lambda j: -(number(rows[j][key]) or 0))
    shown = [i for i in numeric if "stall" in head[i].lower() or "sampl" in head[i].lower()]
    print(f"  top {a.top} lines by {head[key]}:")
    for j in ranked[:a.top]:
        r = rows[j]
        extra = " ".join(f"{head[i][:24]}={r[i]}" for i in shown if i != key and r[i] not in
                         ("", "0"))
        print(f"    #{j:5d} {r[addr_i]} {r[key]:>7} {r[src_i][:60]:60s} {extra[:160]}")
    if a.buckets:
        col = {h: i for i, h in enumerate(head)}
        def total(seg, name):
            return sum(number(r[col[name]]) or 0 for r in seg) if name in col else 0
        print(f"  per {a.buckets} lines: samples / no_inst / executed instructions")
        for s0 in range(0, len(rows), a.buckets):
            seg = rows[s0:s0 + a.buckets]
            v = (total(seg, head[key]), total(seg, "stall_no_inst"),
                 total(seg, "Instructions Executed"))
            if any(v):
                print(f"    {s0:5d}-{s0 + len(seg) - 1:5d} {v[0]:8.0f} {v[1]:6.0f} {v[2]:12.0f}")

if __name__ == "__main__":
    main()
