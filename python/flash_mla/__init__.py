"""flash_mla: Multi-head Latent Attention kernels with FlashMLA's Python API.

A drop-in for DeepSeek FlashMLA's ``flash_mla`` package on top of the framework-free flashmla
C++ library: CUDA kernels on Hopper where they exist, a CPU backend everywhere. Works with torch
tensors (CPU and CUDA; registered as torch custom ops ``torch.ops.flash_mla.*`` so
torch.compile traces them), numpy arrays, and other DLPack arrays. PyTorch is optional.

``python -m flash_mla`` prints which backends and kernels this build has.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import _C
from .flash_mla_interface import (
    FlashMLASchedMeta,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    flash_mla_sparse_fwd,
    flash_mla_with_kvcache,
    get_mla_metadata,
)
from .kv_cache import dequantize_kv_cache, quantize_kv_cache
from .testing import VerifyReport, verify_mla_attention


def describe_backends() -> str:
    """Backends, devices and the operations with kernels on each (from the C++ library)."""
    return _C.describe_backends()


def built_with_cuda() -> bool:
    """Whether this build compiled the CUDA kernels."""
    return _C.built_with_cuda()


__all__ = [
    "get_mla_metadata",
    "flash_mla_with_kvcache",
    "flash_attn_varlen_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_mla_sparse_fwd",
    "FlashMLASchedMeta",
    "quantize_kv_cache",
    "dequantize_kv_cache",
    "verify_mla_attention",
    "VerifyReport",
    "describe_backends",
    "built_with_cuda",
]
