"""FP8 KV cache helpers: quantize a bfloat16 paged cache into FlashMLA's FP8 layouts and back.

Layouts (SPEC.md §3, include/flashmla/kv_layout.h):
  "v32"    (DeepSeek V3.2, d = 576): 656 bytes per token = 512 e4m3 NoPE values, 4 float32
           scales (one per 128 values), 64 bfloat16 RoPE values. Returned as
           [num_blocks, page_block_size, 1, 656], contiguous.
  "model1" (d = 512): per page block, page_block_size x (448 e4m3 NoPE + 64 bfloat16 RoPE) bytes,
           then page_block_size x 8 scale bytes (7 UE8M0 + 1 pad), the block padded to a
           multiple of 576 bytes. Returned as FlashMLA's nominal view
           [num_blocks, page_block_size, 1, 584] whose block stride is the padded block size.
Tile scales are powers of two: 2^ceil(log2(max(amax / 448, 1e-4))). The codecs are byte-exact
and identical on the CPU and the GPU.

torch tensors give torch.float8_e4m3fn caches (as FlashMLA's own helper); numpy arrays give
uint8 caches (numpy has no float8; view as ml_dtypes.float8_e4m3fn if wanted). bfloat16 numpy
arrays are ml_dtypes.bfloat16.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _C, _ops
from ._arrays import BF16, U8, argument_error, have_torch, is_torch, normalize_inputs, np_empty

if have_torch():
    import torch

    from . import _torch_ops

    _constant_result = torch.compiler.assume_constant_result
else:  # pragma: no cover
    def _constant_result(fn):
        return fn

# Byte layouts, read once from the C++ headers (kv_layout.h) through the bindings.
_V32_DIM, _V32_BYTES = int(_C.V32_DIM_QK), int(_C.V32_BYTES_PER_TOKEN)
_MODEL1_DIM, _MODEL1_BYTES = int(_C.MODEL1_DIM_QK), int(_C.MODEL1_BYTES_PER_TOKEN)


@_constant_result
def _model1_block_bytes(page_block_size: int) -> int:
    # Constant for a page size (torch.compile bakes the value in).
    return int(_C.model1_min_block_bytes(page_block_size))

_ALIASES = {"v32": "v32", "V32_FP8Sparse": "v32", "model1": "model1", "MODEL1_FP8Sparse": "model1"}


def _layout(op: str, layout: Any) -> str:
    name = getattr(layout, "name", layout)  # FlashMLA's FP8KVCacheLayout enum members too
    if name not in _ALIASES:
        raise argument_error(ValueError, op, "layout",
                             f"expected \"v32\" or \"model1\", got {layout!r}")
    return _ALIASES[name]


def _quant_storage(num_blocks: int, pbs: int, layout: str, like: Any):
    """Allocates an FP8 cache view [num_blocks, pbs, 1, bytes] (see module doc)."""
    if layout == "v32":
        bytes_per_token = _V32_BYTES
        block = pbs * bytes_per_token
    else:
        bytes_per_token = _MODEL1_BYTES
        block = _model1_block_bytes(pbs)
    shape = (num_blocks, pbs, 1, bytes_per_token)
    strides = (block, bytes_per_token, bytes_per_token, 1)
    if is_torch(like):
        storage = torch.empty((num_blocks, block), dtype=torch.float8_e4m3fn, device=like.device)
        return storage.as_strided(shape, strides)
    storage = np_empty((num_blocks, block), U8)
    return np.lib.stride_tricks.as_strided(storage, shape, strides, writeable=True)


def quantize_kv_cache(k_cache: Any, layout: Any = "v32") -> Any:
    """Quantizes a bfloat16 cache [num_blocks, page_block_size, 1, d] (d = 576 for "v32", 512
    for "model1") into the FP8 layout; returns the FP8 cache view (see the module doc)."""
    op = "quantize_kv_cache"
    name = _layout(op, layout)
    (k_cache,) = normalize_inputs(k_cache)
    shape = getattr(k_cache, "shape", None)
    if shape is None or len(shape) != 4:
        raise argument_error(ValueError, op, "k_cache",
                             f"expected rank 4 [num_blocks, page_block_size, 1, d], got shape "
                             f"{list(shape) if shape is not None else None}")
    quant = _quant_storage(int(shape[0]), int(shape[1]), name, k_cache)
    if is_torch(k_cache):
        _torch_ops.call("kv_quantize", k_cache, quant, name)
    else:
        _ops.kv_quantize(name, k_cache, quant, 0)
    return quant


def dequantize_kv_cache(quant_cache: Any, layout: Any = "v32") -> Any:
    """Dequantizes an FP8 cache [num_blocks, page_block_size, 1, bytes] back to bfloat16
    [num_blocks, page_block_size, 1, d] (exact: x = e4m3 value * tile scale)."""
    op = "dequantize_kv_cache"
    name = _layout(op, layout)
    (quant_cache,) = normalize_inputs(quant_cache)
    shape = getattr(quant_cache, "shape", None)
    if shape is None or len(shape) != 4:
        raise argument_error(ValueError, op, "quant_cache",
                             f"expected rank 4 [num_blocks, page_block_size, 1, bytes], got shape "
                             f"{list(shape) if shape is not None else None}")
    d = _V32_DIM if name == "v32" else _MODEL1_DIM
    out_shape = (int(shape[0]), int(shape[1]), 1, d)
    if is_torch(quant_cache):
        out = torch.empty(out_shape, dtype=torch.bfloat16, device=quant_cache.device)
        _torch_ops.call("kv_dequantize", quant_cache, out, name)
    else:
        out = np_empty(out_shape, BF16)
        _ops.kv_dequantize(name, quant_cache, out, 0)
    return out
