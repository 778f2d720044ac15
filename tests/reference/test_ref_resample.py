"""Conformance: Resize and GridSample.

Resize.html (docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Resize.html) defines
ALIGN_CORNERS x_o = x_r·(n-1)/(m-1), ASYMMETRIC x_o = x_r·n/m, HALF_PIXEL x_o = (x_r + 0.5)·n/m - 0.5,
nearest rounding HALF_UP/HALF_DOWN/FLOOR/CEIL and the single-pixel selector FORMULA/UPPER.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from refcase import DEVICES, Case, assert_close, rand, t

pytestmark = pytest.mark.parametrize("device", DEVICES)


def _resize(c: Case, x, mode="NEAREST", transform="ASYMMETRIC", rounding="FLOOR", **attrs):
    layer = c.nw.add_resize(x)
    layer.resize_mode = getattr(c.trt.InterpolationMode, mode)
    layer.coordinate_transformation = getattr(c.trt.ResizeCoordinateTransformation, transform)
    layer.nearest_rounding = getattr(c.trt.ResizeRoundMode, rounding)
    for k, v in attrs.items():
        setattr(layer, k, v)
    return layer


def test_nearest_upsample_hand_case(device):
    """Default resize (NEAREST, ASYMMETRIC, FLOOR) doubling [[0 1],[2 3]]."""
    c = Case()
    x = c.input("x", (1, 1, 2, 2))
    c.output(_resize(c, x, scales=(1, 1, 2, 2)))
    y = c.run({"x": np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)}, device)["y"]
    assert y[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


# ALIGN_CORNERS, n=3 -> m=5: x_o = 0, 0.5, 1, 1.5, 2 — every rounding mode differs on the ties
ROUNDING = {
    "HALF_UP": [10, 20, 20, 30, 30],
    "HALF_DOWN": [10, 10, 20, 20, 30],
    "FLOOR": [10, 10, 20, 20, 30],
    "CEIL": [10, 20, 20, 30, 30],
}


@pytest.mark.parametrize("rounding", sorted(ROUNDING))
def test_nearest_rounding_modes(device, rounding):
    c = Case()
    x = c.input("x", (1, 3))
    c.output(_resize(c, x, transform="ALIGN_CORNERS", rounding=rounding, shape=(1, 5)))
    y = c.run({"x": np.array([[10, 20, 30]], np.float32)}, device)["y"]
    assert y[0].tolist() == ROUNDING[rounding]


@pytest.mark.parametrize("selector,expected", [("FORMULA", 20.0), ("UPPER", 10.0)])
def test_single_pixel_selector(device, selector, expected):
    """HALF_PIXEL, n=4 -> m=1: the formula gives x_o = 0.5·4 - 0.5 = 1.5 (FLOOR -> 1); UPPER picks pixel 0."""
    c = Case()
    x = c.input("x", (1, 4))
    layer = _resize(c, x, transform="HALF_PIXEL", shape=(1, 1))
    layer.selector_for_single_pixel = getattr(c.trt.ResizeSelector, selector)
    c.output(layer)
    y = c.run({"x": np.array([[10, 20, 30, 40]], np.float32)}, device)["y"]
    assert y.tolist() == [[expected]]


@pytest.mark.parametrize(
    "mode,transform,torch_mode,align",
    [
        ("NEAREST", "ASYMMETRIC", "nearest", None),
        ("LINEAR", "HALF_PIXEL", "bilinear", False),
        ("LINEAR", "ALIGN_CORNERS", "bilinear", True),
        ("CUBIC", "HALF_PIXEL", "bicubic", False),
        ("CUBIC", "ALIGN_CORNERS", "bicubic", True),
    ],
)
@pytest.mark.parametrize("out_hw", [(11, 7), (3, 4)])  # up and down
def test_resize_matches_torch(device, mode, transform, torch_mode, align, out_hw):
    c = Case()
    x = c.input("x", (2, 3, 6, 5))
    c.output(_resize(c, x, mode=mode, transform=transform, shape=(2, 3) + out_hw, cubic_coeff=-0.75))
    xv = rand(2, 3, 6, 5)
    y = c.run({"x": xv}, device)["y"]
    expected = F.interpolate(t(xv), size=out_hw, mode=torch_mode, align_corners=align)
    assert_close(y, expected)


def test_nearest_half_pixel_half_up_is_torch_nearest_exact(device):
    c = Case()
    x = c.input("x", (1, 2, 7, 5))
    c.output(_resize(c, x, transform="HALF_PIXEL", rounding="HALF_UP", shape=(1, 2, 3, 12)))
    xv = rand(1, 2, 7, 5)
    y = c.run({"x": xv}, device)["y"]
    assert torch.equal(y, F.interpolate(t(xv), size=(3, 12), mode="nearest-exact").to(device))


def test_cubic_exclude_outside_matches_onnxruntime(device):
    """exclude_outside zeroes the weights of taps outside the input and renormalizes (as ONNX Resize)."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    helper, TensorProto = onnx.helper, onnx.TensorProto

    c = Case()
    x = c.input("x", (1, 1, 5, 6))
    c.output(
        _resize(c, x, mode="CUBIC", transform="HALF_PIXEL", shape=(1, 1, 9, 4), cubic_coeff=-0.5, exclude_outside=True)
    )
    xv = rand(1, 1, 5, 6)
    y = c.run({"x": xv}, device)["y"]
    node = helper.make_node(
        "Resize",
        ["x", "", "", "sizes"],
        ["y"],
        mode="cubic",
        coordinate_transformation_mode="half_pixel",
        cubic_coeff_a=-0.5,
        exclude_outside=1,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("sizes", TensorProto.INT64, [4], [1, 1, 9, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"x": xv})[0]
    assert_close(y, t(expected, device))


def test_resize_scales_with_dynamic_batch(device):
    """Scales: each output dim is floor(input dim · scale), for whatever batch arrives."""
    c = Case()
    x = c.input("x", (-1, 2, 3, 4))
    c.output(_resize(c, x, mode="LINEAR", transform="HALF_PIXEL", scales=(1, 1, 2.5, 2)))
    for batch in (1, 3):
        xv = rand(batch, 2, 3, 4)
        y = c.run({"x": xv}, device)["y"]
        assert tuple(y.shape) == (batch, 2, 7, 8)
        assert_close(y, F.interpolate(t(xv), size=(7, 8), mode="bilinear", align_corners=False))


def test_resize_from_shape_tensor(device):
    """Output size as input 1: the input's shape times [1, 1, 2, 2], computed at run time."""
    c = Case()
    x = c.input("x", (-1, 2, 3, 4))
    shape = c.nw.add_shape(x).get_output(0)
    size = c.nw.add_elementwise(shape, c.const(np.array([1, 1, 2, 2], np.int64)), c.trt.ElementWiseOperation.PROD)
    layer = _resize(c, x)
    layer.set_input(1, size.get_output(0))
    c.output(layer)
    xv = rand(2, 2, 3, 4)
    y = c.run({"x": xv}, device)["y"]
    assert torch.equal(y, F.interpolate(t(xv), scale_factor=2, mode="nearest").to(device))


# GridSample.html: grid values in [-1, 1] address the input; align_corners puts -1/1 on the corner pixel
# centres, otherwise on the outer edges. On [[1 2],[3 4]]:
GRID_CASES = [
    ("LINEAR", "FILL", False, (0.0, 0.0), 2.5),  # the centre averages all four pixels
    ("LINEAR", "FILL", True, (-1.0, -1.0), 1.0),  # the top-left pixel centre
    ("LINEAR", "FILL", False, (-1.0, -1.0), 0.25),  # pixel coordinate (-0.5, -0.5): 1/4 of pixel 1, rest zeros
    ("LINEAR", "CLAMP", False, (-1.0, -1.0), 1.0),  # clamped to the border pixel
    ("NEAREST", "FILL", True, (0.6, -0.6), 2.0),  # pixel coordinate (0.8, 0.2): row 0, column 1
]


@pytest.mark.parametrize("interp,sample,align,point,expected", GRID_CASES)
def test_grid_sample_hand_cases(device, interp, sample, align, point, expected):
    c = Case()
    x, grid = c.input("x", (1, 1, 2, 2)), c.input("grid", (1, 1, 1, 2))
    layer = c.nw.add_grid_sample(x, grid)
    layer.interpolation_mode = getattr(c.trt.InterpolationMode, interp)
    layer.sample_mode = getattr(c.trt.SampleMode, sample)
    layer.align_corners = align
    c.output(layer)
    feeds = {"x": np.array([[[[1, 2], [3, 4]]]], np.float32), "grid": np.array(point, np.float32).reshape(1, 1, 1, 2)}
    y = c.run(feeds, device)["y"]
    assert y.reshape(-1).tolist() == pytest.approx([expected], abs=1e-6)


@pytest.mark.parametrize(
    "interp,torch_mode,sample,padding,align",
    [
        ("LINEAR", "bilinear", "FILL", "zeros", False),
        ("NEAREST", "nearest", "CLAMP", "border", True),
        ("CUBIC", "bicubic", "REFLECT", "reflection", False),
    ],
)
def test_grid_sample(device, interp, torch_mode, sample, padding, align):
    c = Case()
    x, grid = c.input("x", (2, 3, 5, 6)), c.input("grid", (2, 4, 7, 2))
    layer = c.nw.add_grid_sample(x, grid)
    layer.interpolation_mode = getattr(c.trt.InterpolationMode, interp)
    layer.sample_mode = getattr(c.trt.SampleMode, sample)
    layer.align_corners = align
    c.output(layer)
    xv, gv = rand(2, 3, 5, 6), rand(2, 4, 7, 2, low=-1.3, high=1.3)
    if interp == "NEAREST":  # keep sample points off the rounding ties
        gv = np.round(gv * 20) / 20 + 0.013
    y = c.run({"x": xv, "grid": gv}, device)["y"]
    expected = F.grid_sample(t(xv), t(gv), mode=torch_mode, padding_mode=padding, align_corners=align)
    assert_close(y, expected)
