"""Elementwise-style layers: Activation, ElementWise, Unary, Scale, ParametricReLU, Select, Cast, Identity.

Formulas: docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/{Activation,ElementWise,Unary,Scale,
PRelu,Select,Cast,Identity}.html.
"""

from __future__ import annotations

import math

import torch

from trtx.reference.core import LayerCall, implements


def _activation(name: str, x: torch.Tensor, a: float, b: float) -> torch.Tensor | None:
    if name == "RELU":
        return torch.clamp_min(x, 0) if x.dtype.is_floating_point else torch.where(x > 0, x, torch.zeros_like(x))
    if name == "SIGMOID":
        return torch.sigmoid(x)
    if name == "TANH":
        return torch.tanh(x)
    if name == "LEAKY_RELU":
        return torch.where(x >= 0, x, a * x)
    if name == "ELU":
        return torch.where(x >= 0, x, a * torch.expm1(x))
    if name == "SELU":
        return torch.where(x >= 0, b * x, b * (a * torch.exp(x) - a))
    if name == "SOFTSIGN":
        return x / (1 + x.abs())
    if name == "SOFTPLUS":
        return a * torch.nn.functional.softplus(b * x)  # alpha · log(e^(beta·x) + 1), overflow-safe
    if name == "CLIP":
        return torch.clamp(x, min=a, max=b) if a <= b else torch.full_like(x, a)
    if name == "HARD_SIGMOID":
        return torch.clamp(a * x + b, 0, 1)
    if name == "SCALED_TANH":
        return a * torch.tanh(b * x)
    if name == "THRESHOLDED_RELU":
        # NvInfer.h: "x > alpha ? x : 0" (what the ONNX ThresholdedRelu import relies on); see docs/reference.md
        return torch.where(x > a, x, torch.zeros_like(x))
    if name == "GELU_ERF":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))
    if name == "GELU_TANH":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return None


#: activations computed by one torch function that can write into a given tensor (``out=``)
_ACTIVATION_OUT = {"SIGMOID": torch.sigmoid, "TANH": torch.tanh}


@implements("ACTIVATION")
def activation(call: LayerCall) -> list[torch.Tensor]:
    kind = call.layer.type  # IActivationLayer.type is the ActivationType
    name = kind.name
    x = call.x(0)
    if not x.dtype.is_floating_point and name != "RELU":
        raise call.unsupported(f"type={name} on {x.dtype} input")
    buffer = call.scratch(0, x) if x.dtype.is_floating_point else None
    if buffer is not None:
        if name == "RELU":
            return [torch.clamp_min(x, 0, out=buffer)]
        if name in _ACTIVATION_OUT:
            return [_ACTIVATION_OUT[name](x, out=buffer)]
    y = _activation(name, x, float(call.layer.alpha), float(call.layer.beta))
    if y is None:
        raise call.unsupported("type", kind)
    return [y]


def _int_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="trunc")


_ELEMENTWISE = {
    "SUM": torch.add,
    "PROD": torch.mul,
    "MAX": torch.maximum,
    "MIN": torch.minimum,
    "SUB": torch.sub,
    "POW": torch.pow,
    "AND": torch.logical_and,
    "OR": torch.logical_or,
    "XOR": torch.logical_xor,
    "EQUAL": torch.eq,
    "GREATER": torch.gt,
    "LESS": torch.lt,
}
#: float ops whose result has the inputs' dtype: they may write into an input of the result's shape
_ELEMENTWISE_OUT = {"SUM": torch.add, "PROD": torch.mul, "MAX": torch.maximum, "MIN": torch.minimum, "SUB": torch.sub}


def _broadcast(call: LayerCall, a: torch.Size, b: torch.Size) -> tuple[int, ...]:
    if len(a) != len(b):
        raise call.error(f"inputs have ranks {len(a)} and {len(b)}; TensorRT broadcasts only equal ranks")
    for i, (da, db) in enumerate(zip(a, b)):
        if da != db and 1 not in (da, db):
            raise call.error(f"dimension {i} of shapes {tuple(a)} and {tuple(b)} cannot broadcast")
    return tuple(max(da, db) if 0 not in (da, db) else 0 for da, db in zip(a, b))


@implements("ELEMENTWISE")
def elementwise(call: LayerCall) -> list[torch.Tensor]:
    op = call.layer.op.name
    a, b = call.x(0), call.x(1)
    shape = call.memo(("broadcast", a.shape, b.shape), lambda: _broadcast(call, a.shape, b.shape))
    floating = a.dtype.is_floating_point
    if floating and op in _ELEMENTWISE_OUT and a.dtype == b.dtype:
        for index, t in ((0, a), (1, b)):
            if t.shape == shape:
                buffer = call.scratch(index, t)
                if buffer is not None:
                    return [_ELEMENTWISE_OUT[op](a, b, out=buffer)]
    if op == "DIV":
        y = a / b if floating else _int_div(a, b)
    elif op == "FLOOR_DIV":
        y = torch.floor(a / b) if floating else torch.div(a, b, rounding_mode="floor")
    elif op in _ELEMENTWISE:
        y = _ELEMENTWISE[op](a, b)
    else:
        raise call.unsupported("op", call.layer.op)
    return [y]


