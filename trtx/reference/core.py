"""The reference executor's engine room: the op registry, one layer's invocation (:class:`LayerCall`), dtypes
and errors. The plan that runs a whole network is :mod:`trtx.reference.plan`.

Each layer type has one function ``op(call) -> list[torch.Tensor]`` registered with :func:`implements`. The
function reads the layer's attributes through the backend's own layer class (``call.layer``: the
:func:`trtx.layers.typed` layer behind a :class:`FrozenLayer`, which reads each attribute once), gets its inputs
from ``call.inputs`` and raises through ``call.unsupported`` for any attribute value it does not implement.
A plan makes one ``LayerCall`` per layer and reuses it on every run, so an op may keep what it derives from the
layer's attributes and its input *shapes* in ``call.memo`` (weights as device tensors, paddings, index maps):
never anything derived from input *values*.

Numerics: floating inputs are handed to ops as float32 (exact for fp16/bf16); every output is then rounded to
the dtype the network declares for that tensor, so an fp16 network stores fp16 values between layers exactly as
TensorRT does, with fp32 math inside a layer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
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
    key = (id(trt), len(_OPS))
    cached = _REGISTRY.get(key)
    if cached is None:
        cached = _REGISTRY[key] = {getattr(trt.LayerType, k): fn for k, fn in _OPS.items() if hasattr(trt.LayerType, k)}
    return cached


_REGISTRY: dict[tuple[int, int], dict] = {}  # (backend module, ops registered) -> registry()


#: boundary layers of loops and conditionals: the plan runs them as regions (trtx/reference/control.py)
REGION_KINDS = (
    "TRIP_LIMIT",
    "RECURRENCE",
    "ITERATOR",
    "LOOP_OUTPUT",
    "CONDITION",
    "CONDITIONAL_INPUT",
    "CONDITIONAL_OUTPUT",
)

#: layer types the executor refuses, and why (docs/reference.md lists them too)
REFUSED = {
    "DYNAMIC_QUANTIZE": "it outputs NVFP4/MXFP8 data with FP8/E8M0 block scales, and DynamicQuantize.html does not say "
    "how a block's scale is derived from its values (its rounding to the scale type, the double-quantization scale): "
    "there is nothing to check an implementation against; nor does the executor carry FP4 tensors",
    "DIST_COLLECTIVE": "a collective over several GPUs (NCCL ranks); the executor runs a network on one device",
    "PLUGIN": "the legacy IPluginLayer (IPluginV1), which no backend of this project can create; plugin layers are "
    "PLUGIN_V2/PLUGIN_V3",
}


def implemented_kinds() -> list[str]:
    """LayerType member names the executor runs: its ops and the loop/conditional boundary layers."""
    return sorted(set(_OPS) | set(REGION_KINDS))


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

_MISSING = object()


class FrozenLayer:
    """A typed layer whose attributes are read from the backend once and then remembered.

    The network is static once a plan is compiled, so an attribute read (a pybind11 call, an enum, a numpy copy of
    the weights) is done on the first access only. Methods (``get_input``, ``get_output``) pass through.
    """

    __slots__ = ("_layer", "_cache")

    def __init__(self, layer) -> None:
        object.__setattr__(self, "_layer", layer)
        object.__setattr__(self, "_cache", {})

    def __getattr__(self, name: str):
        cache = self._cache
        value = cache.get(name, _MISSING)
        if value is _MISSING:
            value = getattr(self._layer, name)
            if not callable(value):
                cache[name] = value
        return value

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"a compiled layer is read-only ({name})")


class LayerCall:
    """What an op function sees: the layer, its input values (None where unset) and helpers.

    ``donated`` lists the input indices whose tensors nothing else uses any more: the op may write its result
    into them (:meth:`scratch`). The plan decides that; an op never has to.
    """

    __slots__ = ("layer", "raw", "kind", "inputs", "device", "out_dtypes", "donated", "trt", "_memo", "_host")

    def __init__(
        self,
        layer,
        kind: str,
        inputs: list[torch.Tensor | None] | None,
        device: torch.device,
        out_dtypes: list[torch.dtype] | None = None,
        *,
        host: dict | None = None,
        trt=None,
    ) -> None:
        self.raw = layer
        self.layer = FrozenLayer(layer)
        self.kind = kind
        self.inputs = inputs if inputs is not None else []
        self.device = device
        self.out_dtypes = out_dtypes if out_dtypes is not None else []
        self.donated: tuple[int, ...] = ()
        self.trt = trt if trt is not None else backend.trt  # the TensorRT module (enums), looked up once
        self._memo: dict = {}
        #: id(tensor) -> (tensor, its values as a list): host copies of the plan's small folded tensors
        self._host = host if host is not None else {}

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

    def memo(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()`` once per ``key`` for the life of the plan (key it by every input shape the value depends on)."""
        value = self._memo.get(key, _MISSING)
        if value is _MISSING:
            value = self._memo[key] = make()
        return value

    def weights(self, value, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        """Layer weights (numpy / trt.Weights) as a tensor on the device; None when empty. Converted once."""
        key = ("weights", id(value), dtype)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is value:
            return hit[1]
        array = L.weights(value)
        if array is None:
            t = None
        else:
            t = compute(torch.from_numpy(np.array(array, copy=True)).to(self.device))
            t = t.to(dtype) if dtype is not None else t
        self._memo[key] = (value, t)  # holding ``value`` keeps its id from being reused
        return t

    def known(self, t: torch.Tensor) -> list | None:
        """The values of ``t`` as a flat list if it is one of the plan's small folded tensors, else None."""
        hit = self._host.get(id(t))
        return hit[1] if hit is not None and hit[0] is t else None

    def values(self, t: torch.Tensor) -> list:
        """A small tensor's values as Python numbers (no device round trip for the plan's folded tensors)."""
        known = self.known(t)
        return known if known is not None else t.reshape(-1).tolist()

    def ints(self, t: torch.Tensor) -> list[int]:
        """A shape tensor's values as Python ints."""
        return [int(v) for v in self.values(t)]

    def floats(self, t: torch.Tensor) -> list[float]:
        return [float(v) for v in self.values(t)]

    def scratch(self, index: int, t: torch.Tensor) -> torch.Tensor | None:
        """``t`` (input ``index`` or a compute copy of it) if the op may overwrite it with its result, else None."""
        if t is not self.inputs[index] or index in self.donated:
            return t if _dense(t) else None
        return None


def _dense(t: torch.Tensor) -> bool:
    """Contiguous in the default or a channels-last layout (CPU convolutions give channels-last tensors)."""
    if t.is_contiguous():
        return True
    layout = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
    return layout is not None and t.is_contiguous(memory_format=layout)


@dataclass(eq=False)
class Node:
    """One layer of a plan: its op, its reusable LayerCall, input/output slots and declared outputs. A loop or a
    conditional is one node too: ``call`` None, ``op(values, check)`` runs its own steps. A node made of several
    layers (:mod:`trtx.reference.fusion`) names its fusion in ``fused``."""

    kind: str
    where: str
    op: Any
    call: LayerCall | None
    ins: list[int]  # -1: input not set
    outs: list[int]
    #: per output: (torch dtype, TensorRT dtype name, declared dims, name)
    meta: list[tuple[torch.dtype, str, tuple[int, ...], str]]
    fused: str = ""
