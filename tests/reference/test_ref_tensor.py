"""Conformance: Constant, Concatenation, Shuffle, Slice, Shape, Gather, Squeeze/Unsqueeze, Fill, OneHot.

Cases from docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/{Constant,Concatenation,Shuffle,Slice,
Shape,Gather,Squeeze,Unsqueeze,Fill,OneHot}.html.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refcase import DEVICES, Case, assert_close, rand, t

pytestmark = pytest.mark.parametrize("device", DEVICES)


def test_constant_float_and_int(device):
    c = Case()
    x = c.input("x", (2, 3))
    w = rand(2, 3)
    c.output(c.nw.add_elementwise(x, c.const(w), c.trt.ElementWiseOperation.SUM), "sum")
    c.output(c.const(np.arange(4, dtype=np.int32).reshape(2, 2)), "ints")
    xv = rand(2, 3)
    out = c.run({"x": xv}, device)
    assert_close(out["sum"], t(xv + w, device))
    assert out["ints"].dtype == torch.int32 and out["ints"].tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_concatenation(device, axis):
    c = Case()
    shapes = [[2, 3, 4, 5], [2, 3, 4, 5], [2, 3, 4, 5]]
    for i, s in enumerate(shapes):
        s[axis] = i + 1
    xs = [c.input(f"x{i}", s) for i, s in enumerate(shapes)]
    layer = c.nw.add_concatenation(xs)
    layer.axis = axis
    c.output(layer)
    feeds = {f"x{i}": rand(*s) for i, s in enumerate(shapes)}
    y = c.run(feeds, device)["y"]
    assert torch.equal(y, torch.cat([t(feeds[f"x{i}"], device) for i in range(3)], axis))


def test_shuffle_docs_example(device):
    """Shuffle.html: first transpose, reshape, second transpose on a (1, 2, 3) input."""
    c = Case()
    x = c.input("x", (1, 2, 3))
    layer = c.nw.add_shuffle(x)
    layer.first_transpose = (0, 2, 1)  # (1, 3, 2)
    layer.reshape_dims = (3, 2)
    layer.second_transpose = (1, 0)  # (2, 3)
    c.output(layer)
    xv = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    y = c.run({"x": xv}, device)["y"]
    # [[0 1 2],[3 4 5]] -> transpose -> [[0 3],[1 4],[2 5]] -> (3, 2) -> transpose -> [[0 1 2],[3 4 5]]
    assert y.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_shuffle_placeholder_zero_and_minus_one(device):
    c = Case()
    x = c.input("x", (-1, 4, 3, 2))
    layer = c.nw.add_shuffle(x)
    layer.first_transpose = (0, 2, 3, 1)
    layer.reshape_dims = (0, -1, 4)  # 0 copies the batch dim, -1 is inferred
    c.output(layer)
    xv = rand(3, 4, 3, 2)
    y = c.run({"x": xv}, device)["y"]
    assert torch.equal(y, t(xv, device).permute(0, 2, 3, 1).reshape(3, -1, 4))


def test_shuffle_zero_is_literal_when_not_placeholder(device):
    """zero_is_placeholder=False: a 0 in the reshape is an empty dimension."""
    c = Case()
    x = c.input("x", (0, 5))
    layer = c.nw.add_shuffle(x)
    layer.zero_is_placeholder = False
    layer.reshape_dims = (5, 0)
    c.output(layer)
    y = c.run({"x": np.zeros((0, 5), np.float32)}, device, build=False)["y"]  # the builder rejects empty outputs
    assert tuple(y.shape) == (5, 0)


def test_shuffle_dynamic_reshape_from_shape_tensor(device):
    """Reshape dims from input 1, computed from the input's shape: works for any batch."""
    c = Case()
    x = c.input("x", (-1, 3, 4))
    shape = c.nw.add_shape(x).get_output(0)  # [N, 3, 4] int64
    n = c.nw.add_slice(shape, (0,), (1,), (1,)).get_output(0)
    rest = c.const(np.array([12], np.int64))
    dims = c.nw.add_concatenation([n, rest]).get_output(0)
    layer = c.nw.add_shuffle(x)
    layer.set_input(1, dims)
    c.output(layer)
    for batch in (1, 3):
        xv = rand(batch, 3, 4)
        y = c.run({"x": xv}, device)["y"]
        assert torch.equal(y, t(xv, device).reshape(batch, 12))


