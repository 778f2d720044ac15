"""Compile CUDA C++ to a cubin (or PTX) with NVRTC through cuda-python, on the CPU, with an on-disk cache.

Nothing here needs a GPU or the CUDA driver: ``python -m plugins compile`` runs on a CPU-only machine.

The cache key is the SHA-256 of everything that changes the output: the source, the headers handed to NVRTC
(our ``trtx.cuh``), the target architecture, the options and NVRTC's version. Cache files are written with
:func:`trtx_base.files.atomic_write`, so concurrent builds of the same kernel never see half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from trtx_base.errors import UserError
from trtx_base.files import atomic_write

#: bumped when the cache layout or key changes
CACHE_FORMAT = "1"
PRELUDE = Path(__file__).with_name("trtx.cuh")
#: options every compilation gets (before the caller's)
DEFAULT_OPTIONS = ("--std=c++17", "-default-device", "-lineinfo")


class CompileError(UserError, RuntimeError):
    """NVRTC refused a kernel; the message holds the failing source lines and NVRTC's full log."""


@dataclass(frozen=True)
class Compiled:
    image: bytes  # cubin, or PTX (NUL-terminated) for a compute_XX target
    kind: str  # "cubin" or "ptx"
    arch: str  # sm_XY or compute_XY
    key: str  # cache key
    log: str  # NVRTC's log (warnings), "" when it printed nothing
    cached: bool  # True when read from the on-disk cache


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError:  # cuda-python < 12.6 layout
        from cuda import nvrtc  # type: ignore[no-redef]
    return nvrtc


def _check(result, what: str):
    nvrtc = _nvrtc()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, text = nvrtc.nvrtcGetErrorString(err)
        raise CompileError(f"{what} failed: {err.name} ({text.decode(errors='replace')})")
    return values[0] if len(values) == 1 else values


