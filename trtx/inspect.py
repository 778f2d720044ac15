"""``inspect``: what a network is made of, layer by layer, with totals.

:func:`describe` reads an INetworkDefinition (or a :class:`trtx.net.Net`) without building it: every layer's
inputs and outputs (shapes and dtypes as the network declares them; -1 = dynamic), its key attributes (from
:func:`trtx.layers.attributes`), how many weight values it stores, and a MACs estimate for convolutions,
deconvolutions and matrix multiplies. :func:`write_graph` (from :mod:`trtx.graph`) draws it.

Counting rules (the totals are estimates a user can redo by hand):

* weights: values the network stores: convolution/deconvolution kernel + bias, scale shift + scale + power
  (``net.batchnorm`` stores all three, so a batch-norm over C channels counts 3·C), constant tensors.
* MACs at batch 1 (a dynamic batch dimension counts as 1): convolution ``volume(output) · C_in/groups ·
  volume(kernel)``; deconvolution ``volume(input) · C_out/groups · volume(kernel)``; matrix multiply
  ``volume(output) · K``. A layer with another dynamic dimension has no estimate and is listed as such.
"""

from __future__ import annotations

import enum
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtx.graph import GraphFile, to_dot, write_graph
from trtx.net import np_dtype

__all__ = ["NetworkSummary", "LayerInfo", "TensorInfo", "describe", "write_graph", "to_dot", "GraphFile"]

