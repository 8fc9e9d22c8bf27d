#!/usr/bin/env python3
"""DeepSeek's FlashMLA dense decode, timed on this GPU the way anchors.md timed it.

The anchors are FlashMLA on our H100; when the GPU at hand is another one (an H200), the ratio
that means something is against FlashMLA on the same GPU in the same machine start. This script
runs FlashMLA's compiled kernels (vLLM's build, fetched by scripts/fetch-flashmla-ref) on the very
cases our benchmark ran -- same shapes and lengths, read from the file that
`flashmla_bench --gpu-only` writes when FLASHMLA_BENCH_CASES_FILE is set -- and prints them beside
our own figures (that run's --csv file).

Timing (anchors.md): each of 30 calls after an 8 GB memset, its kernels' durations from the
profiler's CUPTI records; reported are the call's span (first kernel start to last kernel end,
median: the figure our benchmark's krn column holds), the durations summed (mean: the anchors'
figure), and the main kernel alone (median). Also ev: CUDA events around each call after a 256 MB
memset, median of 50. The scheduling metadata is computed by the first call and reused, as in
production; its kernel is also timed alone (calls without metadata, column "FM plan"). Data as
anchors.md: q, KV = randn/10 clamped to [-1, 1] in bf16, a random page permutation, page size 64,
h_kv = 1, d_qk = 576, d_v = 512.

A check against a float32 reference on the first requests of each case guards against timing
something that computes garbage.

usage: time_flashmla.py --lib .fmla/_flashmla_C.abi3.so --cases CASES [--ours bench.csv]
                        [--csv out.csv]
       (--lib .fmla/upstream: the upstream-built package of scripts/fetch-flashmla-ref instead)
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys

import torch

PAGE, D_QK, D_V = 64, 576, 512
KERNEL_RUNS, EV_RUNS = 30, 50
KERNEL_FLUSH, EV_FLUSH = 8 << 30, 256 << 20


def read_cases(path):
    cases = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            name, b, s_q, h_q, causal = parts[0], *map(int, parts[1:5])
            lens = list(map(int, parts[5:]))
            if len(lens) != b:
                sys.exit(f"time_flashmla: case {name}: {len(lens)} lengths for b={b}")
            cases.append(dict(name=name, b=b, s_q=s_q, h_q=h_q, causal=bool(causal), lens=lens))
    return cases


def read_ours(path):
    """Our benchmark's CSV rows: name -> (ev us, krn span us, krn summed us, ev hot us, plan
    kernel us)."""
    ours = {}
    if not path:
        return ours
    with open(path) as f:
        for line in f:
            cols = line.strip().split(",")
            if not cols[0].startswith("gpu dense_decode "):
                continue
            name = cols[0].split()[-1]
            hot = float(cols[10]) if len(cols) > 10 else float("nan")
            plan = float(cols[11]) if len(cols) > 11 else float("nan")
            ours[name] = (float(cols[2]), float(cols[6]), float(cols[8]), hot, plan)
    return ours


class Inputs:
    def __init__(self, case, seed):
        b, s_q, h_q, lens = case["b"], case["s_q"], case["h_q"], case["lens"]
        blocks_per_seq = -(-max(lens) // PAGE)
        num_blocks = b * blocks_per_seq
        gen = torch.Generator(device="cuda").manual_seed(seed)
        self.q = self._act((b, s_q, h_q, D_QK), gen)
        self.k = self._act((num_blocks, PAGE, 1, D_QK), gen)
        perm = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed))
        self.table = perm.to(torch.int32).view(b, blocks_per_seq).cuda()
        self.lens = torch.tensor(lens, dtype=torch.int32, device="cuda")
        self.causal = case["causal"]
        self.scale = D_QK ** -0.5

    @staticmethod
    def _act(shape, gen):
        x = torch.empty(shape, dtype=torch.bfloat16, device="cuda")
        rows = x.view(-1, shape[-1])
        step = 1 << 16  # rows at a time: no float32 copy of a multi-GB cache
        for i in range(0, rows.shape[0], step):
            chunk = torch.randn((min(step, rows.shape[0] - i), shape[-1]), device="cuda",
                                generator=gen)
            rows[i:i + step] = chunk.div_(10).clamp_(-1, 1).to(torch.bfloat16)
        return x


class FlashMLA:
    """vLLM's `_flashmla_C.abi3.so` (a torch op library; built without fast math), or a folder
    holding upstream's `flash_mla` package (tokenspeed-flashmla's build: `flash_mla.cuda`, the
    same entry point without the trailing argument)."""

    def __init__(self, lib):
        if lib.endswith(".so"):
            torch.ops.load_library(lib)
            op = torch.ops._flashmla_C.dense_decode_fwd
            self.op = lambda *a: op(*a, None)
        else:
            sys.path.insert(0, lib)
            import flash_mla.cuda as fm_cuda  # noqa: E402 (the folder given on the command line)
            self.op = fm_cuda.dense_decode_fwd

    def plan_and_call(self, x):
        """First call: computes the scheduling metadata, kept for the timed calls."""
        out, lse, self.meta, self.splits = self.op(x.q, x.k, D_V, x.lens, x.table, x.scale,
                                                   x.causal, None, None)
        return out, lse

    def call(self, x):
        return self.op(x.q, x.k, D_V, x.lens, x.table, x.scale, x.causal, self.meta,
                       self.splits)


def reference_rel_l2(x, out, lse, requests):
    """Relative L2 error of out and lse against float32 math, over the first requests."""
    errs, ref_sq, lse_err = 0.0, 0.0, 0.0
    s_q, h_q = x.q.shape[1], x.q.shape[2]
    for i in range(requests):
        n = int(x.lens[i])
        pages = x.table[i, :-(-n // PAGE)].long()
        kv = x.k[pages].reshape(-1, D_QK)[:n].float()
        q = x.q[i].reshape(s_q * h_q, D_QK).float()
        s = (q @ kv.T) * x.scale
        if x.causal:
            qi = torch.arange(s_q, device="cuda").repeat_interleave(h_q)
            limit = n - s_q + qi + 1
            s = s.masked_fill(torch.arange(n, device="cuda")[None, :] >= limit[:, None],
                              float("-inf"))
        ref_lse = torch.logsumexp(s, dim=-1)
        ref = torch.softmax(s, dim=-1) @ kv[:, :D_V]
        got = out[i].reshape(s_q * h_q, D_V).float()
        errs += float(((got - ref) ** 2).sum())
        ref_sq += float((ref ** 2).sum())
        got_lse = lse[i].transpose(0, 1).reshape(s_q * h_q)  # (h_q, s_q) -> rows i * h_q + h
        lse_err = max(lse_err, float(((got_lse - ref_lse).abs() / ref_lse.abs()).max()))
    return math.sqrt(errs / ref_sq), lse_err


def kernel_times(fm, x, flush):
    """Per call: (span, summed durations, main kernel) in µs from the CUPTI records."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA], acc_events=True) as prof:
        for _ in range(KERNEL_RUNS):
            flush.zero_()
            fm.call(x)
        torch.cuda.synchronize()
    kernels = []
    for e in prof.profiler.kineto_results.events():
        name = e.name()
        if "mla" not in name.lower():  # FlashMLA's kernels; not the flush
            continue
        start = e.start_ns() if hasattr(e, "start_ns") else e.start_us() * 1000
        dur = e.duration_ns() if hasattr(e, "duration_ns") else e.duration_us() * 1000
        kernels.append((start, start + dur, name))
    kernels.sort()
    calls = []
    for k in kernels:
        if "splitkv" in k[2] or not calls:
            calls.append([])
        calls[-1].append(k)
    if len(calls) != KERNEL_RUNS:
        names = sorted({k[2][:60] for k in kernels})
        print(f"  ({len(calls)} calls seen in the records, {KERNEL_RUNS} made; kernels: {names})")
        return None
    span = [(max(k[1] for k in c) - c[0][0]) / 1e3 for c in calls]
    summed = [sum(k[1] - k[0] for k in c) / 1e3 for c in calls]
    main = [(c[0][1] - c[0][0]) / 1e3 for c in calls]
    per_call = sorted({len(c) for c in calls})
    return (statistics.median(span), statistics.mean(summed), statistics.median(main), per_call,
            statistics.mean(span), max(span))


