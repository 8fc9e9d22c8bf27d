"""Step-loop statistics of kernels in cuobjdump -sass output (stdin); see scripts/sass-step."""
import collections
import re
import sys

INSTR = re.compile(r"^\s+/\*([0-9a-f]{4,6})\*/\s+(\S.*?)\s*;")


def step_loop(instrs):
    """(start offset, body) of the steady-state step: the shortest loop (backward branch)
    holding at least half as many wgmmas as the loop that holds the most (the chunk loop around
    it also holds the first S)."""
    index = {a: i for i, (a, _) in enumerate(instrs)}
    loops = []
    for i, (addr, op) in enumerate(instrs):
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", op)
        if not m:
            continue
        target = int(m.group(1), 16)
        if target < addr and target in index:
            body = [o for _, o in instrs[index[target]:i + 1]]
            loops.append((sum("HGMMA" in o for o in body), target, body))
    if not loops:
        return 0, []
    most = max(h for h, _, _ in loops)
    _, start, body = min(((h, t, b) for h, t, b in loops if 2 * h >= most and h > 0),
                         key=lambda x: len(x[2]))
    return start, body


def opcode(op):
    return re.sub(r"^@!?U?P\w+\s+", "", op).split()[0]


def main():
    pattern = re.compile(sys.argv[1] if len(sys.argv) > 1 else "pair_kernel")
    text = sys.stdin.read()
    for part in re.split(r"\n\s*Function : ", text)[1:]:
        name = part.split("\n", 1)[0].strip()
        if not pattern.search(name):
            continue
        instrs = []
        for line in part.split("\n"):
            m = INSTR.match(line)
            if m:
                instrs.append((int(m.group(1), 16), m.group(2)))
        start, body = step_loop(instrs)
        c = collections.Counter(opcode(o) for o in body)
        padding = sum(o.startswith("@!PT LDS") for o in body)
        hgmma = sum(v for k, v in c.items() if k.startswith("HGMMA"))
        print(f"{name[:100]}\n  total {len(instrs)}, step loop {len(body)} (HGMMA {hgmma}), "
              f"UMOV {c['UMOV']}, LDS {c['LDS'] - padding} (+{padding} padding), S2R {c['S2R']}, "
              f"R2UR {c['R2UR']}, BSSY {c['BSSY']}; loop at 0x{start:x} (mod 128: {start % 128})")


if __name__ == "__main__":
    main()
