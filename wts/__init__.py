"""Weight files: tensorrtx ``.wts`` (strict, vectorized, byte-compatible) and ``.safetensors``.

>>> import wts
>>> wts.save({"conv.weight": w, "conv.bias": b}, "model.wts")
>>> weights = wts.load("model.wts")     # WeightMap: name -> flat float32 array
>>> weights["conv.weight"].reshape(16, 3, 3, 3)
>>> weights.unused()                    # names never read (a netdef that skipped weights)

Every defect in a file raises :class:`WtsFormatError` naming the file, line and tensor. Files are written
atomically. This package never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from trtx_base.files import atomic_open, file_errors
from wts.errors import WtsFormatError, WtsWriteError
from wts.safetensors_file import read_safetensors, write_safetensors
from wts.text import as_float32, check_name, read_wts, write_wts
from wts.weightmap import WeightKeyError, WeightMap

#: save() starts writing data to disk every this many bytes, so the final fsync has little left to wait for
SYNC_EVERY = 32 << 20

__all__ = ["WeightKeyError", "WeightMap", "WtsFormatError", "WtsWriteError", "load", "save", "is_safetensors"]


def is_safetensors(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".safetensors"


def load(path: str | os.PathLike) -> WeightMap:
    """Read a ``.wts`` or (by suffix) ``.safetensors`` file into a :class:`WeightMap`.

    Values are flat float32 arrays in file order (callers reshape). Raises :class:`WtsFormatError`
    for any malformed content and :class:`~trtx_base.errors.FileAccessError` (an ``OSError``) naming the file when
    it cannot be read.
    """
    with file_errors(path, "read"):
        tensors = read_safetensors(path) if is_safetensors(path) else read_wts(path)
    return WeightMap(tensors, path=path)


def save(
    mapping: Mapping[str, object],
    path: str | os.PathLike,
    *,
    progress: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write ``mapping`` (name -> array-like) atomically as ``.wts`` or (by suffix) ``.safetensors``.

    Values are converted to float32 (integer buffers such as ``num_batches_tracked`` too, as tensorrtx
    does); ``.wts`` stores them flat in tensorrtx's exact layout, ``.safetensors`` keeps their shapes.
    ``progress`` shows a tqdm bar on stderr; ``metadata`` goes into the safetensors header.
    Returns the number of values written.
    """
    items = []
    for name, value in mapping.items():
        check_name(name)
        flat = as_float32(name, value)
        shape = np.shape(value) if is_safetensors(path) else flat.shape
        items.append((name, flat.reshape(shape)))
    total = sum(int(a.size) for _, a in items)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="val", unit_scale=True, desc=f"writing {Path(path).name}", leave=False)
    try:
        with atomic_open(path, "wb") as f:
            update = bar.update if bar is not None else None
            if is_safetensors(path):
                write_safetensors(items, f, metadata=dict(metadata or {}), progress=update)
            else:
                write_wts(items, f, count=len(items), progress=update, sync_every=SYNC_EVERY)
    finally:
        if bar is not None:
            bar.close()
    return total
