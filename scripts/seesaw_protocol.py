#!/usr/bin/env python3
"""A model check of the synchronisation of the sparse seesaw kernel (src/cuda/sparse/
kernel_seesaw.cuh) and of the producer kernel (kernel_producer.cuh), run on the CPU: its agents (consumer warpgroups 0 and 1, the producer or producer halves) replay
the kernel's sequence of barrier operations, shared-memory part writes and reads, under many
random interleavings and every block count up to a bound. It fails on a deadlock, on a read of a
buffer part that does not hold the block it expects (not yet written, or already overwritten),
and on a validity row read for the wrong block. A model, not the code: keep it in step with the
kernel when its protocol changes.
    usage: scripts/seesaw_protocol.py [--blocks N] [--runs R]
"""
import argparse
import random
import sys

PARTS = ["K0Lo", "K0Hi", "K1Lo", "K1Hi", "K0Rope", "K1Rope"]


class MBarrier:
    """mbarrier with an arrival count; wait(parity) passes once the phase of that parity is over
    (a fresh barrier passes parity 1)."""

    def __init__(self, count):
        self.count, self.pending, self.phase = count, count, 0

    def arrive(self, n=1):
        self.pending -= n
        assert self.pending >= 0, "more arrivals than the count in one phase"
        if self.pending == 0:
            self.phase += 1
            self.pending = self.count

    def passed(self, parity):
        return self.phase % 2 != parity


class Named:
    """A named barrier between the two consumer warpgroups: arrive (hand_off) or sync."""

    def __init__(self):
        self.arrived = {0: 0, 1: 0}

    def arrive(self, wg):
        # bar.arrive counts toward the barrier's current generation: a second arrival of the same
        # warpgroup before the other's would complete a generation with one side only.
        if self.arrived[wg] > self.arrived[1 - wg]:
            raise AssertionError(f"WG{wg} arrives twice on a named barrier before WG{1 - wg}")
        self.arrived[wg] += 1

    def done(self, wg):  # this warpgroup's latest arrival is matched by the other's
        return self.arrived[1 - wg] >= self.arrived[wg]


class Model:
    def __init__(self, n_blocks, rope, producer_kind):
        self.n = n_blocks
        self.rope = rope
        self.kind = producer_kind  # "bf16" (two halves) or "fp8" (one agent, global order)
        arrivals = 1  # the model lets one agent stand for a producer half's threads
        self.full = {(b, a): MBarrier(arrivals) for b in (0, 1) for a in range(9 if rope else 8)}
        self.empty = {p: MBarrier(1) for p in PARTS}
        self.named = {k: Named() for k in ("scale0", "scale1", "s0issued")}
        self.content = {}  # (buffer, part) -> block held (complete)
        self.valid_row = {0: None, 1: None}  # buffer -> block whose validity row is there
        self.log = []

    # ---- helpers -------------------------------------------------------------------------
    def atoms(self, part):
        return {"Lo": range(0, 4), "Hi": range(4, 8), "Rope": [8]}[part]

    def check(self, buf, part, block, what):
        held = self.content.get((buf, part))
        if held != block:
            raise AssertionError(f"{what}: K{buf} {part} holds block {held}, expected {block}")


