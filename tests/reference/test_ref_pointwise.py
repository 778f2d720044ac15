"""Conformance: Activation, ElementWise, Unary, Scale, ParametricReLU, Select, Cast, Identity.

Formulas from docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Activation.html, ElementWise.html,
Unary.html, Scale.html, PRelu.html, Select.html, Cast.html, Identity.html.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from refcase import DEVICES, Case, assert_close, rand, t

pytestmark = pytest.mark.parametrize("device", DEVICES)

# Activation.html, attribute by attribute (alpha a, beta b)
ACTIVATIONS = {
    "RELU": (0.0, 0.0, lambda x, a, b: torch.relu(x)),
    "SIGMOID": (0.0, 0.0, lambda x, a, b: torch.sigmoid(x)),
    "TANH": (0.0, 0.0, lambda x, a, b: torch.tanh(x)),
    "LEAKY_RELU": (0.1, 0.0, lambda x, a, b: F.leaky_relu(x, a)),
    "ELU": (0.7, 0.0, lambda x, a, b: F.elu(x, a)),
    "SELU": (1.6732632, 1.0507010, lambda x, a, b: F.selu(x)),
    "SOFTSIGN": (0.0, 0.0, lambda x, a, b: F.softsign(x)),
    "SOFTPLUS": (1.5, 2.0, lambda x, a, b: a * b * F.softplus(x, beta=b)),  # torch: log(1 + e^(b·x)) / b
    "CLIP": (-0.5, 1.25, lambda x, a, b: torch.clamp(x, a, b)),
    "HARD_SIGMOID": (0.2, 0.5, lambda x, a, b: torch.clamp(a * x + b, 0, 1)),
    "SCALED_TANH": (1.7, 0.66, lambda x, a, b: a * torch.tanh(b * x)),
    "THRESHOLDED_RELU": (0.3, 0.0, lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x))),
    "GELU_ERF": (0.0, 0.0, lambda x, a, b: F.gelu(x)),
    "GELU_TANH": (0.0, 0.0, lambda x, a, b: F.gelu(x, approximate="tanh")),
}


@pytest.mark.parametrize("kind", sorted(ACTIVATIONS))
def test_activation(device, kind):
    alpha, beta, expected_fn = ACTIVATIONS[kind]
    c = Case()
    x = c.input("x", (-1, 3, 5))
    layer = c.nw.add_activation(x, getattr(c.trt.ActivationType, kind))
    layer.alpha, layer.beta = alpha, beta
    c.output(layer)
    xv = rand(2, 3, 5, low=-3, high=3)
    y = c.run({"x": xv}, device)["y"]
    assert_close(y, expected_fn(t(xv, device), np.float32(alpha).item(), np.float32(beta).item()))


def test_activation_hand_values(device):
    """Activation.html: LEAKY_RELU keeps x >= 0 and scales negatives by alpha; CLIP = max(alpha, min(beta, x))."""
    c = Case()
    x = c.input("x", (4,))
    leaky = c.nw.add_activation(x, c.trt.ActivationType.LEAKY_RELU)
    leaky.alpha = 0.5
    clip = c.nw.add_activation(x, c.trt.ActivationType.CLIP)
    clip.alpha, clip.beta = -1.0, 1.0
    c.output(leaky, "leaky")
    c.output(clip, "clip")
    out = c.run({"x": np.array([-4, -0.5, 0, 3], np.float32)}, device)
    assert out["leaky"].tolist() == [-2.0, -0.25, 0.0, 3.0]
    assert out["clip"].tolist() == [-1.0, -0.5, 0.0, 1.0]


ELEMENTWISE = {
    "SUM": torch.add,
    "PROD": torch.mul,
    "MAX": torch.maximum,
    "MIN": torch.minimum,
    "SUB": torch.sub,
    "DIV": torch.div,
    "POW": torch.pow,
    "FLOOR_DIV": lambda a, b: torch.floor(a / b),
}


@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
def test_elementwise_float_broadcast(device, op):
    """ElementWise.html: equal ranks, dims equal or 1 broadcast."""
    c = Case()
    a = c.input("a", (-1, 3, 1, 5))
    b = c.input("b", (1, 1, 4, 5))
    c.output(c.nw.add_elementwise(a, b, getattr(c.trt.ElementWiseOperation, op)))
    low = 0.5 if op == "POW" else -2.0
    av, bv = rand(2, 3, 1, 5, low=low), rand(1, 1, 4, 5, low=0.5 if op in ("DIV", "FLOOR_DIV", "POW") else -2)
    y = c.run({"a": av, "b": bv}, device)["y"]
    assert_close(y, ELEMENTWISE[op](t(av, device), t(bv, device)))


@pytest.mark.parametrize("op", ["AND", "OR", "XOR", "EQUAL", "GREATER", "LESS"])
def test_elementwise_logic_and_comparison(device, op):
    c = Case()
    if op in ("AND", "OR", "XOR"):
        a, b = c.input("a", (2, 3), np.bool_), c.input("b", (1, 3), np.bool_)
        av = np.array([[True, False, True], [False, False, True]])
        bv = np.array([[True, True, False]])
        fn = {"AND": np.logical_and, "OR": np.logical_or, "XOR": np.logical_xor}[op]
    else:
        a, b = c.input("a", (2, 3), np.int32), c.input("b", (1, 3), np.int32)
        av = np.array([[1, 5, -2], [3, 3, 3]], np.int32)
        bv = np.array([[1, 4, 0]], np.int32)
        fn = {"EQUAL": np.equal, "GREATER": np.greater, "LESS": np.less}[op]
    c.output(c.nw.add_elementwise(a, b, getattr(c.trt.ElementWiseOperation, op)))
    y = c.run({"a": av, "b": bv}, device)["y"]
    assert y.dtype == torch.bool
    assert y.cpu().numpy().tolist() == fn(av, bv).tolist()


def test_elementwise_integer_division(device):
    """Integer DIV truncates toward zero (C++ semantics); FLOOR_DIV rounds toward -inf."""
    c = Case()
    a, b = c.input("a", (4,), np.int32), c.input("b", (4,), np.int32)
    c.output(c.nw.add_elementwise(a, b, c.trt.ElementWiseOperation.DIV), "div")
    c.output(c.nw.add_elementwise(a, b, c.trt.ElementWiseOperation.FLOOR_DIV), "floor_div")
    out = c.run({"a": np.array([7, -7, 7, -7], np.int32), "b": np.array([2, 2, -2, -2], np.int32)}, device)
    assert out["div"].tolist() == [3, -3, -3, 3]
    assert out["floor_div"].tolist() == [3, -4, -4, 3]


UNARY = {
    "EXP": (torch.exp, -2, 2),
    "LOG": (torch.log, 0.1, 3),
    "SQRT": (torch.sqrt, 0.0, 4),
    "RECIP": (torch.reciprocal, 0.5, 3),
    "ABS": (torch.abs, -2, 2),
    "NEG": (torch.neg, -2, 2),
    "SIN": (torch.sin, -3, 3),
    "COS": (torch.cos, -3, 3),
    "TAN": (torch.tan, -1, 1),
    "SINH": (torch.sinh, -2, 2),
    "COSH": (torch.cosh, -2, 2),
    "ASIN": (torch.asin, -0.9, 0.9),
    "ACOS": (torch.acos, -0.9, 0.9),
    "ATAN": (torch.atan, -3, 3),
    "ASINH": (torch.asinh, -3, 3),
    "ACOSH": (torch.acosh, 1.1, 4),
    "ATANH": (torch.atanh, -0.9, 0.9),
    "CEIL": (torch.ceil, -3, 3),
    "FLOOR": (torch.floor, -3, 3),
    "ERF": (torch.erf, -2, 2),
    "SIGN": (torch.sign, -2, 2),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_float(device, op):
    fn, low, high = UNARY[op]
    c = Case()
    x = c.input("x", (2, 7))
    c.output(c.nw.add_unary(x, getattr(c.trt.UnaryOperation, op)))
    xv = rand(2, 7, low=low, high=high)
    y = c.run({"x": xv}, device)["y"]
    assert_close(y, fn(t(xv, device)))


def test_unary_round_isinf_isnan_not(device):
    """Unary.html: ROUND rounds half to even; ISINF/ISNAN give bool; NOT negates bool."""
    c = Case()
    x = c.input("x", (6,))
    flag = c.input("flag", (2,), np.bool_)
    c.output(c.nw.add_unary(x, c.trt.UnaryOperation.ROUND), "round")
    c.output(c.nw.add_unary(x, c.trt.UnaryOperation.ISINF), "isinf")
    c.output(c.nw.add_unary(x, c.trt.UnaryOperation.ISNAN), "isnan")
    c.output(c.nw.add_unary(flag, c.trt.UnaryOperation.NOT), "not")
    xv = np.array([0.5, 1.5, 2.5, -0.5, np.inf, np.nan], np.float32)
    out = c.run({"x": xv, "flag": np.array([True, False])}, device)
    assert out["round"][:4].tolist() == [0.0, 2.0, 2.0, -0.0]
    assert out["isinf"].tolist() == [False] * 4 + [True, False]
    assert out["isnan"].tolist() == [False] * 5 + [True]
    assert out["not"].tolist() == [False, True]


@pytest.mark.parametrize("mode", ["UNIFORM", "CHANNEL", "ELEMENTWISE"])
def test_scale_modes(device, mode):
    """Scale.html: output = (input · scale + shift) ^ power with per-tensor/channel/element coefficients."""
    c = Case()
    x = c.input("x", (-1, 3, 2, 4))
    shape = {"UNIFORM": (1,), "CHANNEL": (3,), "ELEMENTWISE": (3, 2, 4)}[mode]
    shift, scale, power = rand(*shape), rand(*shape, low=0.5, high=1.5), rand(*shape, low=1, high=2).round()
    layer = c.nw.add_scale_nd(
        x, getattr(c.trt.ScaleMode, mode), c.weights(shift), c.weights(scale), c.weights(power), 1
    )
    c.output(layer)
    xv = rand(2, 3, 2, 4, low=0.1, high=2)
    y = c.run({"x": xv}, device)["y"]
    view = {"UNIFORM": (1, 1, 1, 1), "CHANNEL": (1, 3, 1, 1), "ELEMENTWISE": (1, 3, 2, 4)}[mode]
    sh, sc, pw = (t(v, device).reshape(view) for v in (shift, scale, power))
    assert_close(y, torch.pow(t(xv, device) * sc + sh, pw))


def test_scale_empty_weights_mean_identity_coefficients(device):
    c = Case()
    x = c.input("x", (1, 2, 3, 3))
    shift = np.array([1.0, -1.0], np.float32)
    layer = c.nw.add_scale_nd(x, c.trt.ScaleMode.CHANNEL, c.weights(shift), c.trt.Weights(), c.trt.Weights(), 1)
    c.output(layer)
    xv = rand(1, 2, 3, 3)
    y = c.run({"x": xv}, device)["y"]
    assert_close(y, t(xv, device) + t(shift, device).reshape(1, 2, 1, 1))


def test_parametric_relu(device):
    """PRelu.html: x if x >= 0 else slope·x, slope broadcast."""
    c = Case()
    x = c.input("x", (2, 3, 4))
    slope = rand(1, 3, 1)
    c.output(c.nw.add_parametric_relu(x, c.const(slope)))
    xv = rand(2, 3, 4)
    y = c.run({"x": xv}, device)["y"]
    assert_close(y, F.prelu(t(xv, device), t(slope.reshape(3), device)))


def test_select(device):
    c = Case()
    cond = c.input("cond", (2, 1), np.bool_)
    a, b = c.input("a", (2, 3)), c.input("b", (1, 3))
    c.output(c.nw.add_select(cond, a, b))
    cv = np.array([[True], [False]])
    av, bv = rand(2, 3), rand(1, 3)
    y = c.run({"cond": cv, "a": av, "b": bv}, device)["y"]
    assert_close(y, torch.where(t(cv, device), t(av, device), t(bv, device)))


def test_cast_float_int_bool_half(device):
    """Cast.html: float -> int truncates toward zero; -> bool is (x != 0); fp16 rounds to nearest."""
    c = Case()
    x = c.input("x", (5,))
    c.output(c.nw.add_cast(x, c.trt.int32), "i32")
    c.output(c.nw.add_cast(x, c.trt.bool), "b")
    c.output(c.nw.add_cast(x, c.trt.float16), "h")
    xv = np.array([-2.7, -0.2, 0.0, 1.9, 3.0001], np.float32)
    out = c.run({"x": xv}, device)
    assert out["i32"].dtype == torch.int32 and out["i32"].tolist() == [-2, 0, 0, 1, 3]
    assert out["b"].tolist() == [True, True, False, True, True]
    assert out["h"].dtype == torch.float16
    assert out["h"].tolist() == torch.tensor(xv).half().tolist()


def test_cast_docs_example(device):
    """Cast.html example: float32 [[1.2 2.3 3.4],[4.5 5.6 6.7],[7.8 8.9 9.1]] cast to int32 gives 1..9."""
    c = Case()
    x = c.input("x", (1, 1, 3, 3))
    c.output(c.nw.add_cast(x, c.trt.int32))
    xv = np.array([[[[1.2, 2.3, 3.4], [4.5, 5.6, 6.7], [7.8, 8.9, 9.1]]]], np.float32)
    y = c.run({"x": xv}, device)["y"]
    assert y.tolist() == [[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]]


def test_identity_is_a_copy(device):
    c = Case()
    x = c.input("x", (3, 2))
    c.output(c.nw.add_identity(x))
    xv = rand(3, 2)
    assert torch.equal(c.run({"x": xv}, device)["y"], t(xv, device))
