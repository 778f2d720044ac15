"""Run a serialized engine on the GPU through cuda-python: ``Engine(path).infer({"images": batch})``.

Written against the execution API TensorRT 10/11 and TensorRT-RTX document and share: ``Runtime``
``.deserialize_cuda_engine``, the engine's named I/O tensors (``num_io_tensors``, ``get_tensor_name/mode/dtype``),
``IExecutionContext.set_input_shape`` (dynamic batch), ``set_tensor_address``, ``execute_async_v3(stream)``,
and an ``IOutputAllocator`` for outputs whose shape depends on the data (TensorRT's NMS layer).

**This module has never executed an engine on the machines trtx is developed and tested on**: they have no
GPU that a TensorRT runtime accepts (TensorRT-RTX 1.7 refuses sm_90; full TensorRT is not installed). It is
kept small and literal for that reason; :class:`Engine` says in one line why it cannot run where it cannot.

* Plugins named in the engine's ``.json`` metadata are registered before deserializing
  (:func:`plugins.core.register_from_metadata`).
* Inputs may be numpy arrays (copied to the device), or device arrays used in place: torch CUDA tensors,
  anything with ``__cuda_array_interface__``, DLPack CUDA arrays (through torch, imported only then).
* Outputs are :class:`DeviceArray` s (``__cuda_array_interface__``: ``torch.as_tensor(out, device="cuda")``
  wraps them without a copy); :meth:`Engine.infer` copies them to numpy.
* ``cuda_graph=True`` captures one CUDA graph per input shape and replays it; inputs are then copied into the
  engine's own input buffers (device to device), since a graph replays fixed addresses.

torch is never imported at module import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trtx.build import load_metadata
from trtx_base import backend
from trtx_base.errors import UserError


class EngineError(UserError, RuntimeError):
    """An engine cannot be loaded or run as asked; the message says why in one line."""


def _driver():
    from trtx_base.cudainfo import _driver as driver

    return driver()


def _check(result, what: str):
    drv = _driver()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != drv.CUresult.CUDA_SUCCESS:
        _, name = drv.cuGetErrorName(err)
        raise EngineError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (values or None)


_contexts: dict[int, Any] = {}


def cuda_context(device: int = 0):
    """Make the device's primary context current (the one torch and the plugins use) and return it."""
    drv = _driver()
    if device not in _contexts:
        _check(drv.cuInit(0), "cuInit")
        dev = _check(drv.cuDeviceGet(device), f"cuDeviceGet({device})")
        _contexts[device] = _check(drv.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    _check(drv.cuCtxSetCurrent(_contexts[device]), "cuCtxSetCurrent")
    return _contexts[device]


# ---- device memory --------------------------------------------------------------------------------------
class DeviceArray:
    """A block of device memory with a shape and dtype (``__cuda_array_interface__`` v3)."""

    def __init__(self, shape, dtype, *, device: int = 0) -> None:
        cuda_context(device)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.capacity = max(self.nbytes, 1)
        self.ptr = int(_check(_driver().cuMemAlloc(self.capacity), f"cuMemAlloc({self.capacity})"))

    def view(self, shape, dtype=None) -> DeviceArray:
        """The same memory as another shape (no larger than the allocation)."""
        dtype = np.dtype(dtype or self.dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes > self.capacity:
            raise EngineError(f"DeviceArray of {self.capacity} bytes cannot hold {tuple(shape)} {dtype}")
        v = object.__new__(DeviceArray)
        v.shape, v.dtype, v.nbytes = tuple(int(d) for d in shape), dtype, nbytes
        v.capacity, v.ptr, v._base = self.capacity, self.ptr, self
        return v

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3,
                "strides": None, "stream": None}  # fmt: skip

    def numpy(self, stream: Any = None) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        memcpy_dtoh(out, self.ptr, stream)
        if stream is not None:
            _check(_driver().cuStreamSynchronize(_stream(stream)), "cuStreamSynchronize")
        return out

    def __del__(self) -> None:
        if getattr(self, "_base", None) is None and getattr(self, "ptr", 0):
            try:
                _driver().cuMemFree(_ptr(self.ptr))
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
            self.ptr = 0

    def __repr__(self) -> str:
        return f"DeviceArray({self.shape}, {self.dtype}, 0x{self.ptr:x})"


def stream_handle(stream: Any) -> int:
    if stream is None:
        return 0
    handle = getattr(stream, "cuda_stream", None)  # torch.cuda.Stream
    return int(handle if handle is not None else stream)


def _ptr(address: int):
    return _driver().CUdeviceptr(int(address))


def _stream(stream: Any):
    return _driver().CUstream(stream_handle(stream))


def memcpy_htod(dst: int, host: np.ndarray, stream: Any = None) -> None:
    """Host array -> device address ``dst`` (on ``stream``; pageable memory is staged before this returns)."""
    host = np.ascontiguousarray(host)
    drv = _driver()
    if stream is None:
        _check(drv.cuMemcpyHtoD(_ptr(dst), host.ctypes.data, host.nbytes), "cuMemcpyHtoD")
    else:
        _check(drv.cuMemcpyHtoDAsync(_ptr(dst), host.ctypes.data, host.nbytes, _stream(stream)), "cuMemcpyHtoDAsync")


def memcpy_dtoh(host: np.ndarray, src: int, stream: Any = None) -> None:
    """Device address ``src`` -> host array (asynchronous on ``stream``: synchronize before reading it)."""
    drv = _driver()
    if stream is None:
        _check(drv.cuMemcpyDtoH(host.ctypes.data, _ptr(src), host.nbytes), "cuMemcpyDtoH")
    else:
        _check(drv.cuMemcpyDtoHAsync(host.ctypes.data, _ptr(src), host.nbytes, _stream(stream)), "cuMemcpyDtoHAsync")


def cuda_array_interface(x: Any) -> dict | None:
    """``x``'s CUDA array interface: its own, a torch CUDA tensor's, or a DLPack CUDA array's (via torch);
    None for host arrays."""
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is not None:
        return cai
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None and dev()[0] in (2, 13):  # kDLCUDA, kDLCUDAManaged
        import torch

        return torch.from_dlpack(x).__cuda_array_interface__
    return None


# ---- the engine ------------------------------------------------------------------------------------------
class _OutputAllocator:
    """IOutputAllocator for data-dependent outputs: grows a DeviceArray per tensor, records the shape."""

    def __new__(cls, trt):
        class Allocator(trt.IOutputAllocator):
            def __init__(self) -> None:
                trt.IOutputAllocator.__init__(self)
                self.buffers: dict[str, DeviceArray] = {}
                self.shapes: dict[str, tuple[int, ...]] = {}

            def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
                buf = self.buffers.get(tensor_name)
                if buf is None or buf.capacity < size:
                    buf = self.buffers[tensor_name] = DeviceArray((max(int(size), 1),), np.uint8)
                return buf.ptr

            def reallocate_output(self, tensor_name, memory, size, alignment):
                return self.reallocate_output_async(tensor_name, memory, size, alignment, None)

            def notify_shape(self, tensor_name, shape):
                self.shapes[tensor_name] = tuple(int(d) for d in shape)

        return Allocator()


class Engine:
    """A deserialized engine with one execution context, its own stream and output buffers."""

    def __init__(self, path: str | os.PathLike, *, device: int = 0, cuda_graph: bool = False) -> None:
        path = Path(path)
        if not path.is_file():
            raise EngineError(f"{path}: no such engine file")
        meta_path = path.with_name(path.name + ".json")
        data = path.read_bytes()
        self.meta = load_metadata(path, data) if meta_path.exists() else {}  # verified: it describes this engine
        be = backend.get()
        _check_gpu_arch(path, self.meta, device)
        ok, why = be.can_execute()
        if not ok:
            raise EngineError(f"{path}: {be.name} {be.version} cannot execute engines on this machine: {why}")
        built = self.meta.get("backend", {}).get("name")
        if built and built != be.name:
            raise EngineError(f"{path} was built with {built}; this machine's backend is {be.name}")
        if self.meta.get("plugins"):
            from plugins.core import register_from_metadata

            register_from_metadata(self.meta)
        cuda_context(device)
        self.trt = trt = be.trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineError(f"{path}: TensorRT could not deserialize the engine (built by another TensorRT "
                              "version or for another GPU?)")  # fmt: skip
        self.context = self.engine.create_execution_context()
        self.stream = int(_check(_driver().cuStreamCreate(1), "cuStreamCreate"))  # non-blocking
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = lambda n: self.engine.get_tensor_mode(n)  # noqa: E731
        self.inputs = [n for n in names if mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        #: outputs whose shape depends on the data (still -1 once input shapes are set): TensorRT allocates
        #: them through an IOutputAllocator during the run
        self.dynamic_outputs: list[str] = []
        self._allocator = None
        self._buffers: dict[str, DeviceArray] = {}
        self._host_inputs: list[np.ndarray] = []
        self.cuda_graph = cuda_graph
        self._graphs: dict[tuple, Any] = {}

    def _buffer(self, name: str, shape, dtype) -> DeviceArray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        buf = self._buffers.get(name)
        if buf is None or buf.capacity < nbytes:
            buf = self._buffers[name] = DeviceArray((max(nbytes, 1),), np.uint8)
            self._graphs.clear()  # captured graphs point at the old buffers
        return buf.view(shape, dtype)

    def run(self, feeds: Mapping[str, Any], stream: Any = None) -> dict[str, DeviceArray]:
        """Enqueue one inference on ``stream`` (default: the engine's own) and return the device outputs;
        they are valid once the stream has reached this point."""
        stream = self.stream if stream is None else stream_handle(stream)
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise EngineError(f"engine inputs {', '.join(missing)} not given (inputs: {', '.join(self.inputs)})")
        self._host_inputs = []
        shapes = []
        for name in self.inputs:
            value = feeds[name]
            cai = cuda_array_interface(value)
            shape = tuple(cai["shape"]) if cai is not None else np.shape(value)
            if not self.context.set_input_shape(name, shape):
                raise EngineError(f"input {name!r}: shape {shape} is outside the engine's profile "
                                  f"{self.engine.get_tensor_profile_shape(name, 0)}")  # fmt: skip
            shapes.append(shape)
            if cai is not None and not self.cuda_graph:
                if np.dtype(cai["typestr"]) != self.dtypes[name]:
                    raise EngineError(f"input {name!r} is {np.dtype(cai['typestr'])}, the engine takes "
                                      f"{self.dtypes[name]}")  # fmt: skip
                if cai.get("strides") is not None and cai["strides"] != _contiguous(shape, self.dtypes[name]):
                    raise EngineError(f"input {name!r} must be contiguous")
                self.context.set_tensor_address(name, int(cai["data"][0]))
                continue
            buf = self._buffer(name, shape, self.dtypes[name])
            if cai is not None:
                _check(_driver().cuMemcpyDtoDAsync(_ptr(buf.ptr), _ptr(cai["data"][0]), buf.nbytes, _stream(stream)),
                       "cuMemcpyDtoDAsync")  # fmt: skip
            else:
                host = np.ascontiguousarray(value, dtype=self.dtypes[name])
                self._host_inputs.append(host)  # alive until the async copy is done
                memcpy_htod(buf.ptr, host, stream)
            self.context.set_tensor_address(name, buf.ptr)
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if -1 in shape:
                if self._allocator is None:
                    self._allocator = _OutputAllocator(self.trt)
                if name not in self.dynamic_outputs:
                    self.dynamic_outputs.append(name)
                    self.context.set_output_allocator(name, self._allocator)
                    self.cuda_graph = False  # a graph cannot replay TensorRT's allocations
                continue
            outputs[name] = self._buffer(name, shape, self.dtypes[name])
            self.context.set_tensor_address(name, outputs[name].ptr)
        if self.cuda_graph:
            self._replay(tuple(shapes), stream)
        elif not self.context.execute_async_v3(stream):
            raise EngineError("execute_async_v3 failed (see the TensorRT log above)")
        if self.dynamic_outputs:
            _check(_driver().cuStreamSynchronize(_stream(stream)), "cuStreamSynchronize")  # shapes known now
            for name in self.dynamic_outputs:
                shape = self._allocator.shapes[name]
                outputs[name] = self._allocator.buffers[name].view(shape, self.dtypes[name])
        return outputs

    def _replay(self, key: tuple, stream: int) -> None:
        drv = _driver()
        exe = self._graphs.get(key)
        if exe is None:
            if not self.context.execute_async_v3(stream):  # first run outside capture (TensorRT's advice)
                raise EngineError("execute_async_v3 failed (see the TensorRT log above)")
            mode = drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
            _check(drv.cuStreamBeginCapture(_stream(stream), mode), "cuStreamBeginCapture")
            ok = self.context.execute_async_v3(stream)
            graph = _check(drv.cuStreamEndCapture(_stream(stream)), "cuStreamEndCapture")
            if not ok:
                raise EngineError("execute_async_v3 failed while capturing a CUDA graph")
            exe = self._graphs[key] = _check(drv.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
            return
        _check(drv.cuGraphLaunch(exe, _stream(stream)), "cuGraphLaunch")

    def infer(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """:meth:`run`, then every output copied to a numpy array (synchronizes)."""
        outputs = self.run(feeds)
        host = {name: np.empty(buf.shape, buf.dtype) for name, buf in outputs.items()}
        for name, buf in outputs.items():
            memcpy_dtoh(host[name], buf.ptr, self.stream)
        self.synchronize()
        return host

    def synchronize(self) -> None:
        _check(_driver().cuStreamSynchronize(_stream(self.stream)), "cuStreamSynchronize")

    def __call__(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self.infer(feeds)


def _contiguous(shape, dtype) -> tuple[int, ...]:
    strides, step = [], np.dtype(dtype).itemsize
    for d in reversed(shape):
        strides.append(step)
        step *= int(d)
    return tuple(reversed(strides))


def _check_gpu_arch(path: Path, meta: dict, device: int) -> None:
    """The engine's metadata names the GPU archs it was built for; say so in one line before TensorRT refuses."""
    from trtx_base import cudainfo

    archs = (meta.get("gpu") or {}).get("archs") or []
    devices, _ = cudainfo.devices()
    dev = next((d for d in devices if d.index == device), None)
    if archs and dev is not None and dev.arch not in archs:
        raise EngineError(f"{path} was built for {', '.join(archs)}; GPU {device} is {dev.name} ({dev.arch}): "
                          f"rebuild with --gpu-arch {dev.arch} (or current)")  # fmt: skip


__all__ = ["DeviceArray", "Engine", "EngineError", "cuda_array_interface", "cuda_context"]