def consumer(m, wg):
    """Warpgroup wg's program, as in sparse_seesaw_kernel (yields block until its condition)."""
    n, rope = m.n, m.rope
    parity = 0

    def wait_atoms(buf, atoms):
        for a in atoms:
            while not m.full[(buf, a)].passed(parity):
                yield "wait full"

    def issue_s(buf, order, block):
        for part in order:
            yield from wait_atoms(buf, m.atoms(part))
            m.check(buf, part, block, f"WG{wg} S reads")

    if wg < n:  # first S
        order = (["Rope"] if rope else []) + (["Lo", "Hi"] if wg == 0 else ["Hi", "Lo"])
        yield from issue_s(wg, order, wg)
        parity ^= 1
    for b in range(0, n, 2):
        has1, next0, next1 = b + 1 < n, b + 2 < n, b + 3 < n
        if wg == 0:
            assert m.valid_row[0] == b, f"WG0 reads validity of block {m.valid_row[0]}, not {b}"
            if rope:
                m.empty["K0Rope"].arrive()
            m.named["scale0"].arrive(0)  # hand_off
            m.check(0, "Lo", b, "WG0 P0 V0_L")
            m.empty["K0Lo"].arrive()
            m.named["scale1"].arrive(0)  # pair_sync
            while not m.named["scale1"].done(0):
                yield "pair_sync scale1"
            if has1:
                m.check(1, "Lo", b + 1, "WG0 P1 V1_L")
            if next0 and rope:
                yield from issue_s(0, ["Rope"], b + 2)
            if has1:
                m.empty["K1Lo"].arrive()
            if next0:
                yield from issue_s(0, ["Lo", "Hi"], b + 2)
                parity ^= 1
                m.named["s0issued"].arrive(0)
            yield "step end"
        else:
            if has1:
                assert m.valid_row[1] == b + 1, (
                    f"WG1 reads validity of block {m.valid_row[1]}, not {b + 1}")
            if rope and has1:
                m.empty["K1Rope"].arrive()
            m.named["scale0"].arrive(1)  # pair_sync
            while not m.named["scale0"].done(1):
                yield "pair_sync scale0"
            m.check(0, "Hi", b, "WG1 P0 V0_R")
            m.named["scale1"].arrive(1)  # hand_off
            if has1:
                m.check(1, "Hi", b + 1, "WG1 P1 V1_R")
            m.empty["K0Hi"].arrive()
            if has1:
                m.empty["K1Hi"].arrive()
            if next0:
                m.named["s0issued"].arrive(1)  # pair_sync
                while not m.named["s0issued"].done(1):
                    yield "pair_sync s0issued"
            if next1:
                yield from issue_s(1, (["Rope"] if rope else []) + ["Hi", "Lo"], b + 3)
                parity ^= 1
            yield "step end"


def fill(m, loads, buf, part, block, first):
    """A producer fills `part` of buffer `buf` with `block` (waiting for its empty barrier)."""
    name = f"K{buf}{part}"
    h = PARTS.index(name)
    while not m.empty[name].passed(((loads[0] >> h) & 1) ^ 1):
        yield f"wait empty {name}"
    loads[0] ^= 1 << h
    if first:
        m.valid_row[buf] = block
    m.content[(buf, part)] = None  # being written: no reader may see it
    yield "copying"
    m.content[(buf, part)] = block
    for a in m.atoms(part):
        m.full[(buf, a)].arrive()


def producer_half(m, buf):
    """bf16 producer half: blocks buf, buf + 2, ... into its buffer."""
    loads = [0]
    order = (["Rope"] if m.rope else []) + (["Lo", "Hi"] if buf == 0 else ["Hi", "Lo"])
    for blk in range(buf, m.n, 2):
        for i, part in enumerate(order):
            yield from fill(m, loads, buf, part, blk, i == 0)


def producer_fp8(m):
    """FP8 (V3.2) producer: both buffers, in the consumers' release order within a step."""
    loads = [0]
    for b in range(0, m.n, 2):
        has1 = b + 1 < m.n
        yield from fill(m, loads, 0, "Rope", b, True)
        if has1:
            yield from fill(m, loads, 1, "Rope", b + 1, True)
        yield from fill(m, loads, 0, "Lo", b, False)
        yield from fill(m, loads, 0, "Hi", b, False)
        if has1:
            yield from fill(m, loads, 1, "Hi", b + 1, False)
            yield from fill(m, loads, 1, "Lo", b + 1, False)


# ---- the producer kernel (kernel_producer.cuh): lockstep consumers, one producer -----------

class SyncBar:
    """bar.sync between the two consumer warpgroups (both wait)."""

    def __init__(self):
        self.arrived = {0: 0, 1: 0}

    def sync(self, wg):
        self.arrived[wg] += 1
        while self.arrived[1 - wg] < self.arrived[wg]:
            yield "bar.sync"


