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


@implements("ACTIVATION")
def activation(call: LayerCall) -> list[torch.Tensor]:
    kind = call.layer.type  # IActivationLayer.type is the ActivationType
    x = call.x(0)
    if not x.dtype.is_floating_point and kind.name != "RELU":
        raise call.unsupported(f"type={kind.name} on {x.dtype} input")
    y = _activation(kind.name, x, float(call.layer.alpha), float(call.layer.beta))
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


@implements("ELEMENTWISE")
def elementwise(call: LayerCall) -> list[torch.Tensor]:
    op = call.layer.op.name
    a, b = call.x(0), call.x(1)
    if a.dim() != b.dim():
        raise call.error(f"inputs have ranks {a.dim()} and {b.dim()}; TensorRT broadcasts only equal ranks")
    for i, (da, db) in enumerate(zip(a.shape, b.shape)):
        if da != db and 1 not in (da, db):
            raise call.error(f"dimension {i} of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot broadcast")
    floating = a.dtype.is_floating_point
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


@implements("SCALE")
def scale(call: LayerCall) -> list[torch.Tensor]:
    """output = (input · scale + shift) ^ power, coefficients per tensor, channel or element."""
    layer = call.layer
    x = call.x(0)
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
    coefficients = {}
    for name in ("shift", "scale", "power"):
        w = call.weights(getattr(layer, name))
        if w is not None and w.numel() != count:
            raise call.error(f"{name} has {w.numel()} values, mode {mode} needs {count} (shape {shape})")
        coefficients[name] = None if w is None else w.reshape(shape)
    y = x
    if coefficients["scale"] is not None:
        y = y * coefficients["scale"]
    if coefficients["shift"] is not None:
        y = y + coefficients["shift"]
    if coefficients["power"] is not None:
        y = torch.pow(y, coefficients["power"])
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
