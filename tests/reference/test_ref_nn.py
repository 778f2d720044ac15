"""Conformance: Convolution, Deconvolution, Pooling, Padding, LRN.

Hand cases follow the padding-mode formulas of
docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Convolution.html, Deconvolution.html, Pooling.html;
cross-checks compare against torch.nn.functional on fresh random inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
from refcase import DEVICES, Case, assert_close, rand, t

pytestmark = pytest.mark.parametrize("device", DEVICES)


def _conv(c: Case, x, w, b, kernel, **attrs):
    layer = c.nw.add_convolution_nd(
        x, w.shape[0], kernel, c.weights(w), c.weights(b) if b is not None else c.trt.Weights()
    )
    for k, v in attrs.items():
        setattr(layer, k, v)
    return layer


# Convolution.html: O = floor((M - DK)/S) + 1 with M = I + B + A — a 1x1-channel hand case
def test_convolution_hand_case_explicit_padding(device):
    c = Case()
    x = c.input("x", (1, 1, 3, 3))
    w = np.ones((1, 1, 2, 2), np.float32)
    layer = _conv(c, x, w, np.array([10.0], np.float32), (2, 2), pre_padding=(1, 0), post_padding=(0, 1))
    c.output(layer)
    xv = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    y = c.run({"x": xv}, device)["y"]
    # padded rows: [0 0 0 | 0], [0 1 2 | 0], [3 4 5 | 0], [6 7 8 | 0]: output (3, 3) window sums + 10
    expected = np.array([[[[11, 13, 12], [18, 22, 17], [30, 34, 23]]]], np.float32)
    assert_close(y, t(expected))


@pytest.mark.parametrize(
    "nd,groups,stride,dilation,pad",
    [
        (2, 1, (1, 1), (1, 1), (1, 1)),
        (2, 2, (2, 1), (1, 2), (0, 2)),
        (2, 4, (2, 2), (1, 1), (1, 0)),  # depthwise
        (3, 1, (1, 2, 1), (1, 1, 2), (1, 0, 1)),
        (3, 2, (2, 2, 2), (2, 1, 1), (0, 1, 1)),
    ],
)
def test_convolution_matches_torch(device, nd, groups, stride, dilation, pad):
    c = Case()
    spatial = (9,) * nd
    x = c.input("x", (-1, 4) + spatial)
    kernel = (3,) * nd
    w, b = rand(6 if groups != 4 else 8, 4 // groups, *kernel), rand(6 if groups != 4 else 8)
    layer = _conv(c, x, w, b, kernel, stride_nd=stride, dilation_nd=dilation, padding_nd=pad, num_groups=groups)
    c.output(layer)
    xv = rand(3, 4, *spatial)
    y = c.run({"x": xv}, device)["y"]
    conv = {2: F.conv2d, 3: F.conv3d}[nd]
    expected = conv(t(xv), t(w), t(b), stride=stride, padding=pad, dilation=dilation, groups=groups)
    assert_close(y, expected.to(device))


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "EXPLICIT_ROUND_UP", "EXPLICIT_ROUND_DOWN"])
def test_convolution_padding_modes(device, mode):
    """SAME_*: O = ceil(I/S), P = floor((I-1)/S)·S + DK - I split B/A by mode; ROUND_UP: O = ceil((M-DK)/S)+1."""
    c = Case()
    x = c.input("x", (1, 2, 8, 7))
    w, b = rand(3, 2, 3, 2), rand(3)
    layer = _conv(c, x, w, b, (3, 2), stride_nd=(2, 3), pre_padding=(1, 0), post_padding=(0, 0))
    layer.padding_mode = getattr(c.trt.PaddingMode, mode)
    c.output(layer)
    xv = rand(1, 2, 8, 7)
    y = c.run({"x": xv}, device)["y"]
    if mode.startswith("SAME"):
        pads = []
        for size, k, s in ((8, 3, 2), (7, 2, 3)):
            p = (size - 1) // s * s + k - size
            pads.append((p // 2, p - p // 2) if mode == "SAME_UPPER" else (p - p // 2, p // 2))
        xp = F.pad(t(xv), (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
        expected = F.conv2d(xp, t(w), t(b), stride=(2, 3))
        assert tuple(y.shape[2:]) == (4, 3)  # ceil(8/2), ceil(7/3)
    elif mode == "EXPLICIT_ROUND_UP":
        # M = 9 rows, 7 cols: O = ceil((9-3)/2)+1 = 4, ceil((7-2)/3)+1 = 3 -> one extra zero column at the end
        xp = F.pad(t(xv), (0, 1, 1, 0))
        expected = F.conv2d(xp, t(w), t(b), stride=(2, 3))
        assert tuple(y.shape[2:]) == (4, 3)
    else:
        expected = F.conv2d(F.pad(t(xv), (0, 0, 1, 0)), t(w), t(b), stride=(2, 3))
        assert tuple(y.shape[2:]) == (4, 2)
    assert_close(y, expected.to(device))


def test_convolution_kernel_from_tensor(device):
    """Kernel given as input 1 (how explicit-quantization networks feed dequantized weights)."""
    c = Case()
    x = c.input("x", (1, 3, 6, 6))
    w, b = rand(2, 3, 3, 3), rand(2)
    layer = c.nw.add_convolution_nd(x, 2, (3, 3), c.trt.Weights(), c.weights(b))
    layer.set_input(1, c.const(w))
    c.output(layer)
    xv = rand(1, 3, 6, 6)
    y = c.run({"x": xv}, device)["y"]
    assert_close(y, F.conv2d(t(xv), t(w), t(b)).to(device))


@pytest.mark.parametrize(
    "nd,groups,stride,dilation",
    [
        (2, 1, (2, 2), (1, 1)),
        (2, 2, (3, 2), (1, 1)),
        (2, 1, (1, 1), (2, 1)),  # the builder refuses strided and dilated deconvolution together
        (3, 1, (2, 1, 2), (1, 1, 1)),
    ],
)
def test_deconvolution_matches_torch(device, nd, groups, stride, dilation):
    c = Case()
    x = c.input("x", (2, 4) + (5,) * nd)
    kernel = (3,) * nd
    w, b = rand(4, 6 // groups, *kernel), rand(6)
    layer = c.nw.add_deconvolution_nd(x, 6, kernel, c.weights(w), c.weights(b))
    layer.stride_nd, layer.dilation_nd, layer.num_groups = stride, dilation, groups
    layer.padding_nd = (1,) * nd
    c.output(layer)
    xv = rand(2, 4, *(5,) * nd)
    y = c.run({"x": xv}, device)["y"]
    conv_t = {2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    expected = conv_t(t(xv), t(w), t(b), stride=stride, padding=1, dilation=dilation, groups=groups)
    assert_close(y, expected.to(device))


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_deconvolution_same_padding(device, mode):
    """Deconvolution.html SAME: O = min(I·S, (I-1)·S + DK), P = max(DK - S, 0), B/A split by mode."""
    c = Case()
    x = c.input("x", (1, 2, 4, 4))
    w, b = rand(2, 3, 4, 4), rand(3)
    layer = c.nw.add_deconvolution_nd(x, 3, (4, 4), c.weights(w), c.weights(b))
    layer.stride_nd = (2, 2)
    layer.padding_mode = getattr(c.trt.PaddingMode, mode)
    c.output(layer)
    xv = rand(1, 2, 4, 4)
    y = c.run({"x": xv}, device)["y"]
    full = F.conv_transpose2d(t(xv), t(w), t(b), stride=2)  # (4-1)*2 + 4 = 10
    p = 4 - 2
    lo = p // 2 if mode == "SAME_UPPER" else p - p // 2
    assert tuple(y.shape[2:]) == (8, 8)
    assert_close(y, full[:, :, lo : lo + 8, lo : lo + 8].to(device))


def _pool(c, x, kind, window, **attrs):
    layer = c.nw.add_pooling_nd(x, getattr(c.trt.PoolingType, kind), window)
    for k, v in attrs.items():
        setattr(layer, k, v)
    return layer


# Pooling.html: with count-excludes-padding the divisor is the window's overlap with the unpadded input,
# otherwise its overlap with the padded input
@pytest.mark.parametrize("exclude,expected", [(True, [[1, 2], [3, 4]]), (False, [[0.25, 0.5], [0.75, 1.0]])])
def test_average_pooling_hand_case(device, exclude, expected):
    c = Case()
    x = c.input("x", (1, 1, 2, 2))
    c.output(
        _pool(c, x, "AVERAGE", (2, 2), padding_nd=(1, 1), stride_nd=(2, 2), average_count_excludes_padding=exclude)
    )
    # [[1, 2], [3, 4]] padded by 1 and cut in 2x2 windows: each window holds one input value and three pads
    y = c.run({"x": np.array([[[[1, 2], [3, 4]]]], np.float32)}, device)["y"]
    assert_close(y[0, 0], t(np.array(expected, np.float32)))


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE"])
@pytest.mark.parametrize("exclude", [True, False])
def test_pooling_matches_torch(device, kind, exclude):
    c = Case()
    x = c.input("x", (-1, 3, 9, 8))
    c.output(_pool(c, x, kind, (3, 2), stride_nd=(2, 2), padding_nd=(1, 1), average_count_excludes_padding=exclude))
    xv = rand(2, 3, 9, 8)
    y = c.run({"x": xv}, device)["y"]
    if kind == "MAX":
        expected = F.max_pool2d(t(xv), (3, 2), (2, 2), (1, 1))
    else:
        expected = F.avg_pool2d(t(xv), (3, 2), (2, 2), (1, 1), count_include_pad=not exclude)
    assert_close(y, expected.to(device))


def test_pooling_3d_and_round_up(device):
    c = Case()
    x = c.input("x", (1, 2, 5, 6, 7))
    layer = _pool(c, x, "MAX", (2, 2, 2), stride_nd=(2, 2, 2))
    layer.padding_mode = c.trt.PaddingMode.EXPLICIT_ROUND_UP
    c.output(layer)
    xv = rand(1, 2, 5, 6, 7)
    y = c.run({"x": xv}, device)["y"]
    assert_close(y, F.max_pool3d(t(xv), 2, 2, ceil_mode=True).to(device))


def test_average_pooling_round_up_matches_torch_ceil_mode(device):
    for exclude in (True, False):
        c = Case()
        x = c.input("x", (1, 2, 7, 7))
        layer = _pool(
            c, x, "AVERAGE", (3, 3), stride_nd=(2, 2), padding_nd=(1, 1), average_count_excludes_padding=exclude
        )
        layer.padding_mode = c.trt.PaddingMode.EXPLICIT_ROUND_UP
        c.output(layer)
        xv = rand(1, 2, 7, 7)
        y = c.run({"x": xv}, device)["y"]
        expected = F.avg_pool2d(t(xv), 3, 2, 1, ceil_mode=True, count_include_pad=not exclude)
        assert_close(y, expected.to(device))


def test_max_average_blend(device):
    """Pooling.html: MAX_AVERAGE_BLEND = (1 - blend_factor)·max + blend_factor·average."""
    c = Case()
    x = c.input("x", (1, 1, 4, 4))
    c.output(_pool(c, x, "MAX_AVERAGE_BLEND", (2, 2), stride_nd=(2, 2), blend_factor=0.25))
    xv = rand(1, 1, 4, 4)
    y = c.run({"x": xv}, device)["y"]
    expected = 0.75 * F.max_pool2d(t(xv), 2) + 0.25 * F.avg_pool2d(t(xv), 2)
    assert_close(y, expected.to(device))


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_pooling_same_padding(device, mode):
    c = Case()
    x = c.input("x", (1, 1, 5, 5))
    layer = _pool(c, x, "MAX", (2, 2), stride_nd=(1, 1))
    layer.padding_mode = getattr(c.trt.PaddingMode, mode)
    c.output(layer)
    xv = rand(1, 1, 5, 5)
    y = c.run({"x": xv}, device)["y"]
    # P = 1: SAME_UPPER pads after, SAME_LOWER before
    pads = (0, 1, 0, 1) if mode == "SAME_UPPER" else (1, 0, 1, 0)
    expected = F.max_pool2d(F.pad(t(xv), pads, value=-np.inf), 2, 1)
    assert_close(y, expected.to(device))


def test_padding_layer_pads_and_crops(device):
    """Padding.html: zero padding on the innermost dims; negative values crop."""
    c = Case()
    x = c.input("x", (1, 2, 4, 5))
    c.output(c.nw.add_padding_nd(x, (1, -1), (2, 0)))
    xv = rand(1, 2, 4, 5)
    y = c.run({"x": xv}, device)["y"]
    assert_close(y, F.pad(t(xv), (-1, 0, 1, 2)).to(device))


def test_lrn_matches_torch(device):
    """LRN: y = x / (k + alpha/window · Σ x²)^beta over a centred channel window (see docs/reference.md)."""
    c = Case()
    x = c.input("x", (2, 7, 3, 3))
    c.output(c.nw.add_lrn(x, 5, 0.001, 0.75, 2.0))
    xv = rand(2, 7, 3, 3)
    y = c.run({"x": xv}, device)["y"]
    assert_close(y, F.local_response_norm(t(xv), 5, alpha=0.001, beta=0.75, k=2.0).to(device))


def test_convolution_1d_as_tensorrt_expresses_it(device):
    """TensorRT has no 1-D kernels (add_convolution_nd returns None for one): Conv1d is unsqueeze -> (k, 1) conv."""
    c = Case()
    x = c.input("x", (-1, 3, 10))
    up = c.nw.add_shuffle(x)
    up.reshape_dims = (0, 0, 0, 1)
    w, b = rand(5, 3, 3), rand(5)
    conv = _conv(c, up.get_output(0), w.reshape(5, 3, 3, 1), b, (3, 1), stride_nd=(2, 1), padding_nd=(1, 0))
    down = c.nw.add_shuffle(conv.get_output(0))
    down.reshape_dims = (0, 0, -1)
    c.output(down)
    xv = rand(2, 3, 10)
    y = c.run({"x": xv}, device)["y"]
    assert_close(y, F.conv1d(t(xv), t(w), t(b), stride=2, padding=1).to(device))