@lru_cache(maxsize=1)
def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library cuda-python loads."""
    major, minor = _check(_nvrtc().nvrtcVersion(), "nvrtcVersion")
    return int(major), int(minor)


@lru_cache(maxsize=1)
def supported_archs() -> tuple[int, ...]:
    """Compute capabilities NVRTC can target, as integers (75, 80, ..., 120)."""
    return tuple(int(a) for a in _check(_nvrtc().nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs"))


def normalize_arch(arch: str | int) -> str:
    """``90``, ``"90"``, ``"sm90"``, ``"sm_90"`` -> ``"sm_90"``; ``"compute_90"`` stays PTX. Checked against NVRTC."""
    text = str(arch).strip().lower()
    m = re.fullmatch(r"(sm|compute)?_?(\d{2,3})", text)
    if not m:
        raise CompileError(f"architecture {arch!r} is not of the form sm_XY or compute_XY (e.g. sm_86)")
    kind, number = m.group(1) or "sm", int(m.group(2))
    if number not in supported_archs():
        known = ", ".join(f"sm_{a}" for a in supported_archs())
        raise CompileError(
            f"NVRTC {'.'.join(map(str, nvrtc_version()))} cannot compile for {kind}_{number}; it supports {known}"
        )
    return f"{kind}_{number}"


def arch_for_capability(capability: tuple[int, int]) -> str:
    """Target for a device: its own sm_XY, or PTX for the newest architecture NVRTC knows below it."""
    number = capability[0] * 10 + capability[1]
    if number in supported_archs():
        return f"sm_{number}"
    older = [a for a in supported_archs() if a <= number]
    if not older:
        raise CompileError(f"NVRTC {nvrtc_version()} supports no architecture at or below sm_{number}")
    return f"compute_{max(older)}"  # the driver JIT-compiles this PTX for the newer device


def cache_dir() -> Path:
    """``$TRTX_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/trtx/kernels`` (default ``~/.cache/trtx/kernels``)."""
    explicit = os.environ.get("TRTX_KERNEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trtx" / "kernels"


def define_options(defines: Mapping[str, object] | None) -> tuple[str, ...]:
    return tuple(f"-D{k}" if v is None else f"-D{k}={v}" for k, v in (defines or {}).items())


def _headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"trtx.cuh": PRELUDE.read_text()}
    headers.update(extra or {})
    return headers


def cache_key(source: str, arch: str, options: Sequence[str], headers: Mapping[str, str], filename: str) -> str:
    h = hashlib.sha256()
    parts = [CACHE_FORMAT, f"nvrtc {nvrtc_version()}", arch, filename, *options, source]
    for name in sorted(headers):
        parts += [name, headers[name]]
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


_memory: dict[str, Compiled] = {}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def compile_source(
    source: str,
    *,
    arch: str | int,
    filename: str = "kernel.cu",
    options: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    use_cache: bool = True,
) -> Compiled:
    """Compile ``source`` for ``arch``; read or fill the in-memory and on-disk caches."""
    arch = normalize_arch(arch)
    options = (*DEFAULT_OPTIONS, *options)
    all_headers = _headers(headers)
    key = cache_key(source, arch, options, all_headers, filename)
    kind = "cubin" if arch.startswith("sm_") else "ptx"
    if use_cache and key in _memory:
        return _memory[key]
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        if use_cache and key in _memory:
            return _memory[key]
        path = cache_dir() / key[:2] / f"{key}.{kind}"
        if use_cache:
            try:
                image = path.read_bytes()
            except OSError:
                image = b""
            if image:
                result = Compiled(image, kind, arch, key, "", True)
                _memory[key] = result
                return result
        image, log = _run_nvrtc(source, arch, options, all_headers, filename)
        result = Compiled(image, kind, arch, key, log, False)
        if use_cache:
            _memory[key] = result
            try:
                atomic_write(path, image)
            except OSError as exc:  # a read-only home must not stop a build
                warnings.warn(f"could not write kernel cache {path}: {exc}", stacklevel=2)
        return result


def _run_nvrtc(
    source: str, arch: str, options: Sequence[str], headers: Mapping[str, str], filename: str
) -> tuple[bytes, str]:
    nvrtc = _nvrtc()
    names = list(headers)
    prog = _check(
        nvrtc.nvrtcCreateProgram(
            source.encode(),
            filename.encode(),
            len(names),
            [headers[n].encode() for n in names],
            [n.encode() for n in names],
        ),
        "nvrtcCreateProgram",
    )
    try:
        opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in options)]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        # NVRTC writes into these buffers: they must be fresh mutable objects. ``b" " * 1`` is CPython's
        # interned one-byte string, and writing a NUL into it corrupts every b" " in the process.
        buf = bytearray(size)
        _check(nvrtc.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        log = buf.rstrip(b"\0").decode(errors="replace").strip()
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise CompileError(format_failure(source, filename, arch, options, log, headers))
        if arch.startswith("sm_"):
            size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
            image = bytearray(size)
            _check(nvrtc.nvrtcGetCUBIN(prog, image), "nvrtcGetCUBIN")
        else:
            size = _check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
            image = bytearray(size)
            _check(nvrtc.nvrtcGetPTX(prog, image), "nvrtcGetPTX")
            image = image.rstrip(b"\0") + b"\0"
        return bytes(image), log
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


_DIAG = re.compile(r"^(?P<file>.+?)\((?P<line>\d+)\): (?P<what>(?:catastrophic )?error|warning)\b(?P<rest>.*)$")


def format_failure(
    source: str, filename: str, arch: str, options: Sequence[str], log: str, headers: Mapping[str, str]
) -> str:
    """NVRTC's errors as ``file:line: error ...`` followed by the offending source line, then the full log."""
    texts = {filename: source, **headers}
    lines = [f"NVRTC could not compile {filename} for {arch} (options: {' '.join(options)})"]
    for raw in log.splitlines():
        m = _DIAG.match(raw)
        if not m or "error" not in m["what"]:
            continue
        where, number = m["file"], int(m["line"])
        lines.append(f"{where}:{number}: {m['what']}{m['rest']}")
        text = texts.get(where) or texts.get(os.path.basename(where))
        if text is not None and 0 < number <= len(text.splitlines()):
            lines.append(f"    {number} | {text.splitlines()[number - 1].rstrip()}")
    lines += ["--- NVRTC log ---", log or "(empty)"]
    return "\n".join(lines)
