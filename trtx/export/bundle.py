"""An engine and its ``.json`` metadata, checked to belong together before anything is exported from them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from trtx import build
from trtx.export import ExportError


@dataclass(frozen=True)
class Bundle:
    """A verified engine: its path, its bytes (exactly the serialized plan) and its metadata."""

    path: Path
    data: bytes
    meta: dict[str, Any]

    @property
    def meta_path(self) -> Path:
        return metadata_path(self.path)

    @property
    def archs(self) -> list[str]:
        """The GPU archs the engine was built for ([] where its metadata predates recording them)."""
        return list((self.meta.get("gpu") or {}).get("archs") or [])

    @property
    def built_with(self) -> str:
        be = self.meta["backend"]
        return f"{be.get('name')} {be.get('version')}"

    def plugins_note(self) -> str:
        """What the serving process needs besides the plan (Triton's ``parameters``; a warning where it matters)."""
        entries = self.meta.get("plugins") or []
        if not entries:
            return "none: the plan needs no plugin library"
        aot = [e for e in entries if e.get("aot")]
        python = [e for e in entries if not e.get("aot")]
        parts = []
        if aot:
            parts.append(f"{', '.join(_plugin(e) for e in aot)} compiled into the plan (AOT): no library needed")
        if python:
            parts.append(
                f"{', '.join(_plugin(e) for e in python)}: Python IPluginV3 plugins of trtx's plugins package, which "
                "the serving process must register before loading the plan -- a stock server cannot; rebuild them "
                "as AOT plugins (docs/plugins.md)"
            )
        return "; ".join(parts)

    def warnings(self, server: str) -> list[str]:
        """What the user must know before ``server`` (e.g. "DeepStream's nvinfer") can load the plan."""
        out = []
        if self.meta["backend"].get("name") == "tensorrt_rtx":
            out.append(
                f"{self.path} was built by {self.built_with}: {server} runs plans of full TensorRT, whose runtime "
                "does not load TensorRT-RTX plans; rebuild with full TensorRT for the serving GPUs, or use a "
                "TensorRT backend linked against TensorRT-RTX (docs/deploy.md)"
            )
        if any(not e.get("aot") for e in self.meta.get("plugins") or []):
            out.append(f"{self.path}: {self.plugins_note()}")
        return out

    @cached_property
    def signature(self) -> tuple:
        """What a server sees of the engine: I/O names, dtypes, shapes and the batch profile."""
        io = lambda ts: tuple((t["name"], t["dtype"], tuple(t["shape"])) for t in ts)  # noqa: E731
        b = self.meta["batch"]
        return io(self.meta["inputs"]), io(self.meta["outputs"]), (b["min"], b["opt"], b["max"])


def _plugin(entry: dict) -> str:
    ns = entry.get("namespace") or ""
    return f"{ns + '::' if ns else ''}{entry.get('name')} v{entry.get('version', '1')}"


def metadata_path(engine: str | os.PathLike) -> Path:
    return build.metadata_path(engine)


def load(engine: str | os.PathLike) -> Bundle:
    """Read ``engine`` and ``engine.json``; raise :class:`ExportError` naming the file that is missing, garbled or
    does not match the other (``trtx.build.load_metadata`` verifies the pair: the engine's size and sha256)."""
    path = Path(engine)
    data = path.read_bytes() if path.is_file() and not path.name.endswith(".json") else None
    try:
        meta = build.load_metadata(path, data)
    except build.EngineMetadataError as exc:
        raise ExportError(str(exc)) from None
    return Bundle(path, data, meta)
