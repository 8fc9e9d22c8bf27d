"""Host-side cost of one flash_mla call from Python (the part a CUDA graph removes).

Run: python3 bench/python_call_overhead.py   (needs torch; uses CUDA when available)
Prints microseconds per call for the public function and, for comparison, for the torch custom
op alone, on a tiny dense-decode problem so that the kernel time does not dominate.
"""
import time

import torch

import flash_mla


def per_call_us(fn, n=300):
    for _ in range(20):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def main():
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    b, s_q, h_q, pbs = 1, 1, 16, 64
    q = (torch.randn(b, s_q, h_q, 576, device=dev) / 10).bfloat16()
    k = (torch.randn(4, pbs, 1, 576, device=dev) / 10).bfloat16()
    bt = torch.arange(4, dtype=torch.int32, device=dev).view(1, 4)
    sl = torch.tensor([200], dtype=torch.int32, device=dev)
    meta, _ = flash_mla.get_mla_metadata()
    try:
        flash_mla.flash_mla_with_kvcache(q, k, bt, sl, 512, meta)
    except NotImplementedError as e:
        print(f"dense decode not available on {dev}: {e}")
        return
    tsm = meta.tile_scheduler_metadata
    api = per_call_us(lambda: flash_mla.flash_mla_with_kvcache(q, k, bt, sl, 512, meta))
    op = per_call_us(lambda: torch.ops.flash_mla.dense_decode(q, k, bt, sl, tsm, 512, None, False))
    print(f"device {dev}: flash_mla_with_kvcache {api:.1f} us/call (host), "
          f"torch.ops.flash_mla.dense_decode {op:.1f} us/call (host)")


if __name__ == "__main__":
    main()