def lockstep_consumer(m, wg):
    for it in range(m.n):
        s = it & 1
        while not m.full[s].passed((it >> 1) & 1):
            yield "wait full"
        m.check_stage(s, it, f"WG{wg} S")
        m.row_max[wg] = it  # publishes its row maxima
        yield from m.bar_rowmax.sync(wg)
        assert m.row_max[1 - wg] == it, f"WG{wg} reads row maxima of tile {m.row_max[1 - wg]}"
        m.p_half[wg] = it  # writes its half of P (P V of tile it - 1 must be over: below)
        assert m.pv_reading[1 - wg] in (None, it), "P rewritten under the other's P V"
        yield from m.bar_p.sync(wg)
        assert m.p_half[1 - wg] == it
        m.pv_reading[wg] = it
        m.check_stage(s, it, f"WG{wg} P V")
        yield "P V"
        m.check_stage(s, it, f"WG{wg} P V done")
        m.pv_reading[wg] = None
        m.empty[s].arrive()  # the warpgroup's warps (one arrival in the model)


def stage_producer(m):
    for it in range(m.n):
        s = it & 1
        while not m.empty[s].passed(((it >> 1) & 1) ^ 1):
            yield "wait empty"
        m.stage[s] = None
        yield "gathering"
        m.stage[s] = it
        m.full[s].arrive()


class ProducerKernelModel:
    def __init__(self, n):
        self.n = n
        self.full = [MBarrier(1), MBarrier(1)]
        self.empty = [MBarrier(2), MBarrier(2)]
        self.stage = [None, None]
        self.row_max = [None, None]
        self.p_half = [None, None]
        self.pv_reading = [None, None]
        self.bar_rowmax, self.bar_p = SyncBar(), SyncBar()

    def check_stage(self, s, it, what):
        if self.stage[s] != it:
            raise AssertionError(f"{what}: stage {s} holds tile {self.stage[s]}, expected {it}")


def run_producer_kernel(n, rng):
    m = ProducerKernelModel(n)
    return schedule({"WG0": lockstep_consumer(m, 0), "WG1": lockstep_consumer(m, 1),
                     "P": stage_producer(m)}, n, rng)


def schedule(agents, n_blocks, rng):
    live = dict(agents)
    stalled_rounds = 0
    while live:
        name = rng.choice(sorted(live))
        try:
            what = next(live[name])
        except StopIteration:
            del live[name]
            stalled_rounds = 0
            continue
        # A deadlock: every live agent keeps reporting a wait.
        stalled_rounds = stalled_rounds + 1 if what.startswith(("wait", "pair_sync", "bar")) else 0
        if stalled_rounds > 10000:
            raise AssertionError(f"deadlock with {n_blocks} blocks: live {sorted(live)}")


def run(n_blocks, rope, kind, rng):
    m = Model(n_blocks, rope, kind)
    agents = {"WG0": consumer(m, 0), "WG1": consumer(m, 1)}
    if kind == "bf16":
        agents["P0"] = producer_half(m, 0)
        agents["P1"] = producer_half(m, 1)
    else:
        agents["P"] = producer_fp8(m)
    schedule(agents, n_blocks, rng)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(1)
    cases = [(rope, kind) for kind in ("bf16", "fp8") for rope in (True, False)
             if not (kind == "fp8" and not rope)]
    for rope, kind in cases:
        for n in range(args.blocks + 1):
            for _ in range(args.runs):
                run(n, rope, kind, rng)
        print(f"seesaw protocol, {kind} producer, {'RoPE atom' if rope else 'no RoPE atom'}: "
              f"0..{args.blocks} blocks x {args.runs} interleavings ok")
    for n in range(args.blocks + 1):
        for _ in range(args.runs):
            run_producer_kernel(n, rng)
    print(f"producer kernel protocol: 0..{args.blocks} tiles x {args.runs} interleavings ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
