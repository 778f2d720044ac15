"""The reference executor's engine room: tensor bookkeeping, the op registry, dtypes and errors.

Each layer type has one function ``op(call) -> list[torch.Tensor]`` registered with :func:`implements`. The
function reads the layer's attributes through the backend's own layer class (``call.layer`` is
:func:`trtx.layers.typed`), gets its inputs from ``call.inputs`` and raises through ``call.unsupported`` for any
attribute value it does not implement.

Numerics: floating inputs are handed to ops as float32 (exact for fp16/bf16); every output is then rounded to
the dtype the network declares for that tensor, so an fp16 network stores fp16 values between layers exactly as
TensorRT does, with fp32 math inside a layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trtx import layers as L
from trtx_base import backend
from trtx_base.errors import UserError


class ReferenceExecutionError(UserError, RuntimeError):
    """The reference executor cannot run this network or these feeds; the message names the layer/tensor."""


class NotImplementedInReference(ReferenceExecutionError, NotImplementedError):
    """A layer type or attribute value the reference executor does not implement (never guessed)."""


#: LayerType member name -> op function
_OPS: dict[str, Callable[[LayerCall], list[torch.Tensor]]] = {}


def implements(*kinds: str):
    """Register ``fn`` as the op for the LayerType members named ``kinds``."""

    def register(fn):
        for kind in kinds:
            _OPS[kind] = fn
        return fn

    return register


def registry() -> dict:
    """``{trt.LayerType.X: op}`` for the ops this backend's LayerType has."""
    trt = backend.trt
    return {getattr(trt.LayerType, k): fn for k, fn in _OPS.items() if hasattr(trt.LayerType, k)}


def implemented_kinds() -> list[str]:
    return sorted(_OPS)


# ---- dtypes -------------------------------------------------------------------------------------

_TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "FP8": getattr(torch, "float8_e4m3fn", None),
    # INT4 values (-8..7) are carried in int8 storage; TensorRT packs them, we don't need to.
    "INT4": torch.int8,
}


def torch_dtype(trt_dtype, where: str = "") -> torch.dtype:
    name = L.enum_name(trt_dtype)
    dt = _TORCH_DTYPES.get(name)
    if dt is None:
        raise NotImplementedInReference(f"{where}: data type {name} is not implemented by the reference executor")
    return dt


def compute(t: torch.Tensor) -> torch.Tensor:
    """The value ops compute with: floats as float32 (exact), everything else unchanged."""
    if t.dtype in (torch.float16, torch.bfloat16) or (t.dtype.is_floating_point and t.dtype.itemsize == 1):
        return t.float()
    return t


def to_declared(t: torch.Tensor, dtype: torch.dtype, trt_name: str) -> torch.Tensor:
    """Round an op result to the tensor's declared dtype."""
    if t.dtype == dtype:
        return t
    if trt_name == "FP8":  # saturate like TensorRT's FP8 conversion instead of producing NaN
        t = t.float().clamp(-448.0, 448.0)
    if trt_name == "INT4":
        return t.to(torch.int8)
    return t.to(dtype)


# ---- one layer invocation -----------------------------------------------------------------------