_UNARY = {
    "EXP": torch.exp,
    "LOG": torch.log,
    "SQRT": torch.sqrt,
    "RECIP": torch.reciprocal,
    "ABS": torch.abs,
    "NEG": torch.neg,
    "SIN": torch.sin,
    "COS": torch.cos,
    "TAN": torch.tan,
    "SINH": torch.sinh,
    "COSH": torch.cosh,
    "ASIN": torch.asin,
    "ACOS": torch.acos,
    "ATAN": torch.atan,
    "ASINH": torch.asinh,
    "ACOSH": torch.acosh,
    "ATANH": torch.atanh,
    "CEIL": torch.ceil,
    "FLOOR": torch.floor,
    "ERF": torch.erf,
    "NOT": torch.logical_not,
    "SIGN": torch.sign,
    "ROUND": torch.round,  # round half to even, as TensorRT's kROUND
    "ISINF": torch.isinf,
    "ISNAN": torch.isnan,
}


@implements("UNARY")
def unary(call: LayerCall) -> list[torch.Tensor]:
    op = call.layer.op.name
    fn = _UNARY.get(op)
    if fn is None:
        raise call.unsupported("op", call.layer.op)
    return [fn(call.x(0))]


def _scale_setup(call: LayerCall, x: torch.Tensor):
    """(shift, scale, power) shaped for ``x`` (None: absent or the identity), and the batch-norm form if any."""
    layer = call.layer
    mode = layer.mode.name
    axis = int(layer.channel_axis)
    if mode == "UNIFORM":
        shape: tuple[int, ...] = (1,) * x.dim()
    elif mode == "CHANNEL":
        shape = tuple(x.shape[axis] if i == axis else 1 for i in range(x.dim()))
    elif mode == "ELEMENTWISE":
        shape = (1,) * axis + tuple(x.shape[axis:])
    else:
        raise call.unsupported("mode", layer.mode)
    count = math.prod(shape)
    coefficients = []
    for name in ("shift", "scale", "power"):
        w = call.weights(getattr(layer, name))
        if w is not None and w.numel() != count:
            raise call.error(f"{name} has {w.numel()} values, mode {mode} needs {count} (shape {shape})")
        coefficients.append(None if w is None else w.reshape(shape))
    shift, scale, power = coefficients
    if power is not None and bool((power == 1).all()):
        power = None  # x ** 1 == x exactly: skip the slowest op of the three
    affine = None
    if mode == "CHANNEL" and axis == 1 and x.dim() >= 2 and x.dtype == torch.float32:
        weight = scale.reshape(-1) if scale is not None else torch.ones(count, device=call.device)
        bias = shift.reshape(-1) if shift is not None else torch.zeros(count, device=call.device)
        if bool(torch.isfinite(weight).all()):  # batch norm with mean 0, variance 1: x · scale + shift
            affine = (weight, bias, torch.zeros(count, device=call.device), torch.ones(count, device=call.device))
    return shift, scale, power, affine


@implements("SCALE")
def scale(call: LayerCall) -> list[torch.Tensor]:
    """output = (input · scale + shift) ^ power, coefficients per tensor, channel or element."""
    x = call.x(0)
    shift, factor, power, affine = call.memo(("scale", x.shape, x.dtype), lambda: _scale_setup(call, x))
    if affine is not None:
        weight, bias, zeros, ones = affine
        # the ATen op: torch.nn.functional.batch_norm refuses eps 0 (torch 2.11), the kernel computes it exactly
        y = torch.batch_norm(x, weight, bias, zeros, ones, False, 0.0, 0.0, torch.backends.cudnn.enabled)
    else:
        y = x
        if factor is not None:
            y = y * factor
        if shift is not None:
            y = y + shift
    if power is not None:
        y = torch.pow(y, power)
    return [y]


@implements("PARAMETRIC_RELU")
def parametric_relu(call: LayerCall) -> list[torch.Tensor]:
    x, slope = call.x(0), call.x(1)
    return [torch.where(x >= 0, x, slope * x)]


@implements("SELECT")
def select(call: LayerCall) -> list[torch.Tensor]:
    condition, then, other = call.input(0), call.x(1), call.x(2)
    if condition.dtype != torch.bool:
        raise call.error(f"condition has dtype {condition.dtype}, TensorRT requires bool")
    return [torch.where(condition, then, other)]


@implements("CAST")
def cast(call: LayerCall) -> list[torch.Tensor]:
    x = call.x(0)
    target = call.out_dtypes[0]
    if x.dtype.is_floating_point and not target.is_floating_point and target != torch.bool:
        # float -> int truncates toward zero (C++ static_cast semantics)
        x = torch.trunc(x)
    return [x.to(target) if call.layer.to_type.name != "FP8" else x]


@implements("IDENTITY")
def identity(call: LayerCall) -> list[torch.Tensor]:
    return [call.x(0)]