def test_slice_docs_example(device):
    """Slice.html example: start (0, 0), size (2, 2), stride (1, 1) of [[0 1 2],[3 4 5],[6 7 8]]."""
    c = Case()
    x = c.input("x", (3, 3))
    c.output(c.nw.add_slice(x, (0, 0), (2, 2), (1, 1)))
    y = c.run({"x": np.arange(9, dtype=np.float32).reshape(3, 3)}, device)["y"]
    assert y.tolist() == [[0, 1], [3, 4]]


# Slice.html: x_i = y_i·stride_i + start_i on a length-4 axis [0 1 2 3], start -2, stride 3, size 4:
# x = -2, 1, 4, 7
SLICE_MODES = {
    "WRAP": [2, 1, 0, 3],  # mod(x, 4)
    "CLAMP": [0, 1, 3, 3],
    "FILL": [9, 1, 9, 9],  # fill value 9 outside [0, 4)
    "REFLECT": [2, 1, 2, 1],  # c = |x| mod 6 -> 2, 1, 4, 1; c >= 4 -> 6 - c
}


@pytest.mark.parametrize("mode", sorted(SLICE_MODES))
def test_slice_modes(device, mode):
    c = Case()
    x = c.input("x", (4,))
    layer = c.nw.add_slice(x, (-2,), (4,), (3,))
    layer.mode = getattr(c.trt.SampleMode, mode)
    if mode == "FILL":
        layer.set_input(4, c.const(np.array(9.0, np.float32)))
    c.output(layer)
    y = c.run({"x": np.arange(4, dtype=np.float32)}, device)["y"]
    assert y.tolist() == SLICE_MODES[mode]


def test_slice_negative_stride_matches_flip(device):
    c = Case()
    x = c.input("x", (2, 5, 6))
    c.output(c.nw.add_slice(x, (0, 4, 5), (2, 3, 3), (1, -2, -1)))
    xv = rand(2, 5, 6)
    y = c.run({"x": xv}, device)["y"]
    assert torch.equal(y, t(xv, device)[:, [4, 2, 0]][:, :, [5, 4, 3]])


def test_slice_strict_bounds_violation_is_an_error(device):
    from trtx.reference import ReferenceExecutionError, execute

    c = Case()
    x = c.input("x", (4,))
    sl = c.nw.add_slice(x, (2,), (2,), (1,))
    sl.set_input(1, c.input("start", (1,), np.int32))
    c.output(sl)
    with pytest.raises(ReferenceExecutionError, match="STRICT_BOUNDS"):
        execute(c.nw, {"x": rand(4), "start": np.array([3], np.int32)}, device=device)


def test_slice_dynamic_start_size_from_shape_tensor(device):
    """The YOLO-style 'drop the last channel' slice: size from the dynamic input shape."""
    c = Case()
    x = c.input("x", (-1, 6, 4))
    shape = c.nw.add_shape(x).get_output(0)
    minus = c.const(np.array([0, 1, 0], np.int64))
    size = c.nw.add_elementwise(shape, minus, c.trt.ElementWiseOperation.SUB).get_output(0)
    sl = c.nw.add_slice(x, (0, 1, 0), (1, 1, 1), (1, 1, 1))
    sl.set_input(2, size)
    c.output(sl)
    for batch in (2, 4):
        xv = rand(batch, 6, 4)
        y = c.run({"x": xv}, device)["y"]
        assert torch.equal(y, t(xv, device)[:, 1:])


def test_slice_axes(device):
    c = Case()
    x = c.input("x", (3, 4, 5))
    sl = c.nw.add_slice(x, (1,), (2,), (2,))
    sl.axes = (2,)
    c.output(sl)
    xv = rand(3, 4, 5)
    y = c.run({"x": xv}, device)["y"]
    assert torch.equal(y, t(xv, device)[:, :, 1:5:2])


def test_shape_with_dynamic_batch(device):
    c = Case()
    x = c.input("x", (-1, 3, 2))
    c.output(c.nw.add_shape(x))
    for batch in (1, 4):
        y = c.run({"x": rand(batch, 3, 2)}, device)["y"]
        assert y.dtype == torch.int64 and y.tolist() == [batch, 3, 2]


def test_gather_docs_example(device):
    """Gather.html example: data (2, 1, 5), indices (1, 3) = [[2, 1, 1]], axis 2."""
    c = Case()
    x = c.input("x", (2, 1, 5))
    idx = c.input("idx", (1, 3), np.int32)
    c.output(c.nw.add_gather(x, idx, 2))
    xv = np.array([[[-3.0, -2.0, -1.0, 10.0, -25.0]], [[0.0, 1.0, 2.0, -2.0, -1.0]]], np.float32)
    y = c.run({"x": xv, "idx": np.array([[2, 1, 1]], np.int32)}, device)["y"]
    assert y.tolist() == [[[[-1.0, -2.0, -2.0]]], [[[2.0, 1.0, 1.0]]]]


