#!/usr/bin/env python3
"""A model check of the synchronisation of the warp-specialised MHA prefill forward kernel
(src/cuda/mha_prefill/kernel_ws.cuh), run on the CPU: its agents -- the producer warpgroup and
the two consumer warpgroups A and B -- replay the kernel's barrier operations and shared-memory
stage reads and writes under many random interleavings, for every tile count up to a bound.
It fails on a deadlock, on a stage read that does not hold the tile the reader expects (not yet
landed, or already refilled), on a stage refilled while a warpgroup still reads it, on a named
barrier receiving a second arrival before its owner synced on the first (which would complete a
generation with one side only), and on named barriers left unbalanced at the end.

The schedule it checks: the producer fills stages s = t % 2 (Q with tile 0): per iteration it
waits for the previous tile's copies and arrives on that stage's full barrier, then waits for
empty[s] (both warpgroups' releases of tile t - 2) before issuing tile t's copies. Each
consumer, per tile: wait full[s]; sync on its own named barrier (its turn to issue); issue S;
arrive on the other's barrier; softmax; sync on its own; issue P V; arrive on the other's (B
skips this on its last tile, so the counts balance); wait for P V; release the stage. B arrives
once on A's barrier at the start (when there is a tile), so A issues first. A model, not the code: keep it in step
with the kernel when its protocol changes.
    usage: scripts/mha_pingpong_protocol.py [--tiles N] [--runs R]
"""
import argparse
import random
import sys


class MBarrier:
    """mbarrier with an arrival count; wait(parity) passes once the phase of that parity is over
    (a fresh barrier passes parity 1), as the hardware's try_wait.parity does."""

    def __init__(self, count):
        self.count, self.pending, self.phase = count, count, 0

    def arrive(self):
        self.pending -= 1
        if self.pending == 0:
            self.phase += 1
            self.pending = self.count

    def passed(self, parity):
        return self.phase % 2 != parity


class Named:
    """A named barrier owned by one consumer warpgroup: the owner syncs (128 threads), the other
    arrives (128 threads); a generation completes with one of each."""

    def __init__(self, name):
        self.name, self.arrivals, self.syncs = name, 0, 0

    def arrive(self):
        if self.arrivals > self.syncs:
            raise AssertionError(f"a second arrival on {self.name} before its owner's sync")
        self.arrivals += 1

    def can_sync(self):
        return self.arrivals > self.syncs

    def sync(self):
        self.syncs += 1


class Model:
    def __init__(self, n_tiles):
        self.n = n_tiles
        self.full = [MBarrier(1), MBarrier(1)]   # the producer agent stands for its 128 threads
        self.empty = [MBarrier(2), MBarrier(2)]  # one release per consumer warpgroup
        self.bar = {"A": Named("bar_A"), "B": Named("bar_B")}
        self.stage = [None, None]                # tile whose copies landed in each stage
        self.readers = [set(), set()]

    def producer(self):
        # Tile t's copies are issued into stage t % 2 (Q with tile 0); full[t % 2] gets its
        # arrival once they landed, at the top of the next iteration (or after the loop).
        for t in range(self.n + 1):
            if t >= 1:
                yield lambda: True  # wait for the copies of tile t - 1, proxy fence
                self.full[(t - 1) % 2].arrive()
            if t == self.n:
                break
            s = t % 2
            if t >= 2:
                parity = (t // 2 - 1) & 1
                yield lambda s=s, parity=parity: self.empty[s].passed(parity)
            if self.readers[s]:
                raise AssertionError(f"stage {s} refilled with tile {t} while "
                                     f"{sorted(self.readers[s])} still read it")
            self.stage[s] = t

    def consumer(self, me):
        other = "B" if me == "A" else "A"
        if me == "B" and self.n > 0:  # (no tiles: no turns, no arrival)
            self.bar["A"].arrive()
        for t in range(self.n):
            s = t % 2
            parity = (t // 2) & 1
            yield lambda s=s, parity=parity: self.full[s].passed(parity)
            for product in ("S", "PV"):
                yield lambda: self.bar[me].can_sync()
                self.bar[me].sync()
                if self.stage[s] != t:
                    raise AssertionError(f"{me} issues {product} of tile {t} on stage {s}, which "
                                         f"holds tile {self.stage[s]}")
                self.readers[s].add(me)
                if not (me == "B" and product == "PV" and t == self.n - 1):
                    self.bar[other].arrive()
                yield lambda: True  # softmax, or the wait for P V
            self.readers[s].discard(me)
            self.empty[s].arrive()

    def run(self, rng):
        agents = {"P": self.producer(), "A": self.consumer("A"), "B": self.consumer("B")}
        waits = {name: (lambda: True) for name in agents}
        while agents:
            ready = [name for name in agents if waits[name]()]
            if not ready:
                raise AssertionError(f"deadlock with {sorted(agents)} blocked")
            name = rng.choice(ready)
            try:
                waits[name] = next(agents[name])
            except StopIteration:
                del agents[name]
        for b in self.bar.values():
            if b.arrivals != b.syncs:
                raise AssertionError(f"{b.name} ends with {b.arrivals} arrivals, {b.syncs} syncs")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=9)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    rng = random.Random(30)
    for n in range(0, args.tiles + 1):
        for _ in range(args.runs):
            try:
                Model(n).run(rng)
            except AssertionError as e:
                print(f"mha ping-pong protocol, {n} tiles: {e}")
                return 1
    print(f"mha ping-pong protocol: 0..{args.tiles} tiles x {args.runs} interleavings ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
