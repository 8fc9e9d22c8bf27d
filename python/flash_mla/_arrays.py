"""Framework plumbing: what the bindings receive, where outputs are allocated, which stream.

Layers: public functions (flash_mla_interface.py, kv_cache.py) -> torch custom ops
(_torch_ops.py, when the inputs are torch tensors) or the array path below (numpy and other
DLPack producers) -> flash_mla._C (nanobind) -> the flashmla C++ API.

Outputs are allocated in the caller's framework: ``torch.empty`` on the input's device for torch
tensors, ``numpy.empty`` for everything on the CPU that is not torch. numpy has no bfloat16 or
float8: those arrays are ``ml_dtypes`` arrays, handed to the bindings as a same-size integer view
plus an explicit dtype (flash_mla._C.DType).
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Tuple

import numpy as np

from . import _C

try:  # PyTorch is optional: the package works with numpy alone.
    import torch as _torch
except ImportError:  # pragma: no cover - exercised only where torch is absent
    _torch = None

try:
    import ml_dtypes as _ml_dtypes
except ImportError:  # pragma: no cover
    _ml_dtypes = None

DType = _C.DType

# Internal dtype names used by the Python layer.
BF16, FP16, F32, I32, U8, FP8 = "bfloat16", "float16", "float32", "int32", "uint8", "float8_e4m3fn"


def have_torch() -> bool:
    return _torch is not None


def is_torch(x: Any) -> bool:
    return _torch is not None and isinstance(x, _torch.Tensor)


def _ml_dtype(name: str):
    if _ml_dtypes is None:
        raise TypeError(
            f"numpy arrays of dtype {name} need the ml_dtypes package (pip install ml_dtypes)")
    return np.dtype(getattr(_ml_dtypes, name))


def numpy_dtype(name: str) -> np.dtype:
    if name in (BF16, FP8):
        return _ml_dtype(name)
    return np.dtype(name)


def torch_dtype(name: str):
    return getattr(_torch, name)


# ---- inputs -------------------------------------------------------------------------------------

def to_binding(x: Any) -> Any:
    """An argument as flash_mla._C takes it: None, a DLPack array, or (array, DType)."""
    if x is None:
        return None
    if is_torch(x):
        x = x.detach()
        if x.dtype == _torch.float8_e4m3fn:
            return (x.view(_torch.uint8), DType.float8_e4m3fn)
        return x
    if isinstance(x, np.ndarray):
        if _ml_dtypes is not None:
            if x.dtype == _ml_dtypes.bfloat16:
                return (x.view(np.uint16), DType.bfloat16)
            if x.dtype == _ml_dtypes.float8_e4m3fn:
                return (x.view(np.uint8), DType.float8_e4m3fn)
        return x
    return x  # any other DLPack producer; the bindings report what they cannot read


def dlpack_device(x: Any) -> Tuple[int, int]:
    """(DLPack device type, index): 1 = CPU, 2 = CUDA."""
    if is_torch(x):
        return (2, x.device.index or 0) if x.is_cuda else (1, 0)
    if isinstance(x, np.ndarray):
        return (1, 0)
    if hasattr(x, "__dlpack_device__"):
        dev = x.__dlpack_device__()
        return int(dev[0]), int(dev[1])
    return (1, 0)


def normalize_inputs(*xs: Any) -> Tuple[Any, ...]:
    """Maps foreign DLPack arrays into torch (any device) or numpy (CPU), zero-copy.

    torch tensors and numpy arrays pass unchanged. Others (cupy, jax, ...) become torch tensors
    when they live on a GPU (torch is then required) and numpy arrays when on the CPU.
    """
    out = []
    for x in xs:
        if x is None or is_torch(x) or isinstance(x, np.ndarray) or not hasattr(x, "__dlpack__"):
            out.append(x)
        elif dlpack_device(x)[0] == 2:
            if _torch is None:
                raise TypeError("GPU arrays from frameworks other than PyTorch are wrapped with "
                                "torch.from_dlpack, which needs PyTorch installed")
            out.append(_torch.from_dlpack(x))
        else:
            out.append(np.from_dlpack(x))
    return tuple(out)


def as_torch_args(op: str, values: Dict[str, Any], optional: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Arguments for a torch custom op (whose schema takes only torch tensors).

    numpy arrays become torch tensors sharing their memory (the C++ layer then reports a device
    mismatch if they are not where q is); anything else is a TypeError naming the argument.
    """
    out = {}
    for name, x in values.items():
        if x is None:
            if name not in optional:
                raise argument_error(ValueError, op, name, "is required but was None")
        elif not is_torch(x):
            if isinstance(x, np.ndarray):
                b = to_binding(x)
                if isinstance(b, tuple):  # bfloat16 / float8 numpy arrays
                    b, dt = b
                    x = _torch.from_numpy(b).view(
                        _torch.bfloat16 if dt == DType.bfloat16 else _torch.float8_e4m3fn)
                else:
                    x = _torch.from_numpy(x)
            else:
                raise argument_error(TypeError, op, name,
                                     f"expected a torch.Tensor (like q), got {type(x).__name__}")
        out[name] = x
    return out


# ---- outputs (numpy path) -----------------------------------------------------------------------

def np_empty(shape, name: str) -> np.ndarray:
    return np.empty(tuple(int(s) for s in shape), dtype=numpy_dtype(name))


def np_dtype_name(x: np.ndarray) -> str:
    """flashmla's name for a numpy array's dtype (the name of the numpy dtype otherwise)."""
    if _ml_dtypes is not None and x.dtype == _ml_dtypes.bfloat16:
        return BF16
    if _ml_dtypes is not None and x.dtype == _ml_dtypes.float8_e4m3fn:
        return FP8
    return str(x.dtype)


# ---- streams ------------------------------------------------------------------------------------

def torch_stream(t: Any) -> int:
    """Raw cudaStream_t of PyTorch's current stream on t's device (0 for CPU tensors)."""
    if t is not None and t.is_cuda:
        return _torch.cuda.current_stream(t.device).cuda_stream
    return 0


# ---- errors -------------------------------------------------------------------------------------

@contextlib.contextmanager
def public_argument_names(mapping: Dict[str, str]) -> Iterator[None]:
    """Re-raises a C++ argument error under the public parameter name.

    The C++ layer names arguments as in its params structs (e.g. 'sched_meta'); FlashMLA's
    Python signatures call some of them differently (tile_scheduler_metadata). Type and message
    are kept; only the quoted argument name changes.
    """
    try:
        yield
    except (ValueError, TypeError, NotImplementedError) as e:
        arg = getattr(e, "argument", None)
        if arg is None or arg not in mapping:
            raise
        new = mapping[arg]
        err = type(e)(str(e).replace(f"argument '{arg}'", f"argument '{new}'", 1))
        err.argument = new
        err.op = getattr(e, "op", None)
        raise err from None


def argument_error(kind: type, op: str, argument: str, detail: str) -> Exception:
    """An error raised by the Python layer, shaped like the C++ layer's."""
    err = kind(f"{op}: argument '{argument}': {detail}")
    err.argument = argument
    err.op = op
    return err