def test_gather_default_elementwise_dim(device):
    c = Case()
    x = c.input("x", (3, 4, 5))
    idx = c.input("idx", (3, 2), np.int32)
    g = c.nw.add_gather(x, idx, 1)
    g.num_elementwise_dims = 1
    c.output(g)
    xv, iv = rand(3, 4, 5), np.array([[0, 3], [1, 1], [2, 0]], np.int32)
    y = c.run({"x": xv, "idx": iv}, device)["y"]
    expected = torch.stack([t(xv, device)[b, t(iv[b], device).long()] for b in range(3)])
    assert torch.equal(y, expected)


def test_gather_element_and_nd(device):
    """ELEMENT is ONNX GatherElements; ND is ONNX GatherND (Gather.html)."""
    c = Case()
    x = c.input("x", (3, 4))
    ie = c.input("ie", (3, 2), np.int32)
    ind = c.input("ind", (2, 2), np.int32)
    ge = c.nw.add_gather_v2(x, ie, c.trt.GatherMode.ELEMENT)
    ge.axis = 1
    gn = c.nw.add_gather_v2(x, ind, c.trt.GatherMode.ND)
    c.output(ge, "element")
    c.output(gn, "nd")
    xv = rand(3, 4)
    iev = np.array([[0, 3], [2, 2], [1, 0]], np.int32)
    indv = np.array([[0, 1], [2, 3]], np.int32)
    out = c.run({"x": xv, "ie": iev, "ind": indv}, device)
    assert torch.equal(out["element"], torch.gather(t(xv, device), 1, t(iev, device).long()))
    assert out["nd"].tolist() == [xv[0, 1].item(), xv[2, 3].item()]


def test_squeeze_unsqueeze(device):
    c = Case()
    x = c.input("x", (2, 1, 3, 1))
    sq = c.nw.add_squeeze(x, c.const(np.array([1, -1], np.int64)))
    un = c.nw.add_unsqueeze(sq.get_output(0), c.const(np.array([0, 3], np.int64)))
    c.output(sq, "sq")
    c.output(un, "un")
    xv = rand(2, 1, 3, 1)
    out = c.run({"x": xv}, device)
    assert tuple(out["sq"].shape) == (2, 3) and tuple(out["un"].shape) == (1, 2, 3, 1)
    assert torch.equal(out["un"].reshape(-1), t(xv, device).reshape(-1))


def test_fill_linspace(device):
    """Fill.html LINSPACE: output[i, j] = alpha + beta[0]·i + beta[1]·j (alpha/beta as inputs 1, 2)."""
    c = Case()
    x = c.input("x", (2, 3))
    fill = c.nw.add_fill((2, 3), c.trt.FillOperation.LINSPACE, c.trt.float32)
    fill.set_input(1, c.const(np.array(1.0, np.float32)))
    fill.set_input(2, c.const(np.array([10.0, 2.0], np.float32)))
    c.output(c.nw.add_elementwise(x, fill.get_output(0), c.trt.ElementWiseOperation.SUM))
    y = c.run({"x": np.zeros((2, 3), np.float32)}, device)["y"]
    assert y.tolist() == [[1, 3, 5], [11, 13, 15]]


def test_fill_linspace_1d_attributes(device):
    c = Case()
    x = c.input("x", (4,))
    fill = c.nw.add_fill((4,), c.trt.FillOperation.LINSPACE, c.trt.float32)
    fill.alpha, fill.beta = -1.0, 0.5
    c.output(c.nw.add_elementwise(x, fill.get_output(0), c.trt.ElementWiseOperation.SUM))
    y = c.run({"x": np.zeros(4, np.float32)}, device)["y"]
    assert y.tolist() == [-1.0, -0.5, 0.0, 0.5]


def test_one_hot(device):
    """OneHot.html: depth classes on the given axis, negative indices count from depth, others all off."""
    c = Case()
    idx = c.input("idx", (4,), np.int32)
    values = c.const(np.array([0.0, 5.0], np.float32))
    depth = c.const(np.array(3, np.int32))
    c.output(c.nw.add_one_hot(idx, values, depth, -1), "last")
    c.output(c.nw.add_one_hot(idx, values, depth, 0), "first")
    out = c.run({"idx": np.array([0, 2, -1, 1], np.int32)}, device)
    expected = [[5, 0, 0], [0, 0, 5], [0, 0, 5], [0, 5, 0]]
    assert out["last"].tolist() == expected
    assert out["first"].tolist() == np.array(expected).T.tolist()
