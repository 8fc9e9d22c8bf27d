#!/usr/bin/env python3
"""Summarises ncu's source page (SASS view, CSV) of one kernel: the sample totals per column,
the lines holding the most warp-state samples, and the samples of every code region (a region
starts after each unconditional branch or exit, so that taken branches show as region starts).

usage: ncu_source.py [--top N] [--column SUBSTRING] [--regions] FILE.csv
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
    ap.add_argument("--regions", action="store_true")
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
    if a.regions:
        region, start, acc = [], 0, 0.0
        for j, r in enumerate(rows):
            acc += number(r[key]) or 0
            text = r[src_i].strip()
            if text.startswith(("BRA ", "EXIT", "RET")) or " BRA " in text or j == len(rows) - 1:
                region.append((start, j, acc))
                start, acc = j + 1, 0.0
        print("  regions (lines, samples):")
        for s, e, v in region:
            if v:
                print(f"    {s:5d}-{e:5d} {v:8.0f}  {rows[s][src_i][:50]}")


if __name__ == "__main__":
    main()
