"""Shared helpers for the flash_mla pytest suite (tests/python).

Inputs are made in numpy (bfloat16 as ml_dtypes) and converted to the framework under test;
results come back to numpy for comparison with the float64 references in reference.py.
"""
from __future__ import annotations

import os
import sys

import ml_dtypes
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

try:
    import torch
except ImportError:
    torch = None

HAVE_CUDA = torch is not None and torch.cuda.is_available()
BF16 = ml_dtypes.bfloat16

FRAMEWORKS = ["numpy"] + (["torch"] if torch is not None else [])


@pytest.fixture(params=FRAMEWORKS)
def fw(request):
    """The framework under test on the CPU: 'numpy' always, 'torch' when importable."""
    return request.param


def act(rng: np.random.Generator, shape, dtype=BF16) -> np.ndarray:
    """Activation-like values: randn / 10 clamped to [-1, 1] (SPEC.md §7)."""
    return np.clip(rng.standard_normal(shape) / 10, -1, 1).astype(dtype)


def to_fw(x, fw: str, device: str = "cpu"):
    """numpy (bf16 = ml_dtypes) -> the framework's tensor on `device`."""
    if x is None or fw == "numpy":
        return x
    if x.dtype == BF16:
        t = torch.from_numpy(np.ascontiguousarray(x).view(np.int16)).view(torch.bfloat16)
    elif x.dtype == ml_dtypes.float8_e4m3fn:
        t = torch.from_numpy(np.ascontiguousarray(x).view(np.uint8)).view(torch.float8_e4m3fn)
    else:
        t = torch.from_numpy(np.ascontiguousarray(x))
    return t.to(device)


def to_np(x) -> np.ndarray:
    """A framework tensor -> numpy (bf16 as ml_dtypes, float8 as uint8)."""
    from flash_mla.testing import _host

    return _host(x)


def assert_close(name: str, got, ref: np.ndarray, atol: float, rtol: float) -> None:
    """Elementwise |got - ref| <= atol + rtol * |ref|, inf positions equal; the failure names
    the worst element, both values and the pass rate."""
    got = np.asarray(to_np(got)).astype(np.float64)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    inf_g, inf_r = np.isinf(got), np.isinf(ref)
    assert (inf_g == inf_r).all() and (got[inf_g] == ref[inf_r]).all(), \
        f"{name}: inf positions differ at {np.argwhere(inf_g != inf_r)[:5].tolist()}"
    g, r = got[~inf_g], ref[~inf_r]
    err = np.abs(g - r)
    err = np.where(np.isnan(err), np.inf, err)
    tol = atol + rtol * np.abs(r)
    ok = err <= tol
    if not ok.all():
        w = int(np.argmax(err - tol))
        raise AssertionError(f"{name}: {ok.mean():.4%} of {ok.size} within tolerance; worst "
                             f"element (flat {w}): got {g[w]!r}, expected {r[w]!r}")