@dataclass
class LayerCall:
    """What an op function sees: the typed layer, its input values (None where unset) and helpers."""

    layer: Any
    kind: str
    inputs: list[torch.Tensor | None]
    device: torch.device
    out_dtypes: list[torch.dtype] = field(default_factory=list)

    @property
    def trt(self):
        return backend.trt

    @property
    def name(self) -> str:
        return self.layer.name

    def where(self) -> str:
        return f"layer {self.name!r} ({self.kind})"

    def unsupported(self, attribute: str, value: Any = None) -> NotImplementedInReference:
        shown = L.enum_name(value) if hasattr(value, "name") else value
        detail = f"{attribute}={shown}" if value is not None else attribute
        return NotImplementedInReference(f"{self.where()}: {detail} is not implemented by the reference executor")

    def error(self, message: str) -> ReferenceExecutionError:
        return ReferenceExecutionError(f"{self.where()}: {message}")

    def input(self, index: int) -> torch.Tensor:
        value = self.inputs[index] if index < len(self.inputs) else None
        if value is None:
            raise self.error(f"input {index} is not set")
        return value

    def optional(self, index: int) -> torch.Tensor | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def x(self, index: int = 0) -> torch.Tensor:
        """Input ``index`` as a compute value (floats in float32)."""
        return compute(self.input(index))

    def weights(self, value, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        """Layer weights (numpy / trt.Weights) as a tensor on the device; None when empty."""
        array = L.weights(value)
        if array is None:
            return None
        t = torch.from_numpy(np.array(array, copy=True)).to(self.device)
        t = compute(t)
        return t.to(dtype) if dtype is not None else t

    def ints(self, t: torch.Tensor) -> list[int]:
        """A shape tensor's values as Python ints."""
        return [int(v) for v in t.reshape(-1).tolist()]


# ---- the executor -------------------------------------------------------------------------------


def _feed_tensor(name: str, value, tensor, device: torch.device) -> torch.Tensor:
    declared = torch_dtype(tensor.dtype, f"network input {name!r}")
    if isinstance(value, np.ndarray) or np.isscalar(value):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise ReferenceExecutionError(
            f"feed {name!r}: expected a numpy array or torch tensor, got {type(value).__name__}"
        )
    kind = lambda dt: "bool" if dt == torch.bool else ("float" if dt.is_floating_point else "int")  # noqa: E731
    if kind(value.dtype) != kind(declared):
        raise ReferenceExecutionError(
            f"feed {name!r} has dtype {value.dtype} but the network input is {L.enum_name(tensor.dtype)}"
        )
    shape = L.dims(tensor.shape)
    if value.dim() != len(shape) or any(d >= 0 and d != v for d, v in zip(shape, value.shape)):
        raise ReferenceExecutionError(
            f"feed {name!r} has shape {tuple(value.shape)} but the network input is {shape} (-1 = any)"
        )
    return value.to(device=device, dtype=declared)


def _check_output(where: str, index: int, value: torch.Tensor, tensor) -> None:
    declared = L.dims(tensor.shape)
    if len(declared) != value.dim() or any(d >= 0 and d != v for d, v in zip(declared, value.shape)):
        raise ReferenceExecutionError(
            f"{where}: output {index} ({tensor.name!r}) computed with shape {tuple(value.shape)} but "
            f"TensorRT declares {declared}; the reference executor disagrees with TensorRT about this layer"
        )


def _schedule(network, needed: set[str] | None) -> list:
    """Typed layers in dependency order; only those needed for ``needed`` tensors (None = every layer)."""
    all_layers = list(L.layers(network))
    producer: dict[str, int] = {}
    for i, layer in enumerate(all_layers):
        for o in range(layer.num_outputs):
            name = layer.get_output(o).name
            if name in producer:
                raise ReferenceExecutionError(
                    f"tensor name {name!r} is produced by both layer {all_layers[producer[name]].name!r} and "
                    f"layer {layer.name!r}; tensor names must be unique"
                )
            producer[name] = i
    order: list[int] = []
    state: dict[int, int] = {}  # 1 = visiting, 2 = done

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            j, expanded = stack.pop()
            if expanded:
                state[j] = 2
                order.append(j)
                continue
            if state.get(j) == 2:
                continue
            if state.get(j) == 1:
                raise ReferenceExecutionError(f"layer {all_layers[j].name!r} is part of a cycle")
            state[j] = 1
            stack.append((j, True))
            layer = all_layers[j]
            for k in range(layer.num_inputs):
                t = layer.get_input(k)
                if t is not None and t.name in producer and state.get(producer[t.name]) != 2:
                    if state.get(producer[t.name]) == 1:
                        raise ReferenceExecutionError(f"layer {layer.name!r} is part of a cycle (loop layers?)")
                    stack.append((producer[t.name], False))

    if needed is None:
        roots: list[int] = list(range(len(all_layers)))
    else:  # the layers producing what was asked for, plus every assertion (they guard the whole run)
        asserts = {i for i, layer in enumerate(all_layers) if L.enum_name(L.layer_type(layer)) == "ASSERTION"}
        roots = sorted({producer[n] for n in needed if n in producer} | asserts)
    for i in roots:
        visit(i)
    return [all_layers[i] for i in order]


@contextlib.contextmanager
def _exact_float32():
    """No TF32 inside the reference: cuDNN convolutions default to it on Ampere+ GPUs (≈1e-3 relative error)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def execute(
    network,
    feeds: Mapping[str, np.ndarray | torch.Tensor],
    device: str | torch.device = "cpu",
    keep: Iterable[str] | str | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``network`` (an ``INetworkDefinition``, or a :class:`trtx.net.Net`) in PyTorch.

    ``feeds`` maps every network input name to its value; dynamic dimensions are taken from the feeds.
    Returns the marked outputs, plus the tensors named in ``keep`` (``"all"`` = every tensor computed),
    each in the dtype the network declares for it, on ``device``.
    """
    with _exact_float32():
        return _execute(getattr(network, "network", network), feeds, torch.device(device), keep)


def _execute(network, feeds, device: torch.device, keep) -> dict[str, torch.Tensor]:
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    missing = sorted(set(inputs) - set(feeds))
    unknown = sorted(set(feeds) - set(inputs))
    if missing or unknown:
        raise ReferenceExecutionError(
            f"feeds must name every network input exactly: missing {missing}, unknown {unknown} "
            f"(inputs: {sorted(inputs)})"
        )
    values: dict[str, torch.Tensor] = {name: _feed_tensor(name, feeds[name], inputs[name], device) for name in inputs}

    keep_all = isinstance(keep, str) and keep == "all"
    kept: list[str] = [] if keep is None or keep_all else ([keep] if isinstance(keep, str) else list(keep))
    known = set(inputs) | {layer.get_output(o).name for layer in L.layers(network) for o in range(layer.num_outputs)}
    unknown_keep = [n for n in kept if n not in known]
    if unknown_keep:
        raise ReferenceExecutionError(f"keep names tensors the network does not have: {unknown_keep}")
    needed = None if keep_all else set(outputs) | set(kept)
    ops = registry()
    for layer in _schedule(network, needed):
        kind_enum = L.layer_type(layer)
        kind = L.enum_name(kind_enum)
        args = []
        for k in range(layer.num_inputs):
            t = layer.get_input(k)
            if t is None:
                args.append(None)
            elif t.name not in values:
                raise ReferenceExecutionError(
                    f"layer {layer.name!r} ({kind}): input {k} {t.name!r} is neither a network input nor "
                    f"produced by any layer"
                )
            else:
                args.append(values[t.name])
        where = f"layer {layer.name!r} ({kind})"
        op = ops.get(kind_enum)
        if op is None:
            raise NotImplementedInReference(f"{where}: layer type {kind} is not implemented by the reference executor")
        out_tensors = [layer.get_output(o) for o in range(layer.num_outputs)]
        out_dtypes = [torch_dtype(t.dtype, f"{where} output {t.name!r}") for t in out_tensors]
        results = op(LayerCall(layer, kind, args, device, out_dtypes))
        if len(results) != len(out_tensors):
            raise ReferenceExecutionError(f"{where}: op returned {len(results)} outputs, layer has {len(out_tensors)}")
        for o, (value, tensor) in enumerate(zip(results, out_tensors)):
            value = to_declared(value.to(device), out_dtypes[o], L.enum_name(tensor.dtype))
            _check_output(where, o, value, tensor)
            values[tensor.name] = value

    names = list(values) if keep_all else outputs + [n for n in kept if n not in outputs]
    return {n: values[n] for n in names}
