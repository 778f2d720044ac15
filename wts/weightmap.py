"""WeightMap: the read-only name -> float32 array mapping a netdef reads its weights from."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping

import numpy as np

from trtx_base.errors import UserError


class WeightKeyError(UserError, KeyError):
    """A missing weight; ``str()`` is the plain message (``KeyError`` would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WeightMap(Mapping):
    """Read-only ``name -> flat float32 array`` mapping that records which names were read.

    ``wm[name]`` marks ``name`` as used; :meth:`unused` lists the names never read, so a build can tell
    the user that a netdef skipped weights. ``in``, ``len`` and iterating over names mark nothing.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], path: str | os.PathLike | None = None) -> None:
        self._tensors: dict[str, np.ndarray] = {}
        for name, value in tensors.items():
            array = np.asarray(value)
            if array.flags.writeable:
                array = array.view()
                array.flags.writeable = False
            self._tensors[name] = array
        self._used: set[str] = set()
        self.path = None if path is None else os.fspath(path)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            value = self._tensors[name]
        except (KeyError, TypeError):
            raise WeightKeyError(self._missing_message(name)) from None
        self._used.add(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        return f"<WeightMap{where}: {len(self)} tensors, {self.num_params():,} values, {len(self._used)} read>"

    def peek(self, name: str) -> np.ndarray:
        """``self[name]`` without marking it as read (for tools that inspect weights)."""
        if name not in self._tensors:
            raise WeightKeyError(self._missing_message(name))
        return self._tensors[name]

    def unused(self) -> list[str]:
        """Names never read through ``self[name]``, in file order."""
        return [name for name in self._tensors if name not in self._used]

    def used(self) -> list[str]:
        """Names read so far, in file order."""
        return [name for name in self._tensors if name in self._used]

    def reset_usage(self) -> None:
        self._used.clear()

    def num_params(self) -> int:
        return sum(int(a.size) for a in self._tensors.values())

    def _missing_message(self, name: object) -> str:
        where = f" in {self.path}" if self.path else ""
        close = difflib.get_close_matches(str(name), self._tensors, n=5, cutoff=0.6)
        if not close:  # fall back to names sharing the longest module prefix
            parts = str(name).split(".")
            for cut in range(len(parts) - 1, 0, -1):
                prefix = ".".join(parts[:cut]) + "."
                close = [k for k in self._tensors if k.startswith(prefix)][:5]
                if close:
                    break
        hint = f"; closest names: {', '.join(close)}" if close else f"; it has {len(self)} tensors"
        return f"no weight {name!r}{where}{hint}"
