"""The network-under-construction context every netdef writes into.

A netdef's ``define(net, cfg)`` receives a :class:`Net`: the TensorRT ``network`` (blocks may call
``net.network.add_*`` directly), the :class:`wts.WeightMap` it reads weights from, and the compute dtype.
The helpers here are the few operations where trtx must stay in charge:

* weight lookup with shape checks whose errors name the key and the layer,
* keeping numpy arrays alive until the builder has copied them (TensorRT only borrows the pointer),
* the compute dtype (strongly typed networks: fp16 means fp16 weights and casts at the borders) and the
  fp32 policy for precision-sensitive layers (:data:`FP32_POLICY`, checked by :meth:`Net.fp32_policy_violations`),
* explicit INT8: one Quantize/Dequantize pair per quantized tensor, shared by all its consumers, at the inputs
  of convolution / deconvolution / matrix multiply (+ per-output-channel weight Q/DQ) and at the residual input
  of an ``add`` that TensorRT fuses into the convolution before it (docs/precision.md),
* layer and tensor naming: a layer named like a PyTorch module path produces that module's output,
  which is how ``check`` lines the network up with the PyTorch model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from trtx_base import backend
from trtx_base.dtypes import np_dtype, trt_dtype
from trtx_base.errors import UserError
from trtx_base.log import Logger

PRECISIONS = ("fp32", "fp16", "int8")

#: Layers that compute in fp32 whatever the precision (TensorRT layer type -> why). The netdef casts their input
#: with ``net.to_fp32``; ``fp32_policy_violations`` lists the layers of a network that do not. The YOLO and
#: RetinaFace box decode (elementwise layers, not a layer type) follows the same policy in its netdef.
FP32_POLICY = {
    "SOFTMAX": "softmax: exp() of fp16 logits loses the small probabilities",
    "NORMALIZATION": "normalization statistics: mean/variance sums overflow or cancel in fp16",
    "NMS": "NMS inputs: box coordinates beyond 2048 px have a resolution of 2+ px in fp16",
}
#: layers a following elementwise sum can be fused into (TensorRT: conv [+ BN scale] + add [+ activation])
_FUSES_ADD = ("CONVOLUTION", "DECONVOLUTION")


class NetdefError(UserError, ValueError):
    """A mistake in a netdef, its configuration or its weights; the message is meant for the user as is."""


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
        logger=None,
        calibration: Mapping[str, float] | None = None,
        int8_fallback: Iterable[str] = (),
    ) -> None:
        if precision not in PRECISIONS:
            raise NetdefError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.backend = backend.get()
        self.trt = self.backend.trt
        self.logger = logger or Logger(quiet=True)  # errors reach the user in the exceptions that carry them
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
        #: names of the tensors INT8 quantizes (inputs of conv/deconv/linear, residual inputs of fused adds),
        #: recorded in every precision so the fp32 network tells the calibrator what to observe
        self.quant_inputs: list[str] = []
        #: int8: quantization points left unquantized (their consumers compute in fp16, weights included)
        self.int8_fallback = set(int8_fallback)
        #: input name -> {axis: (min, opt, max)}: the optimization profile of dynamic axes other than the batch
        #: (an image's height and width); a dynamic axis 0 without an entry takes the build's ``--batch``
        self.input_ranges: dict[str, dict[int, tuple[int, int, int]]] = {}
        self._keep: list[np.ndarray] = []
        self._plugin_objects: list[Any] = []  # IPluginV3 objects of the plugin layers (see keep_plugin)
        self._cast_of: dict[str, str] = {}  # cast output -> the tensor it casts (same values, other dtype)
        self._cast_src: dict[str, Any] = {}  # cast output -> that tensor itself (int8 quantizes the original)
        self._qdq: dict[tuple[str, Any], Any] = {}  # (point, dtype) -> its dequantized tensor, shared by consumers
        self._finite: set[str] = set()  # weight keys checked for NaN/inf
        #: conv output tensor -> (layer, weight key, weight size, input channels, groups, kernel): its channel count
        #: came from the weight's size, so a wrong ``groups`` shows first in the layer after it
        self._channels_from: dict[str, tuple[str, str, int, int, int, tuple[int, ...]]] = {}

    def keep_plugin(self, plugin: Any) -> None:
        """Hold ``plugin`` (the IPluginV3 object of a plugin layer) as long as the network: TensorRT keeps only a
        pointer to it, and the Python object must outlive the build."""
        self._plugin_objects.append(plugin)

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
        self._cast_src[out.name] = self._cast_src.get(x.name, x)
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
        if key not in self._finite:
            _check_finite(value, key, layer, getattr(self.weights, "path", None))
            self._finite.add(key)
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

    def trt_weights(self, array: np.ndarray, dtype: Any = None, *, what: str | None = None):
        """TensorRT Weights over ``array`` converted to ``dtype`` (default: the compute dtype).

        Values beyond fp16's range stop the build with a message naming ``what`` instead of becoming inf."""
        dtype = np_dtype(dtype) if dtype is not None else self.dtype
        array = self.keep(_converted(np.asarray(array), dtype, what))
        return self.trt.Weights(array)

    def empty_weights(self):
        return self.trt.Weights(trt_dtype(self.dtype))

    def constant(self, array: np.ndarray, name: str, dtype: Any = None):
        """A constant tensor (compute dtype for floats unless ``dtype`` is given)."""
        array = np.asarray(array)
        if dtype is None:
            dtype = self.dtype if array.dtype.kind == "f" else array.dtype
        array = self.keep(_converted(array, np_dtype(dtype), name))
        layer = self.network.add_constant(array.shape, self.trt.Weights(array))
        self.name(layer, name)
        return layer.get_output(0)

    def check_weights_finite(self) -> None:
        """The weights the netdef read without :meth:`array` (``net.weights[key]``) hold no NaN or inf either."""
        used = getattr(self.weights, "used", None)
        path = getattr(self.weights, "path", None)
        for key in used() if callable(used) else []:
            if key not in self._finite:
                _check_finite(np.asarray(self.weights.peek(key), dtype=np.float32), key, None, path)
                self._finite.add(key)

    def unused_weights(self) -> list[str]:
        unused = getattr(self.weights, "unused", None)
        return sorted(unused()) if callable(unused) else []

    # ---- inputs, outputs, names -----------------------------------------------------------------
    def input(
        self,
        name: str,
        shape: Sequence[int],
        dtype: Any = None,
        *,
        ranges: Mapping[int, tuple[int, int, int]] | None = None,
    ):
        """Add a network input (dtype = the I/O dtype) and return it in the compute dtype.

        Use -1 for the batch dimension; the build's batch profile fills it in. Other dynamic axes (-1) need
        their (min, opt, max) in ``ranges`` ({axis: (min, opt, max)}), which may also fix the batch's.
        """
        shape = tuple(int(d) for d in shape)
        ranges = {int(a) % len(shape): tuple(int(v) for v in r) for a, r in (ranges or {}).items()}
        for axis, d in enumerate(shape):
            if d == -1 and axis != 0 and axis not in ranges:
                raise NetdefError(f"input {name!r}: dynamic axis {axis} of {shape} needs its (min, opt, max) range")
        for axis, r in ranges.items():
            if shape[axis] != -1 or len(r) != 3 or not 1 <= r[0] <= r[1] <= r[2]:
                raise NetdefError(f"input {name!r}: range {r} of axis {axis} (shape {shape}): expected a dynamic "
                                  "axis and 1 <= min <= opt <= max")  # fmt: skip
        if ranges:
            self.input_ranges[name] = ranges
        tensor = self.network.add_input(name, trt_dtype(dtype or self.io_dtype), shape)
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
        old = tensor.name
        tensor.name = module_path
        if old != module_path:  # keep the precision bookkeeping, which is by name, in step
            self._cast_of = {k: (module_path if v == old else v) for k, v in self._cast_of.items()}
            if old in self._cast_of:
                self._cast_of[module_path] = self._cast_of.pop(old)
                self._cast_src[module_path] = self._cast_src.pop(old)
            self.quant_inputs = [module_path if p == old else p for p in self.quant_inputs]
            self._qdq = {((module_path if p == old else p), dt): t for (p, dt), t in self._qdq.items()}
        return tensor

    # ---- the layers where trtx owns precision (conv, deconv, linear, batch-norm, residual add) -------------
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

        ``bias=None`` uses ``{path}.bias`` when the weights have it. Weights take the dtype of ``x`` (fp16 in an
        fp16 network, fp32 inside an fp32 island); in int8 the input and the weights (per output channel) get
        Q/DQ unless the input is an ``int8_fallback`` tensor.
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
        if out_ch % groups:
            raise NetdefError(
                f"layer {path}: weight {weight_key!r} ({w.size} values) gives {out_ch} output channels with "
                f"groups={groups}, not a multiple of the groups: check the groups of {path}"
            )
        w = w.reshape(out_ch, in_ch // groups, *kernel)
        layer = self._weighted(
            x, path, w, 0, bias, bias_key or f"{path}.bias", out_ch, weight_key,
            lambda x, k, b: self.network.add_convolution_nd(x, out_ch, kernel, k, b),
        )  # fmt: skip
        layer.stride_nd = _nd(stride, nd)
        layer.padding_nd = _nd(padding, nd)
        layer.dilation_nd = _nd(dilation, nd)
        layer.num_groups = groups
        self.name(layer, path)
        self._channels_from[layer.get_output(0).name] = (path, weight_key, w.size, in_ch, groups, kernel)
        return layer

    def deconv(
        self,
        x,
        path: str,
        kernel: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        groups: int = 1,
        bias: bool | None = None,
    ):
        """nn.ConvTransposeNd at ``path`` (weight [in, out / groups, *kernel]; output channels from its size).

        In int8 the weights are quantized per output channel along axis 1, as TensorRT expects for
        deconvolution (per tensor when ``groups > 1``: axis 1 then holds only one group's channels).
        """
        nd = len(x.shape) - 2
        kernel = _nd(kernel, nd)
        in_ch = int(x.shape[1])
        if in_ch < 0:
            raise NetdefError(f"layer {path}: the channel dimension of its input must be static")
        if in_ch % groups:
            raise NetdefError(f"layer {path}: {in_ch} input channels are not divisible by groups={groups}")
        w = self.array(f"{path}.weight", layer=path)
        per_out = in_ch * math.prod(kernel)
        if w.size % per_out:
            raise NetdefError(
                f"weight {path + '.weight'!r} has {w.size} values, not a multiple of {per_out} "
                f"(= {in_ch} input channels × kernel {kernel}) for layer {path}"
            )
        out_ch = w.size // per_out * groups
        w = w.reshape(in_ch, out_ch // groups, *kernel)
        layer = self._weighted(
            x, path, w, 1 if groups == 1 else None, bias, f"{path}.bias", out_ch, f"{path}.weight",
            lambda x, k, b: self.network.add_deconvolution_nd(x, out_ch, kernel, k, b),
        )  # fmt: skip
        layer.stride_nd = _nd(stride, nd)
        layer.padding_nd = _nd(padding, nd)
        layer.num_groups = groups
        return self.name(layer, path)

    def linear(
        self,
        x,
        path: str,
        *,
        bias: bool | None = None,
        weight_key: str | None = None,
        bias_key: str | None = None,
        rows: tuple[int, int] | None = None,
    ):
        """nn.Linear at ``path`` on a [..., in] tensor: matrix multiply by the [out, in] weight, plus bias.

        ``weight_key``/``bias_key`` read other keys than ``{path}.weight``/``.bias``; ``rows=(start, stop)`` uses
        only those output features of weight and bias (one part of a packed projection, as
        nn.MultiheadAttention's ``in_proj_weight`` holds q, k and v)."""
        in_f = int(x.shape[-1])
        w = self.array(weight_key or f"{path}.weight", (-1, in_f), layer=path)
        b = self._optional_bias(bias, bias_key or f"{path}.bias", w.shape[0], path)
        if rows is not None:
            w, b = w[rows[0] : rows[1]], (None if b is None else b[rows[0] : rows[1]])
        out_f = w.shape[0]
        rank = len(x.shape)
        dtype = self._float_dtype(x)
        x, quantized = self._quantized_input(x, path)
        if quantized:
            wt = self._quantized_weight(w, 0, path, dtype)
            if rank > 2:
                reshape = self.network.add_shuffle(wt)
                reshape.reshape_dims = (1,) * (rank - 2) + w.shape
                wt = self.name(reshape, f"{path}.weight.reshape").get_output(0)
        else:
            wt = self.constant(w.reshape((1,) * (rank - 2) + w.shape), f"{path}.weight", dtype)
        mm = self.network.add_matrix_multiply(x, self.trt.MatrixOperation.NONE, wt, self.trt.MatrixOperation.TRANSPOSE)
        if b is None:
            return self.name(mm, path)
        self.name(mm, f"{path}.matmul")
        bt = self.constant(b.reshape((1,) * (rank - 1) + (out_f,)), f"{path}.bias", dtype)
        add = self.network.add_elementwise(mm.get_output(0), bt, self.trt.ElementWiseOperation.SUM)
        return self.name(add, path)

    def batchnorm(self, x, path: str, eps: float = 1e-5):
        """nn.BatchNormNd at ``path`` (inference) as a per-channel IScale: y = x·s + t (weights in x's dtype)."""
        c = int(x.shape[1])
        self._check_channels(x, c, f"{path}.weight", path)
        gamma = self.array(f"{path}.weight", (c,), layer=path)
        beta = self.array(f"{path}.bias", (c,), layer=path)
        mean = self.array(f"{path}.running_mean", (c,), layer=path)
        var = self.array(f"{path}.running_var", (c,), layer=path)
        if f"{path}.num_batches_tracked" in self.weights:  # a training counter: mark it read, not unused
            self.weights[f"{path}.num_batches_tracked"]
        if not (var + eps > 0).all():
            bad = int(np.argmin(var + eps))
            raise NetdefError(
                f"weight {path + '.running_var'!r} (layer {path}) has {float(var[bad]):.4g} at channel {bad}: a "
                "variance must be >= 0; the weights are broken"
            )
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        power = np.ones_like(scale)
        dtype = self._float_dtype(x)
        layer = self.network.add_scale_nd(
            x,
            self.trt.ScaleMode.CHANNEL,
            self.trt_weights(shift, dtype, what=f"{path} (shift)"),
            self.trt_weights(scale, dtype, what=f"{path} (scale)"),
            self.trt_weights(power, dtype),
            1,
        )
        return self.name(layer, path)

    def _check_channels(self, x, c: int, key: str, path: str) -> None:
        """Before layer ``path`` reads ``key`` for ``c`` channels: where ``x`` comes from a convolution whose channel
        count came from its weight's size and ``key`` has another count, the convolution's ``groups`` is what is
        wrong (its weight fits the channels ``key`` has with other groups): name that convolution."""
        source = self._channels_from.get(x.name)
        if source is None or key not in self.weights:
            return
        peek = getattr(self.weights, "peek", self.weights.__getitem__)
        have = int(np.asarray(peek(key)).size)
        if have == c:
            return
        conv, weight_key, size, in_ch, groups, kernel = source
        fits = [g for g in range(1, in_ch + 1) if in_ch % g == 0 and size == have * (in_ch // g) * math.prod(kernel)]
        hint = f": groups={fits[0]} fits" if fits else ""
        raise NetdefError(
            f"layer {conv}: with groups={groups} its weight {weight_key!r} ({size} values) gives {c} output channels, "
            f"but {path} after it has {have} ({key}){hint}; check the groups of {conv}"
        )

    def add(self, a, b, name: str):
        """``a + b``, a residual connection. In int8, when one operand comes straight from a convolution (+ batch
        norm) TensorRT fuses the add into that convolution, and the other operand, the residual input, is
        quantized -- with the same Q/DQ as its other quantized consumers, so both branches share one scale
        (TensorRT's explicit-quantization placement; docs/precision.md)."""
        if self._fuses_add(a):  # b is the residual input (also when both could be: the shortcut of a ResNet block)
            b, _ = self._quantized_input(b, name, role="residual input")
        elif self._fuses_add(b):
            a, _ = self._quantized_input(a, name, role="residual input")
        return self.name(self.network.add_elementwise(a, b, self.trt.ElementWiseOperation.SUM), name)

    # ---- int8: explicit quantization (TensorRT fuses Q/DQ into int8 conv/matmul kernels) -----------
    def qdq(self, x, scale: np.ndarray | float, name: str, axis: int | None = None, dtype: Any = None):
        """Quantize to int8 and dequantize to ``dtype`` (default: ``x``'s) with ``scale`` (per-tensor or along
        ``axis``)."""
        trt = self.trt
        s = self.constant(np.asarray(scale, np.float32), f"{name}.scale", dtype=np.float32)
        q = self.network.add_quantize(x, s, trt.DataType.INT8)
        dq = self.network.add_dequantize(q.get_output(0), s, x.dtype if dtype is None else trt_dtype(dtype))
        if axis is not None:
            q.axis = dq.axis = axis
        self.name(q, f"{name}.quantize")
        return self.name(dq, f"{name}.dequantize").get_output(0)

    def quantization_point(self, x) -> str:
        """The name ``x``'s values go by for calibration: the tensor before any dtype cast, so the fp32 network
        the calibrator runs and the int8 network agree on names."""
        return self._cast_of.get(x.name, x.name)

    def _quantized_input(self, x, path: str, role: str = "input"):
        """(``x`` or its Q/DQ, whether it is quantized). Records ``x`` as a quantization point in every precision;
        in int8 returns the one Q/DQ pair of that tensor (made on first use), scale = calibrated amax / 127. The
        Quantize reads the tensor before any dtype cast (an fp32 network input is quantized from fp32, not after
        rounding to fp16); the Dequantize gives ``x``'s dtype."""
        point = self.quantization_point(x)
        if point not in self.quant_inputs:
            self.quant_inputs.append(point)
        if self.precision != "int8" or point in self.int8_fallback:
            return x, False
        key = (point, x.dtype)
        if key not in self._qdq:
            amax = self.calibration.get(point)
            if amax is None:
                raise NetdefError(
                    f"int8: no calibration range for tensor {point!r} ({role} of layer {path}); "
                    "calibrate with --calib DIR or pass --calib-cache"
                )
            source = self._cast_src.get(x.name, x)
            self._qdq[key] = self.qdq(source, amax / 127.0, point, dtype=x.dtype)
        return self._qdq[key], True

    def _quantized_weight(self, w: np.ndarray, axis: int | None, path: str, dtype: Any = None):
        """Weight as constant -> Q/DQ per output channel along ``axis`` (per tensor for None), in ``dtype``."""
        from trtx.quant import weight_amax

        wt = self.constant(w, f"{path}.weight", dtype)
        if axis is None:
            return self.qdq(wt, float(np.abs(w).max() or 1e-8) / 127.0, f"{path}.weight")
        return self.qdq(wt, weight_amax(w, axis=axis) / 127.0, f"{path}.weight", axis=axis)

    def _weighted(self, x, path, w, axis, bias, bias_key, out_ch, weight_key, add):
        """A conv/deconv layer: fp weights in x's dtype, or (int8) Q/DQ input and Q/DQ weights as input 1."""
        dtype = self._float_dtype(x)
        b = self._optional_bias(bias, bias_key, out_ch, path)
        no_weights = self.trt.Weights(trt_dtype(dtype))
        bias_weights = self.trt_weights(b, dtype, what=bias_key) if b is not None else no_weights
        x, quantized = self._quantized_input(x, path)
        if not quantized:
            return add(x, self.trt_weights(w, dtype, what=weight_key), bias_weights)
        layer = add(x, no_weights, bias_weights)
        layer.set_input(1, self._quantized_weight(w, axis, path, dtype))
        return layer

    def _float_dtype(self, x) -> np.dtype:
        """The dtype a layer reading ``x`` computes in: ``x``'s own when it is a float type, else the compute dtype."""
        if x.dtype == self.trt.DataType.FLOAT:
            return np.dtype(np.float32)
        return np.dtype(np.float16) if x.dtype == self.trt.DataType.HALF else self.dtype

    def _fuses_add(self, t) -> bool:
        """Whether an add reading ``t`` can be fused into the layer computing ``t``: ``t`` comes straight from a
        convolution (optionally through a batch-norm IScale) and nothing else reads it (a tensor other layers
        read, like a block input that is also the residual, must be written out before the add)."""
        producer = self._producer(t.name)
        if producer is not None and _layer_kind(producer) == "SCALE":
            producer = self._producer(producer.get_input(0).name)
        return producer is not None and _layer_kind(producer) in _FUSES_ADD and not self._read(t.name)

    def _producer(self, tensor_name: str):
        nw = self.network
        for i in range(nw.num_layers - 1, -1, -1):
            layer = nw.get_layer(i)
            if any(layer.get_output(j).name == tensor_name for j in range(layer.num_outputs)):
                return layer
        return None

    def _read(self, tensor_name: str) -> bool:
        """Whether a layer of the network reads ``tensor_name`` already."""
        nw = self.network
        for i in range(nw.num_layers):
            layer = nw.get_layer(i)
            for k in range(layer.num_inputs):
                t = layer.get_input(k)
                if t is not None and t.name == tensor_name:
                    return True
        return False

    # ---- the fp32 policy ----------------------------------------------------------------------------
    def fp32_policy_violations(self) -> list[str]:
        """Layers of :data:`FP32_POLICY` types whose float inputs are not fp32, one line each (empty = ok)."""
        trt = self.trt
        found = []
        for i in range(self.network.num_layers):
            layer = self.network.get_layer(i)
            kind = _layer_kind(layer)
            if kind not in FP32_POLICY:
                continue
            inputs = [layer.get_input(j) for j in range(min(layer.num_inputs, 2 if kind == "NMS" else 1))]
            bad = [t.name for t in inputs if t is not None and t.dtype in (trt.DataType.HALF, trt.DataType.BF16)]
            if bad:
                found.append(
                    f"layer {layer.name!r} ({kind}) computes in fp16 (input {', '.join(bad)}): "
                    f"{FP32_POLICY[kind]}; cast its input with net.to_fp32"
                )
        return found

    def _optional_bias(self, bias: bool | None, key: str, n: int, path: str) -> np.ndarray | None:
        if bias is False or (bias is None and key not in self.weights):
            return None
        return self.array(key, (n,), layer=path)


def _check_finite(value: np.ndarray, key: str, layer: str | None, path: str | None) -> None:
    """NaN or infinite weights make every output NaN: refuse them, naming the tensor (and its file)."""
    if np.isfinite(value).all():
        return
    nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
    first = int(np.argmin(np.isfinite(value.reshape(-1))))
    where = f" (layer {layer})" if layer else ""
    source = f" in {path}" if path else ""
    raise NetdefError(
        f"weight {key!r}{where}{source} holds {nan} NaN and {inf} infinite values (first at index {first}): "
        "the weights are broken (a diverged training run?); regenerate them"
    )


def define_network(net: Net, define: Any, *args: Any) -> None:
    """Run a netdef's ``define(net, *args)``. When TensorRT cannot compute a tensor's shape (two tensors that
    cannot be added, a reshape whose volume differs) it logs the error and the next layer reading that tensor
    fails with a bare ``RuntimeError``; that becomes a :class:`NetdefError` naming the first layer whose output
    shape TensorRT could not compute."""
    try:
        define(net, *args)
    except RuntimeError as exc:
        said = net.logger.errors()
        if not said or isinstance(exc, UserError):
            raise
        raise NetdefError(shape_failure(net.network, said)) from None


def shape_failure(network, said: Sequence[str]) -> str:
    """One line: the first layer of ``network`` whose output shape TensorRT cannot compute, its inputs' shapes
    and what TensorRT said."""
    reason = _trt_reason(said[0])
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if all(_shape_or_none(layer.get_output(j)) is not None for j in range(layer.num_outputs)):
            continue
        inputs = [layer.get_input(k) for k in range(layer.num_inputs)]
        shown = ", ".join(f"{t.name} {_shape_text(t)}" for t in inputs if t is not None)
        return (
            f"layer {layer.name!r} ({_layer_kind(layer)}): TensorRT cannot compute its output shape ({reason}); "
            f"its inputs: {shown}. A layer before it computes a wrong shape (stride, padding, kernel?): "
            "`check` names the first one that differs from PyTorch"
        )
    return f"TensorRT refused the network while it was defined: {reason}"


def _shape_or_none(tensor) -> tuple[int, ...] | None:
    try:
        return tuple(tensor.shape)
    except (RuntimeError, ValueError):
        return None


def _shape_text(tensor) -> str:
    shape = _shape_or_none(tensor)
    return "(shape unknown)" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def _trt_reason(message: str) -> str:
    """TensorRT's ``... Error Code 4: Shape Error (broadcast dimensions must be conformable In op at /_src/..)``
    -> ``Shape Error: broadcast dimensions must be conformable``."""
    import re

    text = re.sub(r"\s+In (op|function|catchCudaError) at \S+.*$", "", message.strip().rstrip(")"))
    text = re.sub(r"^.*?Error Code \d+: ", "", text)
    return text.replace(" (", ": ", 1).rstrip(")")


def _layer_kind(layer) -> str:
    from trtx import layers as layer_api

    return layer_api.enum_name(layer_api.layer_type(layer))


def _converted(array: np.ndarray, dtype: np.dtype, what: str | None) -> np.ndarray:
    """``array`` as ``dtype``; fp16 overflow of finite values is an error naming ``what``."""
    with np.errstate(over="ignore"):  # reported below, with the weight's name
        out = array.astype(dtype)
    if dtype == np.float16 and array.dtype.kind == "f" and not np.isfinite(out).all():
        big = np.isfinite(array) & ~np.isfinite(out)
        if big.any():
            raise NetdefError(
                f"{what or 'a weight'}: |values| up to {float(np.abs(array[big]).max()):.4g} overflow fp16 "
                "(max 65504): keep this layer in fp32 (net.to_fp32 before it)"
            )
    return out


def _nd(value: int | Iterable[int], nd: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * nd
    value = tuple(int(v) for v in value)
    if len(value) != nd:
        raise NetdefError(f"expected {nd} values, got {value}")
    return value