_DTYPE_SHORT = {"float32": "f32", "float16": "f16", "int32": "i32", "int64": "i64", "int8": "i8", "uint8": "u8"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def short(self, with_name: bool = True) -> str:
        text = f"{_dims(self.shape)} {_DTYPE_SHORT.get(self.dtype, self.dtype)}"
        return f"{self.name}[{text}]" if with_name else f"[{text}]"


@dataclass
class LayerInfo:
    index: int
    name: str
    type: str
    inputs: list[TensorInfo | None]
    outputs: list[TensorInfo]
    attributes: dict[str, Any]
    weights: int
    #: multiply-accumulates at batch 1; None for layers without an estimate (or with unknown shapes)
    macs: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "type": self.type,
            "inputs": [t.to_json() if t is not None else None for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "attributes": {k: _jsonable(v) for k, v in self.attributes.items()},
            "weights": self.weights,
            "macs": self.macs,
        }


@dataclass
class NetworkSummary:
    name: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    layers: list[LayerInfo]
    #: conv/deconv/matmul layers whose MACs could not be estimated (a non-batch dimension is dynamic)
    macs_unknown: list[str] = field(default_factory=list)

    @property
    def layers_by_type(self) -> dict[str, int]:
        """Layer count per type, most frequent first."""
        return dict(Counter(layer.type for layer in self.layers).most_common())

    @property
    def parameters(self) -> int:
        """Weight values stored in the network (see the module docstring for what counts)."""
        return sum(layer.weights for layer in self.layers)

    @property
    def macs(self) -> int:
        """Multiply-accumulates at batch 1 of the conv/deconv/matmul layers with an estimate."""
        return sum(layer.macs for layer in self.layers if layer.macs is not None)

    def totals(self) -> dict[str, Any]:
        return {
            "layers": len(self.layers),
            "layers_by_type": self.layers_by_type,
            "parameters": self.parameters,
            "macs": self.macs,
            "macs_batch": 1,
            "macs_unknown": list(self.macs_unknown),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "layers": [layer.to_json() for layer in self.layers],
            "totals": self.totals(),
        }

    def json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_json(), indent=indent)

    def table(self) -> str:
        """The layer table followed by the totals, as aligned text."""
        rows = [("#", "name", "type", "inputs -> outputs", "attributes", "weights", "MACs")]
        for layer in self.layers:
            rows.append(
                (
                    str(layer.index),
                    layer.name,
                    layer.type,
                    _io(layer),
                    _attrs(layer.type, layer.attributes),
                    f"{layer.weights:,}" if layer.weights else "",
                    _count(layer.macs) if layer.macs else "",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"network {self.name!r}"]
        lines.append("  inputs:  " + ", ".join(t.short() for t in self.inputs))
        lines.append("  outputs: " + ", ".join(t.short() for t in self.outputs))
        for r in rows:
            cells = [c.rjust(w) if i in (0, 5, 6) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
            lines.append("  " + "  ".join(cells).rstrip())
        by_type = ", ".join(f"{k} {v}" for k, v in self.layers_by_type.items())
        lines.append(f"layers:     {len(self.layers)} ({by_type})")
        lines.append(f"parameters: {self.parameters:,} ({_count(self.parameters)}) weight values stored")
        unknown = f"; no estimate for {', '.join(self.macs_unknown)}" if self.macs_unknown else ""
        lines.append(f"MACs:       {self.macs:,} ({_count(self.macs)}) at batch 1, conv/deconv/matmul{unknown}")
        return "\n".join(lines)


def describe(network) -> NetworkSummary:
    """Summarize ``network`` (an INetworkDefinition or a :class:`trtx.net.Net`)."""
    from trtx import layers as layer_api

    nw = getattr(network, "network", network)
    infos: list[LayerInfo] = []
    unknown: list[str] = []
    for index, layer in enumerate(layer_api.layers(nw)):
        kind = _kind(layer)
        inputs = [_tensor(layer.get_input(i)) for i in range(layer.num_inputs)]
        outputs = [_tensor(layer.get_output(i)) for i in range(layer.num_outputs)]
        macs = _macs(layer, kind, inputs, outputs)
        if macs is None and kind in _MAC_TYPES:
            unknown.append(layer.name)
        infos.append(
            LayerInfo(
                index=index,
                name=layer.name,
                type=kind,
                inputs=inputs,
                outputs=outputs,
                attributes=dict(layer_api.attributes(layer)),
                weights=weight_count(layer, kind),
                macs=macs,
            )
        )
    return NetworkSummary(
        name=nw.name,
        inputs=[_tensor(nw.get_input(i)) for i in range(nw.num_inputs)],
        outputs=[_tensor(nw.get_output(i)) for i in range(nw.num_outputs)],
        layers=infos,
        macs_unknown=unknown,
    )


# ---- counting -----------------------------------------------------------------------------------
_WEIGHT_FIELDS = {
    "CONVOLUTION": ("kernel", "bias"),
    "DECONVOLUTION": ("kernel", "bias"),
    "SCALE": ("shift", "scale", "power"),
    "CONSTANT": ("weights",),
}
_MAC_TYPES = ("CONVOLUTION", "DECONVOLUTION", "MATRIX_MULTIPLY")


def weight_count(layer, kind: str | None = None) -> int:
    """Number of weight values ``layer`` (a typed layer) stores."""
    total = 0
    for attr in _WEIGHT_FIELDS.get(kind or _kind(layer), ()):
        value = getattr(layer, attr, None)
        total += int(getattr(value, "size", 0) or 0)
    return total


def _macs(layer, kind: str, inputs: list[TensorInfo | None], outputs: list[TensorInfo]) -> int | None:
    if kind not in _MAC_TYPES or not outputs or not inputs or inputs[0] is None:
        return None
    out = _batch1(outputs[0].shape)
    x = _batch1(inputs[0].shape)
    if out is None or x is None:
        return None
    if kind == "MATRIX_MULTIPLY":
        op = str(getattr(layer, "op0", "NONE")).split(".")[-1]
        k = x[-2] if op == "TRANSPOSE" and len(x) >= 2 else x[-1]
        return math.prod(out) * k
    kernel = math.prod(tuple(layer.kernel_size_nd))
    groups = int(getattr(layer, "num_groups", 1)) or 1
    if kind == "CONVOLUTION":
        return math.prod(out) * (x[1] // groups) * kernel
    return math.prod(x) * (out[1] // groups) * kernel  # deconvolution: each input value scatters a kernel


def _batch1(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """``shape`` with a dynamic batch dimension set to 1; None if another dimension is dynamic."""
    dims = list(shape)
    if dims and dims[0] < 0:
        dims[0] = 1
    return None if any(d < 0 for d in dims) else tuple(dims)


# ---- formatting ---------------------------------------------------------------------------------
def _kind(layer) -> str:
    from trtx import layers as layer_api

    return layer_api.enum_name(layer_api.layer_type(layer))


def _tensor(t) -> TensorInfo | None:
    if t is None:  # an optional input left unset
        return None
    try:
        dtype = np_dtype(t.dtype).name
    except Exception:  # noqa: BLE001 - dtypes numpy lacks (bf16, fp8, int4) keep TensorRT's name
        dtype = str(t.dtype).split(".")[-1].lower()
    return TensorInfo(t.name, tuple(int(d) for d in t.shape), dtype)


def _io(layer: LayerInfo) -> str:
    ins = ", ".join(t.short() if t is not None else "-" for t in layer.inputs)
    outs = ", ".join(t.short(with_name=t.name != layer.name) for t in layer.outputs)
    return f"{ins} -> {outs}"


#: attribute values the table leaves out as defaults (the JSON keeps every attribute)
_DEFAULTS = {
    "padding_mode": "EXPLICIT_ROUND_DOWN",
    "groups": 1,
    "zero_is_placeholder": True,
    "selector_for_single_pixel": "FORMULA",
    "exclude_outside": False,
    "nearest_rounding": "FLOOR",
}
#: weight summaries ("float32[432]"): the weights column counts them
_WEIGHT_KEYS = {"weights", "bias", "shift", "scale", "power"}


def _attrs(kind: str, attrs: dict[str, Any]) -> str:
    """Key attributes for the table: defaults, identity permutations and weight summaries left out."""
    shown = {}
    for key, value in attrs.items():
        if value is None or key in _WEIGHT_KEYS or _DEFAULTS.get(key, object()) == value:
            continue
        if key == "out_channels":
            continue  # the output shape shows it
        if key == "dilation" and set(value) == {1}:
            continue
        if key in ("first_transpose", "second_transpose") and tuple(value) == tuple(range(len(value))):
            continue
        if kind == "ACTIVATION" and key in ("alpha", "beta") and value == 0.0:
            continue
        if kind == "POOLING" and key == "blend_factor" and attrs.get("pooling") != "MAX_AVERAGE_BLEND":
            continue
        if kind == "POOLING" and key == "count_excludes_padding" and attrs.get("pooling") == "MAX":
            continue
        if kind == "RESIZE" and key == "cubic_coeff" and attrs.get("mode") != "CUBIC":
            continue
        shown[key] = value
    if "pre_padding" in shown and shown.get("pre_padding") == shown.get("post_padding"):
        pad = shown.pop("pre_padding")
        del shown["post_padding"]
        if isinstance(pad, (tuple, list)) and any(pad):
            shown["pad"] = pad
    return " ".join(f"{k}={_brief(v, axes=k == 'axes')}" for k, v in shown.items())


def _brief(value: Any, axes: bool = False) -> str:
    value = _jsonable(value)
    if isinstance(value, list):
        if len(value) > 8:
            return f"[{len(value)} values]"
        if all(isinstance(v, (int, float)) for v in value):
            return ("," if axes else "x").join(str(v) for v in value)
    return str(value)


def _jsonable(value: Any) -> Any:
    """Attribute values as JSON: enums by member name, tuples and arrays as lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if hasattr(value, "__members__") or type(value).__module__.startswith("tensorrt"):
        name = getattr(value, "name", None)
        if isinstance(name, str):
            return name
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)) or hasattr(value, "__len__") and hasattr(value, "__getitem__"):
        try:
            return [_jsonable(v) for v in value]
        except TypeError:
            pass
    return str(value)


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
