"""A CUDA kernel from source: compiled by NVRTC (:mod:`plugins.compiler`), launched through the CUDA driver API.

    k = Kernel(Path(__file__).with_name("letterbox.cu"), "letterbox")
    k.launch(grid=(blocks(w, 16), blocks(h, 16), n), block=(16, 16, 1), args=[src, dst, w, h, 0.5], stream=s)
    k.launch_1d(n, [x, y, n, 2.0], stream=s)   # grid from the element count

Arguments are packed by the kernel's own C signature (parsed from ``extern "C" __global__ void name(...)``):
pointers take torch CUDA tensors, objects with ``__cuda_array_interface__`` or ``.ptr``, raw device addresses
(int) or None; ``int``/``float``/... parameters take Python numbers, range-checked; a host numpy array is copied
by value into a struct parameter. Every CUDA call's status is checked and raised as :class:`CudaError`.

Importing this module needs neither libcuda nor torch; the driver is loaded at the first launch.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import struct
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from plugins import compiler
from trtx_base.errors import UserError


class CudaError(UserError, RuntimeError):
    """A CUDA driver call failed; the message names the call, the kernel and CUDA's error name."""


class LaunchError(UserError, ValueError):
    """Arguments that do not fit the kernel's signature (wrong count, type or range)."""


def driver():
    try:
        from cuda.bindings import driver as drv
    except ImportError:  # cuda-python < 12.6 layout
        from cuda import cuda as drv  # type: ignore[no-redef]
    return drv