def metadata_time(fm, x):
    """FlashMLA's scheduling-metadata kernel (a call without metadata runs it before the main
    kernel): its duration from the CUPTI records, median of 30 calls back to back; nan when the
    records show no kernel named like it once per call."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA], acc_events=True) as prof:
        for _ in range(KERNEL_RUNS):
            fm.op(x.q, x.k, D_V, x.lens, x.table, x.scale, x.causal, None, None)
        torch.cuda.synchronize()
    durs = []
    for e in prof.profiler.kineto_results.events():
        if "metadata" in e.name().lower():
            durs.append((e.duration_ns() if hasattr(e, "duration_ns") else
                         e.duration_us() * 1000) / 1e3)
    return statistics.median(durs) if len(durs) == KERNEL_RUNS else float("nan")


def event_time(fm, x, flush, runs, spin=True):
    """spin=False ("ev hot"): calls back to back as in our benchmark's ev hot column (the
    Python dispatch overlaps the 256 MB memset, ~60 µs on an H100/H200)."""
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t = []
    for _ in range(runs):
        flush.zero_()
        # Keep the GPU busy while Python dispatches the call (~70 µs for D1 in session 11, which
        # the first event would otherwise count): a spin of ~0.5 ms, before the first event.
        # Our benchmark's ev column spins the same way (bench_dense_decode.cu, kEvSpinCycles).
        if spin:
            torch.cuda._sleep(1_000_000)
        e0.record()
        fm.call(x)
        e1.record()
        e1.synchronize()
        t.append(e0.elapsed_time(e1) * 1e3)
    return statistics.median(t)


def flop_bytes(case):
    flop = byte = 0.0
    for n in case["lens"]:
        for i in range(case["s_q"]):
            attended = max(0, n - case["s_q"] + i + 1) if case["causal"] else n
            flop += 2.0 * case["h_q"] * attended * (D_QK + D_V)
        byte += case["s_q"] * case["h_q"] * (D_QK + D_V) * 2.0 + n * D_QK * 2.0
    return flop, byte


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--ours", default="")
    ap.add_argument("--csv", default="")
    args = ap.parse_args()

    fm = FlashMLA(args.lib)
    ours = read_ours(args.ours)
    cases = read_cases(args.cases)
    kflush = torch.empty(KERNEL_FLUSH, dtype=torch.uint8, device="cuda")
    eflush = kflush[:EV_FLUSH]
    dev = torch.cuda.get_device_properties(0)
    print(f"FlashMLA ({args.lib}) dense decode on {dev.name} ({dev.multi_processor_count} SMs); "
          f"torch {torch.__version__}")
    print("  krn: call span from CUPTI records, median of 30, 8 GB memset before each; sum: the "
          "kernels' durations summed, mean (anchors.md's figure); ev: events, 256 MB memset and "
          "a 0.5 ms spin before each, median of 50; hot: the same without the spin (back to "
          "back, under the power limit); plan: the scheduling-metadata kernel alone (FlashMLA's "
          "get_mla_metadata, our plan kernel), back to back, median of 30. ours/FM > 1: we are "
          "slower.")
    hdr = (f"{'case':4} {'FM krn':>8} {'FM sum':>8} {'FM main':>8} {'FM ev':>8} {'TFLOPS':>7} "
           f"{'GB/s':>6} {'ours krn':>8} {'ours ev':>8} {'krn o/FM':>8} {'ev o/FM':>8} "
           f"{'FM hot':>8} {'ours hot':>8} {'hot o/FM':>8} {'FM plan':>8} {'our plan':>8}  check")
    rows = []
    print(hdr)
    for n, case in enumerate(cases):
        x = Inputs(case, seed=100 + n)
        out, lse = fm.plan_and_call(x)
        torch.cuda.synchronize()
        err, lse_err = reference_rel_l2(x, out, lse, min(case["b"], 4))
        check = "ok" if err < 1e-2 and lse_err < 1e-3 else "FAIL"
        for _ in range(3):
            fm.call(x)
        kt = kernel_times(fm, x, kflush)
        ev = event_time(fm, x, eflush, EV_RUNS)
        hot = event_time(fm, x, eflush, EV_RUNS, spin=False)
        plan = metadata_time(fm, x)
        krn, summed, main_us, per_call, span_mean, span_max = (
            kt if kt else (float("nan"),) * 3 + ([],) + (float("nan"),) * 2)
        flop, byte = flop_bytes(case)
        t = krn if kt else ev
        o_ev, o_krn, _, o_hot, o_plan = ours.get(case["name"], (float("nan"),) * 5)
        print(f"{case['name']:4} {krn:8.1f} {summed:8.1f} {main_us:8.1f} {ev:8.1f} "
              f"{flop / t * 1e-6:7.1f} {byte / t * 1e-3:6.0f} {o_krn:8.1f} {o_ev:8.1f} "
              f"{o_krn / krn:7.3f}x {o_ev / ev:7.3f}x {hot:8.1f} {o_hot:8.1f} "
              f"{o_hot / hot:7.3f}x {plan:8.1f} {o_plan:8.1f}  {check} (rel-L2 {err:.2e}, lse "
              f"{lse_err:.1e}; kernels/call {per_call}; span mean {span_mean:.1f}, max "
              f"{span_max:.1f})", flush=True)
        rows.append((case["name"], krn, summed, main_us, ev, o_krn, o_ev, err, check))
        del x, out, lse
        torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "a") as f:
            for r in rows:
                f.write("flashmla_ref dense_decode %s,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3e,%s\n" % r)
    return 0 if all(r[-1] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
