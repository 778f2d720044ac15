"""TensorRT layer type -> layer class, and plain-Python readers for layer attributes.

``INetworkDefinition.get_layer`` returns a bare ``ILayer``; the attributes of a convolution or a slice live on
``IConvolutionLayer`` / ``ISliceLayer``. Like Polygraphy's ``get_layer_class_mapping`` we map each
``trt.LayerType`` member to its class and set ``layer.__class__`` (the pybind11 object is already of that C++
type, only its Python view changes). The map is built from the loaded backend: only members and classes that
exist there are listed (TensorRT 10, 11 and TensorRT-RTX differ).

Careful: ``IActivationLayer.type`` and ``IPoolingLayer.type`` shadow ``ILayer.type`` (they return the
activation/pooling kind). :func:`layer_type` always returns the ``trt.LayerType``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np

from trtx_base import backend

#: LayerType member name -> class name (members or classes a backend lacks are skipped)
_CLASS_NAMES = {
    "CONVOLUTION": "IConvolutionLayer",
    "DECONVOLUTION": "IDeconvolutionLayer",
    "ACTIVATION": "IActivationLayer",
    "POOLING": "IPoolingLayer",
    "LRN": "ILRNLayer",
    "SCALE": "IScaleLayer",
    "SOFTMAX": "ISoftMaxLayer",
    "CONCATENATION": "IConcatenationLayer",
    "ELEMENTWISE": "IElementWiseLayer",
    "PLUGIN": "IPluginLayer",
    "UNARY": "IUnaryLayer",
    "PADDING": "IPaddingLayer",
    "SHUFFLE": "IShuffleLayer",
    "REDUCE": "IReduceLayer",
    "TOPK": "ITopKLayer",
    "GATHER": "IGatherLayer",
    "MATRIX_MULTIPLY": "IMatrixMultiplyLayer",
    "RAGGED_SOFTMAX": "IRaggedSoftMaxLayer",
    "CONSTANT": "IConstantLayer",
    "RNN_V2": "IRNNv2Layer",
    "IDENTITY": "IIdentityLayer",
    "CAST": "ICastLayer",
    "PLUGIN_V2": "IPluginV2Layer",
    "PLUGIN_V3": "IPluginV3Layer",
    "SLICE": "ISliceLayer",
    "SHAPE": "IShapeLayer",
    "PARAMETRIC_RELU": "IParametricReLULayer",
    "RESIZE": "IResizeLayer",
    "TRIP_LIMIT": "ITripLimitLayer",
    "RECURRENCE": "IRecurrenceLayer",
    "ITERATOR": "IIteratorLayer",
    "LOOP_OUTPUT": "ILoopOutputLayer",
    "SELECT": "ISelectLayer",
    "ASSERTION": "IAssertionLayer",
    "FILL": "IFillLayer",
    "QUANTIZE": "IQuantizeLayer",
    "DEQUANTIZE": "IDequantizeLayer",
    "CONDITION": "IConditionLayer",
    "CONDITIONAL_INPUT": "IIfConditionalInputLayer",
    "CONDITIONAL_OUTPUT": "IIfConditionalOutputLayer",
    "SCATTER": "IScatterLayer",
    "EINSUM": "IEinsumLayer",
    "GRID_SAMPLE": "IGridSampleLayer",
    "NMS": "INMSLayer",
    "ONE_HOT": "IOneHotLayer",
    "NON_ZERO": "INonZeroLayer",
    "REVERSE_SEQUENCE": "IReverseSequenceLayer",
    "NORMALIZATION": "INormalizationLayer",
    "SQUEEZE": "ISqueezeLayer",
    "UNSQUEEZE": "IUnsqueezeLayer",
    "CUMULATIVE": "ICumulativeLayer",
    "DYNAMIC_QUANTIZE": "IDynamicQuantizeLayer",
    "ATTENTION_INPUT": "IAttentionInputLayer",
    "ATTENTION_OUTPUT": "IAttentionOutputLayer",
    "ROTARY_EMBEDDING": "IRotaryEmbeddingLayer",
    "KV_CACHE_UPDATE": "IKVCacheUpdateLayer",
    "MOE": "IMoELayer",
    "DIST_COLLECTIVE": "IDistCollectiveLayer",
}


@cache
def _mapping(trt) -> dict:
    out = {}
    for member, cls_name in _CLASS_NAMES.items():
        member_value = getattr(trt.LayerType, member, None)
        cls = getattr(trt, cls_name, None)
        if member_value is not None and cls is not None:
            out[member_value] = cls
    return out


def layer_class_mapping() -> dict:
    """``{trt.LayerType.X: trt.IXLayer}`` for every member/class pair the loaded backend has."""
    return dict(_mapping(backend.trt))


def layer_type(layer):
    """The layer's ``trt.LayerType``, also for typed activation/pooling layers (whose ``.type`` is shadowed)."""
    return backend.trt.ILayer.type.__get__(layer)


