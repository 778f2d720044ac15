"""An engine and its ``.json`` metadata, checked to belong together before anything is exported from them."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from trtx.export import ExportError

#: what ``trtx.build.metadata`` + ``save_engine`` always write and the exporters read
REQUIRED = ("backend", "precision", "batch", "inputs", "outputs", "engine_bytes", "engine_sha256")


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
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def load(engine: str | os.PathLike) -> Bundle:
    """Read ``engine`` and ``engine.json``; raise :class:`ExportError` naming the file that is missing, garbled or
    does not match the other (the metadata records the engine's size and sha256)."""
    path = Path(engine)
    if path.name.endswith(".json"):
        raise ExportError(f"{path}: pass the engine file, not its metadata (the .json beside it is read too)")
    if not path.is_file():
        raise ExportError(f"{path}: no such engine file")
    meta_path = metadata_path(path)
    if not meta_path.is_file():
        raise ExportError(
            f"{path}: no metadata {meta_path.name} beside it (trtx build writes the engine and its .json together; "
            "export reads the inputs, outputs and batch profile from it)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{meta_path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise ExportError(f"{meta_path}: not a text file") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{meta_path}: not trtx engine metadata (a JSON {type(meta).__name__}, not an object)")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ExportError(
            f"{meta_path}: not trtx engine metadata, or written before trtx recorded the engine's hash "
            f"(no {', '.join(missing)}); rebuild the engine"
        )
    data = path.read_bytes()
    _check_pair(path, meta_path, data, meta)
    return Bundle(path, data, meta)


def _check_pair(path: Path, meta_path: Path, data: bytes, meta: dict[str, Any]) -> None:
    size, recorded = int(meta["engine_bytes"]), str(meta["engine_sha256"])
    digest = hashlib.sha256(data).hexdigest()
    if len(data) == size and digest == recorded:
        return
    found = f"{len(data)} bytes, sha256 {digest[:12]}…"
    expected = f"{size} bytes, sha256 {recorded[:12]}…"
    engine_time, meta_time = path.stat().st_mtime, meta_path.stat().st_mtime
    if len(data) < size and digest != recorded and engine_time <= meta_time:
        culprit = f"{path} is damaged or truncated"
    elif engine_time > meta_time:
        culprit = f"{path} was replaced after {meta_path.name} was written ({_when(engine_time)} > {_when(meta_time)})"
    else:
        culprit = f"{meta_path.name} was rewritten for another engine ({_when(meta_time)} > {_when(engine_time)})"
    raise ExportError(
        f"{path} ({found}) is not the engine {meta_path.name} describes ({expected}): {culprit}; "
        "rebuild, or copy the engine and its .json together"
    )


def _when(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
