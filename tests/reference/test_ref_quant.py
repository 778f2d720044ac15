"""Conformance: Quantize / Dequantize (INT8, INT4, FP8; per-tensor, per-channel, blocked) and fp16 networks.

docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Quantize.html and Dequantize.html:
q = clamp(round_half_even(x / scale), -128, 127), y = q · scale.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from refcase import DEVICES, Case, assert_close, rand, t

pytestmark = pytest.mark.parametrize("device", DEVICES)


def _qdq(c: Case, x, scale, axis=None, qtype="int8", out_type="float32"):
    q = c.nw.add_quantize(x, scale, getattr(c.trt, qtype))
    dq = c.nw.add_dequantize(q.get_output(0), scale, getattr(c.trt, out_type))
    if axis is not None:
        q.axis = dq.axis = axis
    return q, dq


def test_quantize_hand_case_rounding_and_clamping(device):
    """x / 0.5 = 2.5 -> 2, 3.5 -> 4, -2.5 -> -2 (ties to even); 300 -> 127, -300 -> -128 (saturation)."""
    c = Case()
    x = c.input("x", (7,))
    q, dq = _qdq(c, x, c.const(np.array(0.5, np.float32)))
    c.output(q, "q")
    c.output(dq, "dq")
    xv = np.array([1.25, 1.75, -1.25, 150.0, -150.0, 0.2, -0.26], np.float32)
    out = c.run({"x": xv}, device)
    assert out["q"].dtype == torch.int8
    assert out["q"].tolist() == [2, 4, -2, 127, -128, 0, -1]
    assert out["dq"].tolist() == [1.0, 2.0, -1.0, 63.5, -64.0, 0.0, -0.5]


def test_quantize_matches_fake_quantize_per_tensor(device):
    c = Case()
    x = c.input("x", (-1, 3, 4, 4))
    _, dq = _qdq(c, x, c.const(np.array(0.02, np.float32)))
    c.output(dq)
    xv = rand(2, 3, 4, 4, low=-3, high=3)
    y = c.run({"x": xv}, device)["y"]
    expected = torch.fake_quantize_per_tensor_affine(t(xv, device), 0.02, 0, -128, 127)
    assert torch.equal(y, expected)


def test_quantize_per_channel_axis(device):
    c = Case()
    x = c.input("x", (2, 3, 5))
    scales = np.array([0.01, 0.1, 0.5], np.float32)
    _, dq = _qdq(c, x, c.const(scales), axis=1)
    c.output(dq)
    xv = rand(2, 3, 5, low=-20, high=20)
    y = c.run({"x": xv}, device)["y"]
    zero = torch.zeros(3, dtype=torch.int32, device=device)
    expected = torch.fake_quantize_per_channel_affine(t(xv, device), t(scales, device), zero, 1, -128, 127)
    assert torch.equal(y, expected)


@pytest.mark.parametrize("qtype,lo,hi", [("int8", -128, 127), ("int4", -8, 7)])
def test_block_quantized_weights(device, qtype, lo, hi):
    """Blocked scales: a [2, 4] scale on an [8, 4] weight covers blocks of 4 rows each."""
    c = Case()
    x = c.input("x", (2, 8))
    w = rand(8, 4)
    scale = rand(2, 4, low=0.01, high=0.3)
    _, dq = _qdq(c, c.const(w), c.const(scale), qtype=qtype)
    mm = c.nw.add_matrix_multiply(x, c.trt.MatrixOperation.NONE, dq.get_output(0), c.trt.MatrixOperation.NONE)
    c.output(mm)
    xv = rand(2, 8)
    y = c.run({"x": xv}, device)["y"]
    s = np.repeat(scale, 4, axis=0)
    wq = np.clip(np.round(w / s), lo, hi) * s
    assert_close(y, t(xv, device) @ t(wq, device))


def test_fp8_quantize_saturates_and_rounds_to_e4m3(device):
    c = Case()
    x = c.input("x", (5,))
    q, dq = _qdq(c, x, c.const(np.array(2.0, np.float32)), qtype="fp8")
    c.output(dq)
    xv = np.array([1000.0, -1000.0, 0.3, 2.0, -7.0], np.float32)
    y = c.run({"x": xv}, device)["y"]
    expected = (t(xv) / 2).clamp(-448, 448).to(torch.float8_e4m3fn).float() * 2
    assert y.cpu().tolist() == expected.tolist()
    assert y[0].item() == 896.0


def test_int8_qdq_convolution_network(device):
    """Explicit INT8: Q/DQ on activations and per-output-channel weights feeding a convolution (input 1)."""
    c = Case()
    x = c.input("x", (-1, 3, 8, 8))
    w, b = rand(4, 3, 3, 3), rand(4)
    x_scale = np.array(0.03, np.float32)
    w_scale = (np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32)
    _, xdq = _qdq(c, x, c.const(x_scale))
    _, wdq = _qdq(c, c.const(w), c.const(w_scale), axis=0)
    conv = c.nw.add_convolution_nd(xdq.get_output(0), 4, (3, 3), c.trt.Weights(), c.weights(b))
    conv.set_input(1, wdq.get_output(0))
    conv.padding_nd = (1, 1)
    c.output(conv)
    xv = rand(2, 3, 8, 8)
    y = c.run({"x": xv}, device)["y"]
    zero = torch.zeros(4, dtype=torch.int32)
    xq = torch.fake_quantize_per_tensor_affine(t(xv), float(x_scale), 0, -128, 127)
    wq = torch.fake_quantize_per_channel_affine(t(w), t(w_scale), zero, 0, -128, 127)
    assert_close(y, F.conv2d(xq, wq, t(b), padding=1))  # expected on the CPU: no TF32


def test_fp16_network_keeps_declared_dtypes(device):
    """Strongly typed fp16: every tensor holds fp16 values, each layer rounds its fp32 result once."""
    c = Case()
    x = c.input("x", (-1, 3, 6, 6))
    xh = c.nw.add_cast(x, c.trt.float16)
    xh.get_output(0).name = "x_half"
    w, b = rand(4, 3, 3, 3).astype(np.float16), rand(4).astype(np.float16)
    conv = c.nw.add_convolution_nd(xh.get_output(0), 4, (3, 3), c.weights(w), c.weights(b))
    conv.get_output(0).name = "conv"
    act = c.nw.add_activation(conv.get_output(0), c.trt.ActivationType.SIGMOID)
    act.get_output(0).name = "act"
    c.output(c.nw.add_cast(act.get_output(0), c.trt.float32))
    xv = rand(2, 3, 6, 6)
    out = c.run({"x": xv}, device, keep=["x_half", "conv", "act"])
    assert out["x_half"].dtype == out["conv"].dtype == out["act"].dtype == torch.float16
    assert out["y"].dtype == torch.float32
    xh_ref = t(xv).half()
    conv_ref = F.conv2d(xh_ref.float(), t(w).float(), t(b).float()).half()
    act_ref = torch.sigmoid(conv_ref.float()).half()
    assert torch.equal(out["x_half"], xh_ref.to(device))
    assert_close(out["conv"].float(), conv_ref.float(), rtol=1e-3, atol=1e-3)  # accumulation order may differ
    assert torch.equal(out["act"], torch.sigmoid(out["conv"].float()).half())
    assert_close(out["y"], act_ref.float(), rtol=2e-3, atol=2e-3)