def typed(layer):
    """``layer`` viewed as its own class (``IConvolutionLayer``, ...); unchanged if the backend has no class."""
    cls = _mapping(backend.trt).get(layer_type(layer))
    if cls is not None and not isinstance(layer, cls):
        layer.__class__ = cls
    return layer


def layers(network) -> Iterator:
    """The network's layers in order, each :func:`typed`."""
    trt = backend.trt
    mapping, layer_type_of = _mapping(trt), trt.ILayer.type.__get__
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        cls = mapping.get(layer_type_of(layer))
        if cls is not None and not isinstance(layer, cls):
            layer.__class__ = cls
        yield layer


# ---- plain-Python readers -----------------------------------------------------------------------


def dims(value) -> tuple[int, ...]:
    """A ``trt.Dims`` (or sequence) as a tuple of ints."""
    return tuple(int(v) for v in value)


def enum_name(value) -> str:
    """``ActivationType.RELU`` -> ``"RELU"``."""
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value).rsplit(".", 1)[-1]


def weights(value) -> np.ndarray | None:
    """Layer weights (a numpy array or ``trt.Weights``) as a numpy array; None when empty."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return value if value.size else None
    array = getattr(value, "numpy", None)
    if callable(array):
        value = array()
        return value if value.size else None
    return None


def axes_list(bitmask: int, rank: int | None = None) -> list[int]:
    """A TensorRT axes bitmask (bit i = axis i) as a sorted list of axes."""
    bitmask = int(bitmask)
    limit = rank if rank is not None else max(bitmask.bit_length(), 0)
    return [i for i in range(limit) if bitmask >> i & 1]


def _weights_summary(value) -> str | None:
    array = weights(value)
    return None if array is None else f"{array.dtype.name}[{array.size}]"


def _plain(value) -> Any:
    trt = backend.trt
    if isinstance(value, float):
        return float(str(np.float32(value)))  # TensorRT stores float32: print 0.1, not 0.10000000149011612
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, (trt.Dims, trt.Permutation, tuple, list)):
        return tuple(_plain(v) for v in value)
    if hasattr(value, "name") and hasattr(value, "value") and type(value).__module__.startswith(trt.__name__):
        return enum_name(value)
    if isinstance(value, np.ndarray) or isinstance(value, trt.Weights):
        return _weights_summary(value)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return str(value)


def _get(layer, name: str, default: Any = None) -> Any:
    try:
        return getattr(layer, name)
    except Exception:  # noqa: BLE001  -- some getters raise for unset/unsupported attributes
        return default


#: LayerType member name -> {key printed: attribute read}; class-shadowed ``type`` read as ``kind``
_KEY_ATTRIBUTES: dict[str, dict[str, str]] = {
    "CONVOLUTION": {
        "out_channels": "num_output_maps",
        "kernel": "kernel_size_nd",
        "stride": "stride_nd",
        "pre_padding": "pre_padding",
        "post_padding": "post_padding",
        "padding_mode": "padding_mode",
        "dilation": "dilation_nd",
        "groups": "num_groups",
        "weights": "kernel",
        "bias": "bias",
    },
    "ACTIVATION": {"activation": "type", "alpha": "alpha", "beta": "beta"},
    "POOLING": {
        "pooling": "type",
        "window": "window_size_nd",
        "stride": "stride_nd",
        "pre_padding": "pre_padding",
        "post_padding": "post_padding",
        "padding_mode": "padding_mode",
        "blend_factor": "blend_factor",
        "count_excludes_padding": "average_count_excludes_padding",
    },
    "LRN": {"window": "window_size", "alpha": "alpha", "beta": "beta", "k": "k"},
    "SCALE": {"mode": "mode", "channel_axis": "channel_axis", "shift": "shift", "scale": "scale", "power": "power"},
    "SOFTMAX": {"axes": "axes"},
    "CONCATENATION": {"axis": "axis"},
    "ELEMENTWISE": {"op": "op"},
    "UNARY": {"op": "op"},
    "PADDING": {"pre_padding": "pre_padding_nd", "post_padding": "post_padding_nd"},
    "SHUFFLE": {
        "first_transpose": "first_transpose",
        "reshape": "reshape_dims",
        "second_transpose": "second_transpose",
        "zero_is_placeholder": "zero_is_placeholder",
    },
    "REDUCE": {"op": "op", "axes": "axes", "keep_dims": "keep_dims"},
    "TOPK": {"op": "op", "k": "k", "axes": "axes"},
    "GATHER": {"mode": "mode", "axis": "axis", "num_elementwise_dims": "num_elementwise_dims"},
    "MATRIX_MULTIPLY": {"op0": "op0", "op1": "op1"},
    "CONSTANT": {"shape": "shape", "weights": "weights"},
    "CAST": {"to_type": "to_type"},
    "SLICE": {"mode": "mode", "start": "start", "shape": "shape", "stride": "stride", "axes": "axes"},
    "RESIZE": {
        "mode": "resize_mode",
        "shape": "shape",
        "scales": "scales",
        "coordinate_transformation": "coordinate_transformation",
        "nearest_rounding": "nearest_rounding",
        "selector_for_single_pixel": "selector_for_single_pixel",
        "cubic_coeff": "cubic_coeff",
        "exclude_outside": "exclude_outside",
    },
    "FILL": {"operation": "operation", "shape": "shape", "alpha": "alpha", "beta": "beta", "to_type": "to_type"},
    "QUANTIZE": {"axis": "axis", "to_type": "to_type", "block_shape": "block_shape"},
    "DEQUANTIZE": {"axis": "axis", "to_type": "to_type", "block_shape": "block_shape"},
    "SCATTER": {"mode": "mode", "axis": "axis"},
    "EINSUM": {"equation": "equation"},
    "GRID_SAMPLE": {
        "interpolation": "interpolation_mode",
        "align_corners": "align_corners",
        "sample_mode": "sample_mode",
    },
    "NMS": {"box_format": "bounding_box_format", "topk_box_limit": "topk_box_limit"},
    "ONE_HOT": {"axis": "axis"},
    "NORMALIZATION": {"axes": "axes", "epsilon": "epsilon", "groups": "num_groups"},
    "CUMULATIVE": {"op": "op", "exclusive": "exclusive", "reverse": "reverse"},
    "REVERSE_SEQUENCE": {"batch_axis": "batch_axis", "sequence_axis": "sequence_axis"},
}
_KEY_ATTRIBUTES["DECONVOLUTION"] = _KEY_ATTRIBUTES["CONVOLUTION"]

#: attributes given as a bitmask of axes: shown as a list of axes
_BITMASK = {"axes"}
#: attributes that only mean something when the layer has no dynamic input at that index
_SKIP_IF_INPUT = {
    ("SHUFFLE", "reshape"): 1,
    ("SLICE", "start"): 1,
    ("SLICE", "shape"): 2,
    ("SLICE", "stride"): 3,
    ("FILL", "shape"): 0,
}


def permutations(layer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """An IShuffleLayer's (first_transpose, second_transpose), trimmed to the ranks they apply to."""
    rank_in = len(layer.get_input(0).shape)
    rank_out = len(layer.get_output(0).shape)
    return tuple(int(v) for v in layer.first_transpose)[:rank_in], tuple(int(v) for v in layer.second_transpose)[
        :rank_out
    ]