def check(result, what: str):
    """Unpack a cuda-python ``(CUresult, *values)`` tuple; raise :class:`CudaError` unless it is CUDA_SUCCESS."""
    drv = driver()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != drv.CUresult.CUDA_SUCCESS:
        name = getattr(err, "name", str(err))
        try:
            _, text = drv.cuGetErrorString(err)
            detail = f" ({text.decode(errors='replace') if isinstance(text, bytes) else text})"
        except Exception:  # no driver to describe it
            detail = ""
        raise CudaError(f"{what} failed: {name}{detail}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


_init_lock = threading.Lock()
_initialized = False


def current_context(device: int | None = None) -> int:
    """The current CUDA context (as int); without one, make device ``device`` (default 0)'s primary context current.

    TensorRT and PyTorch both work in the primary context, so kernels loaded here run beside theirs.
    """
    global _initialized
    drv = driver()
    with _init_lock:
        if not _initialized:
            check(drv.cuInit(0), "cuInit")
            _initialized = True
    ctx = check(drv.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if ctx is not None and int(ctx) != 0:
        return int(ctx)
    dev = check(drv.cuDeviceGet(device or 0), "cuDeviceGet")
    ctx = check(drv.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    check(drv.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    return int(ctx)


def context_capability() -> tuple[int, int]:
    """Compute capability of the current context's device."""
    drv = driver()
    current_context()
    dev = check(drv.cuCtxGetDevice(), "cuCtxGetDevice")
    attr = drv.CUdevice_attribute
    major = check(
        drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute"
    )
    minor = check(
        drv.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute"
    )
    return int(major), int(minor)


def blocks(n: int, per_block: int) -> int:
    """Number of blocks of ``per_block`` threads that cover ``n`` items."""
    return max(1, -(-int(n) // int(per_block)))


def stream_handle(stream: Any) -> int:
    """A CUDA stream as an int: None (the legacy default stream), int, CUstream, or a torch.cuda.Stream."""
    if stream is None:
        return 0
    if isinstance(stream, (int, np.integer)):
        return int(stream)
    handle = getattr(stream, "cuda_stream", None)  # torch.cuda.Stream
    if handle is not None:
        return int(handle)
    try:
        return int(stream)  # CUstream
    except TypeError:
        raise LaunchError(f"cannot use {type(stream).__name__} as a CUDA stream") from None


def memset32(ptr: Any, value: int, count: int, stream: Any = None) -> None:
    """Set ``count`` 32-bit words at device address ``ptr`` to ``value`` (stream-ordered)."""
    if count <= 0:
        return
    drv = driver()
    current_context()
    check(
        drv.cuMemsetD32Async(
            drv.CUdeviceptr(device_pointer(ptr, "memset32")),
            int(value) & 0xFFFFFFFF,
            int(count),
            drv.CUstream(stream_handle(stream)),
        ),
        "cuMemsetD32Async",
    )


def device_pointer(value: Any, what: str, kernel: str | None = None) -> int:
    """Device address of a torch CUDA tensor, a CUDA-array-interface object, an object with ``.ptr``, an int.

    ``what`` names the value in errors (a parameter name when ``kernel`` is given).
    """
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    ptr = getattr(value, "ptr", None)  # plugins.core.Buffer, trtx.runtime.DeviceArray
    if isinstance(ptr, int):
        return ptr
    if hasattr(value, "data_ptr") and hasattr(value, "is_cuda"):  # torch.Tensor, without importing torch
        if not value.is_cuda:
            where = _what(kernel, what) if kernel else what
            raise LaunchError(f"{where}: tensor is on {value.device}, the kernel needs a CUDA tensor")
        return int(value.data_ptr())
    cai = getattr(value, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    try:
        return int(value)  # CUdeviceptr, numpy integers
    except TypeError:
        where = _what(kernel, what) if kernel else what
        raise LaunchError(f"{where}: cannot use {type(value).__name__} as a device pointer") from None


# ---- the kernel's C signature -------------------------------------------------------------------------------

#: C parameter type -> numpy dtype of the value passed
_C_TYPES = {
    "bool": np.bool_,
    "char": np.int8,
    "signed char": np.int8,
    "unsigned char": np.uint8,
    "int8_t": np.int8,
    "uint8_t": np.uint8,
    "short": np.int16,
    "unsigned short": np.uint16,
    "int16_t": np.int16,
    "uint16_t": np.uint16,
    "int": np.int32,
    "signed": np.int32,
    "signed int": np.int32,
    "int32_t": np.int32,
    "unsigned": np.uint32,
    "unsigned int": np.uint32,
    "uint32_t": np.uint32,
    "long": np.int64,
    "long long": np.int64,
    "long long int": np.int64,
    "int64_t": np.int64,
    "unsigned long": np.uint64,
    "unsigned long long": np.uint64,
    "uint64_t": np.uint64,
    "size_t": np.uint64,
    "float": np.float32,
    "double": np.float64,
}

_QUALIFIERS = {"const", "volatile", "__restrict__", "restrict", "__restrict"}


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def parse_signature(source: str, name: str) -> list[tuple[str, str]] | None:
    """[(parameter name, type code)] of ``extern "C" __global__ void name(...)``; None if it cannot be found.

    Type codes: ``"ptr"`` for pointers, a numpy dtype name (``"int32"``, ``"float32"``, ...) for scalars, or
    ``"struct:<C type>"`` for anything else (passed by value from a host numpy array).
    """
    text = _strip_comments(source)
    pattern = (
        r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+'
        r"(?:__launch_bounds__\s*\([^)]*\)\s*)?" + re.escape(name) + r"\s*\(([^)]*)\)"
    )
    m = re.search(pattern, text)
    if m is None:
        return None
    params = []
    body = m.group(1).strip()
    if body in ("", "void"):
        return params
    for i, raw in enumerate(body.split(",")):
        decl = " ".join(raw.split())
        if "*" in decl:
            after = [w for w in decl.rsplit("*", 1)[1].split() if w not in _QUALIFIERS]
            params.append((after[-1] if after else f"arg{i}", "ptr"))
            continue
        words = [w for w in decl.replace("&", " & ").split() if w not in _QUALIFIERS]
        pname, ctype = (words[-1], " ".join(words[:-1])) if len(words) > 1 else (f"arg{i}", " ".join(words))
        dtype = _C_TYPES.get(ctype)
        params.append((pname, np.dtype(dtype).name if dtype is not None else f"struct:{ctype}"))
    return params


#: numpy dtype name of a scalar kernel parameter -> (struct format, smallest, largest value)
_SCALARS: dict[str, tuple[str, float, float]] = {
    "bool": ("?", 0, 1),
    **{np.dtype(t).name: (f, int(np.iinfo(t).min), int(np.iinfo(t).max))
       for t, f in ((np.int8, "b"), (np.uint8, "B"), (np.int16, "h"), (np.uint16, "H"), (np.int32, "i"),
                    (np.uint32, "I"), (np.int64, "q"), (np.uint64, "Q"))},
    "float32": ("f", -float(np.finfo(np.float32).max), float(np.finfo(np.float32).max)),
    "float64": ("d", -math.inf, math.inf),
}  # fmt: skip


def pack_arguments(params: Sequence[tuple[str, str]], args: Sequence[Any], kernel: str) -> tuple[int, list[int], Any]:
    """Pack ``args`` for cuLaunchKernel: (address of the ``void*`` table for ``kernelParams``, each parameter's
    address, the ctypes buffer that holds everything and must stay alive until the launch call returns).

    Each parameter sits in its own 8-byte-aligned slot; the driver copies as many bytes as the kernel's
    parameter has, so a slot only has to be at least that large.
    """
    if len(args) != len(params):
        names = ", ".join(n for n, _ in params)
        raise LaunchError(f"kernel {kernel}({names}) takes {len(params)} arguments, got {len(args)}")
    parts: list[bytes] = []
    offsets: list[int] = []
    offset = 0
    for (pname, code), value in zip(params, args):
        if code == "ptr":
            data = device_pointer(value, pname, kernel).to_bytes(8, "little")
        elif code.startswith("struct:"):
            if not isinstance(value, np.ndarray):
                raise LaunchError(
                    f"{_what(kernel, pname)} is a {code[7:]} passed by value: give a host numpy array of its bytes"
                )
            data = value.tobytes()
        else:
            data = _scalar(value, code, pname, kernel)
        offsets.append(offset)
        data += b"\0" * (-len(data) % 8)
        parts.append(data)
        offset += len(data)
    n = len(offsets)
    buffer = ctypes.create_string_buffer(offset + 8 * n + 8)
    ctypes.memmove(buffer, b"".join(parts), offset)
    base = ctypes.addressof(buffer)
    addresses = [base + o for o in offsets]
    struct.pack_into(f"<{n}Q", buffer, offset, *addresses)
    return base + offset, addresses, buffer


@lru_cache(maxsize=4096)
def _what(kernel: str, parameter: str) -> str:
    return f"kernel {kernel} argument {parameter!r}"


def _scalar(value: Any, code: str, pname: str, kernel: str) -> bytes:
    fmt, lo, hi = _SCALARS[code]
    if not isinstance(value, (int, float)):
        if hasattr(value, "item"):  # numpy or 0-d torch scalars
            value = value.item()
        if not isinstance(value, (int, float)):
            raise LaunchError(f"{_what(kernel, pname)} is {code}, got {type(value).__name__}")
    if fmt in "fd":
        if math.isfinite(value) and not lo <= value <= hi:
            raise LaunchError(f"{_what(kernel, pname)} = {value} overflows {code}")
        return struct.pack("<" + fmt, value)
    if isinstance(value, float):
        if not value.is_integer():
            raise LaunchError(f"{_what(kernel, pname)} is {code}, got float {value}")
        value = int(value)
    if not lo <= value <= hi:
        raise LaunchError(f"{_what(kernel, pname)} = {value} does not fit {code} [{lo}, {hi}]")
    return struct.pack("<" + fmt, value)


# ---- Kernel ---------------------------------------------------------------------------------------------------

#: every Kernel created (``python -m plugins compile`` compiles them all)
ALL_KERNELS: list[Kernel] = []

#: dtype name -> C type of the ``scalar_t`` macro in dtype variants
SCALAR_TYPES = {"float32": "float", "float16": "trtx_half"}


class Kernel:
    """An ``extern "C" __global__`` function in a .cu file (or a source string), compiled on first use.

    ``options``: extra NVRTC options (e.g. ``("--fmad=false",)``); ``defines``: ``-D`` macros; ``arch``: fixed
    target (default: the current device's); ``dtypes``: build one variant per dtype with ``scalar_t`` defined as
    ``float`` / ``trtx_half`` -- pick one with ``kernel["float16"]``; ``signature``: parameter type codes, when
    the C signature cannot be parsed (see :func:`parse_signature`).
    """

    def __init__(
        self,
        source: str | os.PathLike,
        name: str,
        *,
        options: Sequence[str] = (),
        defines: Mapping[str, object] | None = None,
        arch: str | None = None,
        dtypes: Sequence[str] | None = None,
        signature: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        _register: bool = True,
    ) -> None:
        if isinstance(source, os.PathLike) or ("\n" not in source and "__global__" not in source):
            self.path: Path | None = Path(source)
            self._source: str | None = None
            self.filename = _display_path(self.path)
        else:
            self.path, self._source, self.filename = None, source, f"{name}.cu"
        self.name = name
        self.options = tuple(options)
        self.defines = dict(defines or {})
        self.arch = arch
        self.headers = dict(headers or {})
        self.dtypes = tuple(dtypes or ())
        for dt in self.dtypes:
            if dt not in SCALAR_TYPES:
                raise ValueError(f"kernel {name}: dtype {dt!r} is not one of {', '.join(SCALAR_TYPES)}")
        self._signature = None if signature is None else [(f"arg{i}", c) for i, c in enumerate(signature)]
        self._variants: dict[str, Kernel] = {}
        self._functions: dict[int, Any] = {}  # context -> CUfunction
        self._lock = threading.Lock()
        if _register:
            ALL_KERNELS.append(self)

    def __repr__(self) -> str:
        extra = f", defines={self.defines}" if self.defines else ""
        return f"Kernel({self.filename}, {self.name!r}{extra})"

    # ---- source, variants ----
    @property
    def source(self) -> str:
        if self._source is None:
            try:
                self._source = self.path.read_text()  # type: ignore[union-attr]
            except OSError as exc:
                raise compiler.CompileError(f"kernel {self.name}: cannot read its source {self.path}: {exc}") from None
        return self._source

    def __getitem__(self, dtype: str) -> Kernel:
        """The variant compiled with ``scalar_t`` = the C type of ``dtype`` (``"float32"`` or ``"float16"``)."""
        if dtype not in self.dtypes:
            have = ", ".join(self.dtypes) or "none (this kernel has no dtype variants)"
            raise LaunchError(f"kernel {self.name} has no {dtype} variant; variants: {have}")
        with self._lock:
            if dtype not in self._variants:
                k = Kernel.__new__(Kernel)
                k.__dict__.update(self.__dict__)
                k.defines = {**self.defines, "scalar_t": SCALAR_TYPES[dtype]}
                k.dtypes = ()
                k._variants, k._functions, k._lock = {}, {}, threading.Lock()
                self._variants[dtype] = k
            return self._variants[dtype]

    def derive(
        self,
        name: str,
        *,
        dtype: str | None = None,
        defines: Mapping[str, object] | None = None,
        source_suffix: str = "",
    ) -> Kernel:
        """Another entry point of this kernel's source: same file, options and headers; ``scalar_t`` of ``dtype``
        (one of this kernel's dtypes), more ``defines``, and ``source_suffix`` appended to the source (code
        generated for one use, e.g. an entry point for a number of inputs). Not listed for ``python -m plugins
        compile``."""
        base = self[dtype] if dtype is not None else self
        if base.dtypes:
            raise LaunchError(f"kernel {self.name} has dtype variants: derive(..., dtype=...) picks one")
        k = Kernel.__new__(Kernel)
        k.__dict__.update(base.__dict__)
        k.name = name
        k.defines = {**base.defines, **(defines or {})}
        k._source = base.source + source_suffix
        k._signature = None
        k._variants, k._functions, k._lock = {}, {}, threading.Lock()
        return k

    def variants(self) -> list[Kernel]:
        """The concrete kernels to compile: one per dtype, or this one."""
        return [self[d] for d in self.dtypes] if self.dtypes else [self]

    @property
    def signature(self) -> list[tuple[str, str]]:
        if self._signature is None:
            parsed = parse_signature(self.source, self.name)
            if parsed is None:
                raise LaunchError(
                    f'kernel {self.name}: no `extern "C" __global__ void {self.name}(...)` in {self.filename}; '
                    "declare it so or pass signature=[...] to Kernel"
                )
            self._signature = parsed
        return self._signature

    # ---- compile, load ----
    def compile(self, arch: str | int | None = None, *, use_cache: bool = True) -> compiler.Compiled:
        """Compile for ``arch`` (default: the fixed arch, else the current device's); cached on disk."""
        target = arch or self.arch
        if target is None:
            target = compiler.arch_for_capability(context_capability())
        if self.dtypes:
            raise compiler.CompileError(f"kernel {self.name} has dtype variants: compile kernel[dtype] instead")
        options = (*self.options, *compiler.define_options(self.defines))
        return compiler.compile_source(
            self.source,
            arch=target,
            filename=self.filename,
            options=options,
            headers=self.headers,
            use_cache=use_cache,
        )

    def function(self):
        """The CUfunction in the current context (compiled for its device and loaded on first use)."""
        ctx = current_context()
        fn = self._functions.get(ctx)
        if fn is None:
            with self._lock:
                fn = self._functions.get(ctx)
                if fn is None:
                    fn = load_function(ctx, self.compile(), self.name, self.filename)
                    self._functions[ctx] = fn
        return fn

    # ---- launch ----
    def launch(
        self,
        grid: int | Sequence[int],
        block: int | Sequence[int],
        args: Sequence[Any],
        stream: Any = None,
        shared_mem: int = 0,
    ) -> None:
        """Launch on ``stream`` (int handle, torch.cuda.Stream, CUstream or None = default stream)."""
        if self.dtypes:
            raise LaunchError(f"kernel {self.name} has dtype variants: launch kernel[dtype]")
        g, b = dim3(grid, "grid", self.name), dim3(block, "block", self.name)
        if 0 in g:
            return  # nothing to do (an empty batch)
        fn = self.function()
        if shared_mem > 48 * 1024:
            drv = driver()
            check(
                drv.cuFuncSetAttribute(
                    fn, drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, int(shared_mem)
                ),
                f"cuFuncSetAttribute({self.name}, max dynamic shared memory {shared_mem})",
            )
        launch_function(fn, self.name, self.signature, args, g, b, stream, shared_mem)

    def launch_1d(self, n: int, args: Sequence[Any], stream: Any = None, block: int = 256) -> None:
        """One thread per item: grid = ceil(n / block). The kernel must return for indices >= n."""
        if n <= 0:
            return
        if blocks(n, block) > 2**31 - 1:
            raise LaunchError(f"kernel {self.name}: {n} items need more than 2^31-1 blocks of {block}")
        self.launch(blocks(n, block), block, args, stream)


def launch_function(
    fn: Any,
    name: str,
    params: Sequence[tuple[str, str]],
    args: Sequence[Any],
    grid: tuple[int, int, int],
    block: tuple[int, int, int],
    stream: Any = None,
    shared_mem: int = 0,
) -> None:
    """``cuLaunchKernel`` of a loaded CUfunction: ``args`` packed by ``params`` (see :func:`pack_arguments`)."""
    packed, _, _buffer = pack_arguments(params, args, name)  # _buffer: alive until the launch call returns
    drv = driver()
    check(
        drv.cuLaunchKernel(fn, *grid, *block, int(shared_mem), drv.CUstream(stream_handle(stream)), packed, 0),
        f"cuLaunchKernel({name}, grid={grid}, block={block}, shared={shared_mem})",
    )


def dim3(value: int | Sequence[int], what: str, name: str) -> tuple[int, int, int]:
    dims = (int(value),) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if not 1 <= len(dims) <= 3 or any(d < 0 for d in dims):
        raise LaunchError(f"kernel {name}: {what} must be 1 to 3 non-negative sizes, got {value!r}")
    return (*dims, *(1,) * (3 - len(dims)))  # type: ignore[return-value]


_module_lock = threading.Lock()
_modules: dict[tuple[int, str], Any] = {}


def load_function(ctx: int, compiled: compiler.Compiled, name: str, filename: str):
    """CUfunction ``name`` of a compiled image (cubin or PTX) loaded in context ``ctx`` (once per image)."""
    drv = driver()
    with _module_lock:
        module = _modules.get((ctx, compiled.key))
        if module is None:
            module = check(drv.cuModuleLoadData(compiled.image), f"cuModuleLoadData({filename}, {compiled.arch})")
            _modules[(ctx, compiled.key)] = module
    return check(drv.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction({name} in {filename})")


_ROOT = Path(__file__).resolve().parent.parent


def _display_path(path: Path) -> str:
    """Name NVRTC uses for the file (in errors and line info): relative to the repository when inside it.

    It is part of the cache key, so it must not depend on the working directory.
    """
    resolved = path.resolve()
    try:
        return resolved.relative_to(_ROOT).as_posix()
    except ValueError:
        return str(resolved)
