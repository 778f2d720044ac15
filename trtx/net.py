"""The network-under-construction context every netdef writes into.

A netdef's ``define(net, cfg)`` receives a :class:`Net`: the TensorRT ``network`` (blocks may call
``net.network.add_*`` directly), the :class:`wts.WeightMap` it reads weights from, and the compute dtype.
The helpers here are the few operations where trtx must stay in charge:

* weight lookup with shape checks whose errors name the key and the layer,
* keeping numpy arrays alive until the builder has copied them (TensorRT only borrows the pointer),
* the compute dtype (strongly typed networks: fp16 means fp16 weights and casts at the borders),
* layer and tensor naming: a layer named like a PyTorch module path produces that module's output,
  which is how ``check`` lines the network up with the PyTorch model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from trtx import backend
from trtx.log import Logger

#: numpy dtype -> name of the TensorRT DataType member
_NP_TO_TRT = {
    np.dtype(np.float32): "FLOAT",
    np.dtype(np.float16): "HALF",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.bool_): "BOOL",
}

PRECISIONS = ("fp32", "fp16", "int8")


class NetdefError(ValueError):
    """A mistake in a netdef, its configuration or its weights; the message is meant for the user as is."""


def trt_dtype(dtype: Any):
    """numpy dtype (or a TensorRT DataType, returned unchanged) -> TensorRT DataType."""
    trt = backend.trt
    if isinstance(dtype, trt.DataType):
        return dtype
    return getattr(trt.DataType, _NP_TO_TRT[np.dtype(dtype)])


def np_dtype(dtype: Any) -> np.dtype:
    """TensorRT DataType -> numpy dtype."""
    trt = backend.trt
    if not isinstance(dtype, trt.DataType):
        return np.dtype(dtype)
    for np_dt, name in _NP_TO_TRT.items():
        if dtype == getattr(trt.DataType, name):
            return np_dt
    raise NetdefError(f"TensorRT dtype {dtype} has no numpy equivalent")


def strongly_typed_flags(trt) -> int:
    """Creation flags for a strongly typed network (implicit on TensorRT 11 and TensorRT-RTX)."""
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


class Net:
    """A TensorRT network being defined, with the weights it reads and the precision it computes in."""

    def __init__(
        self,
        weights: Mapping[str, np.ndarray] | None = None,
        *,
        precision: str = "fp32",
        io_dtype: str = "fp32",
        name: str = "network",
        logger: Logger | None = None,
        calibration: Mapping[str, float] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise NetdefError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.backend = backend.get()
        self.trt = self.backend.trt
        self.logger = logger or Logger()
        self.builder = self.trt.Builder(self.logger)
        self.network = self.builder.create_network(strongly_typed_flags(self.trt))
        self.network.name = name
        self.weights = weights if weights is not None else {}
        self.precision = precision
        self.io_dtype = np.dtype(np.float16 if io_dtype == "fp16" else np.float32)
        #: facts about the model recorded in the engine metadata (classes, anchors, strides, ...)
        self.meta: dict[str, Any] = {}
        #: plugins (name, version, namespace) the network uses; the runtime re-registers them
        self.plugins: list[dict[str, str]] = []
        #: int8: activation ranges (max |x|) by tensor name, from trtx.calibrate
        self.calibration = dict(calibration or {})
        #: names of the tensors INT8 quantizes (inputs of conv/linear), recorded in every precision so the
        #: fp32 network tells the calibrator what to observe
        self.quant_inputs: list[str] = []
        self._keep: list[np.ndarray] = []
        self._cast_of: dict[str, str] = {}  # cast output -> the tensor it casts (same values, other dtype)

    # ---- dtypes ---------------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """numpy dtype activations and weights are computed in (fp16 for precision fp16 and int8)."""
        return np.dtype(np.float32 if self.precision == "fp32" else np.float16)

    def cast(self, x, dtype: Any, name: str | None = None):
        """Cast ``x`` to ``dtype`` (numpy or TensorRT dtype); a no-op when it already has it."""
        target = trt_dtype(dtype)
        if x.dtype == target:
            return x
        layer = self.network.add_cast(x, target)
        self.name(layer, name or f"{x.name}.cast_{np_dtype(target).name}")
        out = layer.get_output(0)
        self._cast_of[out.name] = self._cast_of.get(x.name, x.name)
        return out

    def to_compute(self, x, name: str | None = None):
        """Cast ``x`` to the compute dtype (used after network inputs and fp32 islands)."""
        return self.cast(x, self.dtype, name)

    def to_fp32(self, x, name: str | None = None):
        """Cast ``x`` to fp32 (precision-sensitive layers: softmax, decode, NMS inputs)."""
        return self.cast(x, np.float32, name)

    # ---- weights --------------------------------------------------------------------------------
    def array(self, key: str, shape: Sequence[int] | None = None, *, layer: str | None = None) -> np.ndarray:
        """Weight ``key`` as float32, reshaped to ``shape`` (-1 allowed once); errors name key and layer."""
        try:
            value = self.weights[key]
        except KeyError as exc:
            where = f" (layer {layer})" if layer else ""
            msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) and key in exc.args[0] else None
            raise NetdefError(msg or f"weights have no tensor {key!r}{where}") from None
        value = np.asarray(value, dtype=np.float32)
        if shape is None:
            return value
        shape = tuple(int(s) for s in shape)
        known = math.prod(s for s in shape if s != -1)
        if (
            shape.count(-1) > 1
            or (-1 in shape and (known == 0 or value.size % known))
            or (-1 not in shape and value.size != known)
        ):
            where = f" for layer {layer}" if layer else ""
            raise NetdefError(
                f"weight {key!r} has {value.size} values but{where} shape {shape} needs "
                f"{'a multiple of ' + str(known) if -1 in shape else known}"
            )
        return value.reshape(shape)

    def keep(self, array: np.ndarray) -> np.ndarray:
        """Keep ``array`` alive until the engine is built (TensorRT borrows weight memory)."""
        array = np.asarray(array)
        array = np.ascontiguousarray(array).reshape(array.shape)  # ascontiguousarray makes 0-d arrays 1-d
        self._keep.append(array)
        return array

    def trt_weights(self, array: np.ndarray, dtype: Any = None):
        """TensorRT Weights over ``array`` converted to ``dtype`` (default: the compute dtype)."""
        array = self.keep(np.asarray(array, dtype=np.dtype(dtype) if dtype is not None else self.dtype))
        return self.trt.Weights(array)

    def empty_weights(self):
        return self.trt.Weights(trt_dtype(self.dtype))

    def constant(self, array: np.ndarray, name: str, dtype: Any = None):
        """A constant tensor (compute dtype for floats unless ``dtype`` is given)."""
        array = np.asarray(array)
        if dtype is None:
            dtype = self.dtype if array.dtype.kind == "f" else array.dtype
        array = self.keep(array.astype(dtype))
        layer = self.network.add_constant(array.shape, self.trt.Weights(array))
        self.name(layer, name)
        return layer.get_output(0)

    def unused_weights(self) -> list[str]:
        unused = getattr(self.weights, "unused", None)
        return sorted(unused()) if callable(unused) else []

    # ---- inputs, outputs, names -----------------------------------------------------------------
    def input(self, name: str, shape: Sequence[int], dtype: Any = None):
        """Add a network input (dtype = the I/O dtype) and return it in the compute dtype.

        Use -1 for the batch dimension; the build's batch profile fills it in.
        """
        tensor = self.network.add_input(name, trt_dtype(dtype or self.io_dtype), tuple(shape))
        return self.to_compute(tensor, f"{name}.to_compute") if np.dtype(dtype or self.io_dtype).kind == "f" else tensor

    def output(self, tensor, name: str, dtype: Any = None):
        """Mark ``tensor`` as network output ``name`` in the I/O dtype (floats) or ``dtype``."""
        if dtype is None and np_dtype(tensor.dtype).kind == "f":
            dtype = self.io_dtype
        if dtype is not None and tensor.dtype != trt_dtype(dtype):
            tensor = self.cast(tensor, dtype, f"{name}.to_io")
        elif tensor.is_network_input or tensor.is_network_output:
            tensor = self.network.add_identity(tensor).get_output(0)
        tensor.name = name
        self.network.mark_output(tensor)
        return tensor

    def name(self, layer, name: str):
        """Name ``layer`` and its outputs (``name``, or ``name:i`` for several); returns the layer."""
        layer.name = name
        n = layer.num_outputs
        for i in range(n):
            layer.get_output(i).name = name if n == 1 else f"{name}:{i}"
        return layer

    def alias(self, tensor, module_path: str):
        """Rename ``tensor`` to ``module_path``: the output of that PyTorch module, for ``check``."""
        tensor.name = module_path
        return tensor

    # ---- the layers where trtx owns precision (conv, linear, batch-norm) -------------------------
    def conv(
        self,
        x,
        path: str,
        kernel: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool | None = None,
        weight_key: str | None = None,
        bias_key: str | None = None,
    ):
        """nn.ConvNd at module ``path``; output channels come from the weight's size, never from a flag.

        ``bias=None`` uses ``{path}.bias`` when the weights have it.
        """
        nd = len(x.shape) - 2
        kernel = _nd(kernel, nd)
        in_ch = int(x.shape[1])
        if in_ch < 0:
            raise NetdefError(f"layer {path}: the channel dimension of its input must be static")
        if in_ch % groups:
            raise NetdefError(f"layer {path}: {in_ch} input channels are not divisible by groups={groups}")
        weight_key = weight_key or f"{path}.weight"
        w = self.array(weight_key, layer=path)
        per_out = in_ch // groups * math.prod(kernel)
        if w.size % per_out:
            raise NetdefError(
                f"weight {weight_key!r} has {w.size} values, not a multiple of {per_out} "
                f"(= {in_ch} input channels / groups {groups} × kernel {kernel}) for layer {path}"
            )
        out_ch = w.size // per_out
        b = self._optional_bias(bias, bias_key or f"{path}.bias", out_ch, path)
        bias_weights = self.trt_weights(b) if b is not None else self.empty_weights()
        x = self._quantize_input(x, path)
        if self.precision == "int8":
            layer = self.network.add_convolution_nd(x, out_ch, kernel, self.empty_weights(), bias_weights)
            layer.set_input(1, self._quantized_weight(w.reshape(out_ch, in_ch // groups, *kernel), path))
        else:
            layer = self.network.add_convolution_nd(x, out_ch, kernel, self.trt_weights(w), bias_weights)
        layer.stride_nd = _nd(stride, nd)
        layer.padding_nd = _nd(padding, nd)
        layer.dilation_nd = _nd(dilation, nd)
        layer.num_groups = groups
        return self.name(layer, path)

    def linear(self, x, path: str, *, bias: bool | None = None):
        """nn.Linear at ``path`` on a [..., in] tensor: matrix multiply by the [out, in] weight, plus bias."""
        in_f = int(x.shape[-1])
        w = self.array(f"{path}.weight", (-1, in_f), layer=path)
        out_f = w.shape[0]
        rank = len(x.shape)
        x = self._quantize_input(x, path)
        if self.precision == "int8":
            wt = self._quantized_weight(w, path)
            if rank > 2:
                reshape = self.network.add_shuffle(wt)
                reshape.reshape_dims = (1,) * (rank - 2) + w.shape
                wt = self.name(reshape, f"{path}.weight.reshape").get_output(0)
        else:
            wt = self.constant(w.reshape((1,) * (rank - 2) + w.shape), f"{path}.weight")
        mm = self.network.add_matrix_multiply(x, self.trt.MatrixOperation.NONE, wt, self.trt.MatrixOperation.TRANSPOSE)
        b = self._optional_bias(bias, f"{path}.bias", out_f, path)
        if b is None:
            return self.name(mm, path)
        self.name(mm, f"{path}.matmul")
        bt = self.constant(b.reshape((1,) * (rank - 1) + (out_f,)), f"{path}.bias")
        add = self.network.add_elementwise(mm.get_output(0), bt, self.trt.ElementWiseOperation.SUM)
        return self.name(add, path)

    def batchnorm(self, x, path: str, eps: float = 1e-5):
        """nn.BatchNormNd at ``path`` (inference) as a per-channel IScale: y = x·s + t."""
        c = int(x.shape[1])
        gamma = self.array(f"{path}.weight", (c,), layer=path)
        beta = self.array(f"{path}.bias", (c,), layer=path)
        mean = self.array(f"{path}.running_mean", (c,), layer=path)
        var = self.array(f"{path}.running_var", (c,), layer=path)
        if f"{path}.num_batches_tracked" in self.weights:  # a training counter: mark it read, not unused
            self.weights[f"{path}.num_batches_tracked"]
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        power = np.ones_like(scale)
        layer = self.network.add_scale_nd(
            x,
            self.trt.ScaleMode.CHANNEL,
            self.trt_weights(shift),
            self.trt_weights(scale),
            self.trt_weights(power),
            1,
        )
        return self.name(layer, path)

    # ---- int8: explicit quantization (TensorRT fuses Q/DQ into int8 conv/matmul kernels) -----------
    def qdq(self, x, scale: np.ndarray | float, name: str, axis: int | None = None):
        """Quantize to int8 and dequantize back to ``x``'s dtype with ``scale`` (per-tensor or along ``axis``)."""
        trt = self.trt
        s = self.constant(np.asarray(scale, np.float32), f"{name}.scale", dtype=np.float32)
        q = self.network.add_quantize(x, s, trt.DataType.INT8)
        dq = self.network.add_dequantize(q.get_output(0), s, x.dtype)
        if axis is not None:
            q.axis = dq.axis = axis
        self.name(q, f"{name}.quantize")
        return self.name(dq, f"{name}.dequantize").get_output(0)

    def _quantize_input(self, x, path: str):
        """Record ``x`` as a quantization point; in int8, Q/DQ it with its calibrated range.

        Points are named by the tensor before any dtype cast, so fp32 and int8 networks agree on names.
        """
        point = self._cast_of.get(x.name, x.name)
        if point not in self.quant_inputs:
            self.quant_inputs.append(point)
        if self.precision != "int8":
            return x
        amax = self.calibration.get(point)
        if amax is None:
            raise NetdefError(
                f"int8: no calibration range for tensor {point!r} (input of layer {path}); "
                "calibrate with --calib DIR or pass --calib-cache"
            )
        return self.qdq(x, amax / 127.0, f"{path}.input")

    def _quantized_weight(self, w: np.ndarray, path: str):
        """Weight as constant → per-output-channel Q/DQ (axis 0), in the compute dtype."""
        from trtx.quant import weight_amax

        wt = self.constant(w, f"{path}.weight")
        return self.qdq(wt, weight_amax(w, axis=0) / 127.0, f"{path}.weight", axis=0)

    def _optional_bias(self, bias: bool | None, key: str, n: int, path: str) -> np.ndarray | None:
        if bias is False or (bias is None and key not in self.weights):
            return None
        return self.array(key, (n,), layer=path)


def _nd(value: int | Iterable[int], nd: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * nd
    value = tuple(int(v) for v in value)
    if len(value) != nd:
        raise NetdefError(f"expected {nd} values, got {value}")
    return value