def resize_size(layer) -> tuple[str, Any]:
    """How an IResizeLayer gets its output size: ``("input", 1)``, ``("scales", (...))`` or ``("shape", (...))``.

    Scales are read first: reading ``shape`` of a resize whose size was never set makes TensorRT log errors.
    """
    if layer.num_inputs > 1 and layer.get_input(1) is not None:
        return "input", 1
    scales = tuple(float(v) for v in (layer.scales or ()))
    if scales:
        return "scales", scales
    shape = layer.shape
    return ("shape", dims(shape)) if shape is not None else ("unset", None)


def attributes(layer) -> dict[str, Any]:
    """The key attributes of ``layer`` (typed or not) as plain Python values, for printing.

    Enums become their member names, ``Dims`` tuples, weights ``"float32[108]"``, axes bitmasks lists of axes.
    Attributes the backend does not have are left out.
    """
    layer = typed(layer)
    kind = enum_name(layer_type(layer))
    spec = _KEY_ATTRIBUTES.get(kind, {})
    out: dict[str, Any] = {}
    if kind == "RESIZE":
        how, value = resize_size(layer)
        out[how if how != "input" else "shape"] = _plain(value) if how != "input" else "<input 1>"
        spec = {k: v for k, v in spec.items() if k not in ("shape", "scales")}
    for key, attr in spec.items():
        if not hasattr(type(layer), attr):
            continue
        index = _SKIP_IF_INPUT.get((kind, key))
        if index is not None and layer.num_inputs > index and layer.get_input(index) is not None:
            out[key] = f"<input {index}>"
            continue
        value = _get(layer, attr)
        if key in _BITMASK and isinstance(value, int) and kind != "SLICE":
            out[key] = axes_list(value)
        else:
            out[key] = _plain(value)
    if kind == "SHUFFLE":
        out["first_transpose"], out["second_transpose"] = permutations(layer)
    return out


def describe(layer) -> str:
    """One line: ``name [TYPE] key=value ...``."""
    attrs = " ".join(f"{k}={v}" for k, v in attributes(layer).items())
    return f"{layer.name} [{enum_name(layer_type(layer))}] {attrs}".rstrip()
