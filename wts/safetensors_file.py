"""``.safetensors`` files, read and written with numpy alone (the format is an 8-byte header length,
a JSON header and one data buffer), so deploy-time code needs neither torch nor the safetensors package.

float32 little-endian tensors are returned as zero-copy read-only views of a memory map; other dtypes
are converted to float32 (integers such as ``num_batches_tracked`` included, as in ``.wts`` files).
"""

from __future__ import annotations

import json
import math
import mmap
import os
import stat
from collections.abc import Callable, Iterable

import numpy as np

from wts.errors import WtsFormatError
from wts.text import check_name

#: safetensors dtype -> numpy dtype (bfloat16 is handled by hand)
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
MAX_HEADER = 100 * 1024 * 1024


def _no_duplicates(path: str):
    def hook(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise WtsFormatError(path, None, key, "the JSON header names this tensor twice")
            seen[key] = value
        return seen

    return hook


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``name -> flat float32 array`` in header order; raises WtsFormatError on any inconsistency."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise WtsFormatError(path, None, None, "not a regular file (safetensors are read in place)")
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise WtsFormatError(path, None, None, "empty file")
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if size < 8:
        raise WtsFormatError(path, None, None, f"{size} bytes is too short for a safetensors header")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > min(MAX_HEADER, size - 8):
        raise WtsFormatError(path, None, None, f"header length {header_len} exceeds the file ({size} bytes)")
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]).decode("utf-8"), object_pairs_hook=_no_duplicates(path))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WtsFormatError(path, None, None, f"JSON header is unreadable: {exc}") from None
    if not isinstance(header, dict):
        raise WtsFormatError(path, None, None, "JSON header is not an object")
    header.pop("__metadata__", None)
    base = 8 + header_len
    data_len = size - base
    spans = []
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        dtype, count, begin, end = _entry(path, name, info, data_len)
        spans.append((begin, end, name))
        if count == 0:
            tensors[name] = np.empty(0, dtype=np.float32)
            continue
        raw = np.ndarray((count,), dtype=DTYPES[dtype], buffer=data, offset=base + begin)
        tensors[name] = _to_float32(dtype, raw)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            problem = "overlaps another tensor" if begin < position else f"leaves a gap at byte {position}"
            raise WtsFormatError(path, None, name, f"data_offsets [{begin}, {end}] {problem}")
        position = end
    if position != data_len:
        raise WtsFormatError(path, None, None, f"tensors cover {position} of the {data_len} data bytes")
    return tensors


def _entry(path: str, name: str, info, data_len: int) -> tuple[str, int, int, int]:
    def bad(problem: str) -> WtsFormatError:
        return WtsFormatError(path, None, name, problem)

    if not isinstance(info, dict):
        raise bad("header entry is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPES:
        raise bad(f"unsupported dtype {dtype!r} (supported: {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise bad(f"shape {shape!r} is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise bad(f"data_offsets {offsets!r} do not lie inside the {data_len}-byte data buffer")
    count = math.prod(shape)
    if count * DTYPES[dtype].itemsize != offsets[1] - offsets[0]:
        raise bad(
            f"shape {shape} of {dtype} needs {count * DTYPES[dtype].itemsize} bytes, offsets give "
            f"{offsets[1] - offsets[0]}"
        )
    return dtype, count, offsets[0], offsets[1]


def _to_float32(dtype: str, raw: np.ndarray) -> np.ndarray:
    if dtype == "F32":
        return raw  # zero-copy, read-only view of the mapping
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32)


def write_safetensors(
    tensors: Iterable[tuple[str, np.ndarray]],
    f,
    *,
    metadata: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write float32 tensors (shapes kept as given) into an open binary file."""
    tensors = list(tensors)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, array in tensors:
        check_name(name)
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
    f.write(len(blob).to_bytes(8, "little"))
    f.write(blob)
    for _, array in tensors:
        f.write(np.ascontiguousarray(array, dtype="<f4").tobytes())
        if progress is not None:
            progress(array.size)
