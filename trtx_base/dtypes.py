"""The one dtype table: our dtype names with their numpy, TensorRT, torch and Triton equivalents.

Names are numpy's (``float32``, ``float16``, ``int32`` ...). TensorRT and torch are never imported here:
TensorRT members are looked up through :mod:`trtx_base.backend`, torch dtypes by name when asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: name -> (TensorRT DataType member, torch dtype attribute, numpy dtype or None where numpy has none,
#: Triton model-config DataType)
TABLE: dict[str, tuple[str, str, Any, str]] = {
    "float32": ("FLOAT", "float32", np.float32, "TYPE_FP32"),
    "float16": ("HALF", "float16", np.float16, "TYPE_FP16"),
    "bfloat16": ("BF16", "bfloat16", None, "TYPE_BF16"),
    "int64": ("INT64", "int64", np.int64, "TYPE_INT64"),
    "int32": ("INT32", "int32", np.int32, "TYPE_INT32"),
    "int8": ("INT8", "int8", np.int8, "TYPE_INT8"),
    "uint8": ("UINT8", "uint8", np.uint8, "TYPE_UINT8"),
    "bool": ("BOOL", "bool", np.bool_, "TYPE_BOOL"),
}
_BY_TRT = {row[0]: name for name, row in TABLE.items()}
_TORCH_ALIASES = {"half": "float16", "float": "float32", "int": "int32", "long": "int64", "double": "float64"}


def name_of(dtype: Any) -> str:
    """Any dtype -- a name, numpy dtype, TensorRT DataType or torch dtype -> our name (``'float32'`` ...)."""
    if isinstance(dtype, str):
        return dtype
    text = str(dtype)
    if text.startswith("torch."):
        return _TORCH_ALIASES.get(text[6:], text[6:])
    if text.startswith("DataType."):
        member = text.split(".", 1)[1]
        return _BY_TRT.get(member, member.lower())
    return np.dtype(dtype).name


def trt_dtype(dtype: Any):
    """Any dtype -> TensorRT DataType (a DataType is returned unchanged)."""
    from trtx_base import backend

    trt = backend.trt
    if isinstance(dtype, trt.DataType):
        return dtype
    name = name_of(dtype)
    if name not in TABLE:
        raise ValueError(f"dtype {name} has no TensorRT equivalent")
    return getattr(trt.DataType, TABLE[name][0])


def np_dtype(dtype: Any) -> np.dtype:
    """Any dtype -> numpy dtype."""
    name = name_of(dtype)
    row = TABLE.get(name)
    if row is not None and row[2] is None:
        raise ValueError(f"dtype {name} has no numpy equivalent")
    return np.dtype(row[2] if row is not None else name)


def torch_dtype(dtype: Any):
    """Any dtype -> torch dtype (imports torch)."""
    import torch

    name = name_of(dtype)
    return getattr(torch, TABLE[name][1] if name in TABLE else name)


def triton_type(dtype: Any) -> str:
    """Any dtype -> Triton's model-config DataType name (``TYPE_FP32`` ...)."""
    name = name_of(dtype)
    if name not in TABLE:
        raise ValueError(f"dtype {name} has no Triton equivalent")
    return TABLE[name][3]
