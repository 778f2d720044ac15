"""Conformance: NMS, Scatter, NonZero, ReverseSequence, Assertion.

docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/{NMS,Scatter,NonZero,ReverseSequence,
Assertion}.html.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refcase import DEVICES, Case, rand, t

from trtx.reference import ReferenceExecutionError
from trtx_base import backend

pytestmark = pytest.mark.parametrize("device", DEVICES)

#: TensorRT-RTX 1.7 adds NMS layers but its builder cannot build them ("[NMS] has no runners")
NMS_BUILDS = backend.get().has_nms_runner


def _nms_case(num_boxes: int, num_classes: int, max_per_class: int, iou: float, score: float):
    c = Case()
    boxes = c.input("boxes", (1, num_boxes, 4))
    scores = c.input("scores", (1, num_boxes, num_classes))
    layer = c.nw.add_nms(boxes, scores, c.const(np.array(max_per_class, np.int32)))
    layer.set_input(3, c.const(np.array(iou, np.float32)))
    layer.set_input(4, c.const(np.array(score, np.float32)))
    c.output(layer.get_output(0), "selected")
    c.output(layer.get_output(1), "count")
    return c, layer


def test_nms_hand_case(device):
    """NMS.html: decreasing score, IoU <= threshold with kept boxes of the same class, classes independent."""
    c, _ = _nms_case(4, 2, 10, 0.5, 0.1)
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [10, 10, 0, 0]]], np.float32)
    # class 0: box 0 (0.9) keeps; box 1 (0.8, IoU 0.68) suppressed; box 2 (0.7) keeps; box 3 (0.05) below threshold
    # class 1: box 1 (0.95) keeps; box 3 (0.6, same square as box 0, IoU with box 1 = 0.68) suppressed
    scores = np.array([[[0.9, 0.0], [0.8, 0.95], [0.7, 0.0], [0.05, 0.6]]], np.float32)
    out = c.run({"boxes": boxes, "scores": scores}, device, build=NMS_BUILDS)
    assert out["selected"].tolist() == [[0, 1, 1], [0, 0, 0], [0, 0, 2]]
    assert out["count"].item() == 3 and out["selected"].dtype == torch.int32


def test_nms_matches_torchvision_per_class(device):
    torchvision = pytest.importorskip("torchvision")
    c, _ = _nms_case(40, 3, 5, 0.45, 0.2)
    xy = rand(1, 40, 2, low=0, high=50)
    wh = rand(1, 40, 2, low=5, high=20)
    boxes = np.concatenate([xy, xy + wh], -1)
    scores = rand(1, 40, 3, low=0, high=1)
    out = c.run({"boxes": boxes, "scores": scores}, device, build=NMS_BUILDS)
    selected = out["selected"].cpu().numpy()
    for cls in range(3):
        keep = scores[0, :, cls] > 0.2
        idx = np.nonzero(keep)[0]
        kept = torchvision.ops.nms(t(boxes[0, idx]), t(scores[0, idx, cls]), 0.45)[:5]
        assert selected[selected[:, 1] == cls, 2].tolist() == idx[kept.numpy()].tolist()


def test_scatter_element_and_nd(device):
    """Scatter.html: ELEMENT is ONNX ScatterElements, ND is ONNX ScatterND."""
    c = Case()
    data = c.input("data", (3, 4))
    ie, ue = c.input("ie", (2, 4), np.int32), c.input("ue", (2, 4))
    ind, und = c.input("ind", (2, 1), np.int32), c.input("und", (2, 4))
    se = c.nw.add_scatter(data, ie, ue, c.trt.ScatterMode.ELEMENT)
    se.axis = 0
    sn = c.nw.add_scatter(data, ind, und, c.trt.ScatterMode.ND)
    c.output(se, "element")
    c.output(sn, "nd")
    dv, uev, undv = rand(3, 4), rand(2, 4), rand(2, 4)
    iev = np.array([[0, 2, 1, 0], [2, 0, 0, 1]], np.int32)
    out = c.run({"data": dv, "ie": iev, "ue": uev, "ind": np.array([[2], [0]], np.int32), "und": undv}, device)
    assert torch.equal(out["element"], t(dv, device).scatter(0, t(iev, device).long(), t(uev, device)))
    expected = dv.copy()
    expected[2], expected[0] = undv[0], undv[1]
    assert torch.equal(out["nd"], t(expected, device))


def test_non_zero(device):
    c = Case()
    x = c.input("x", (2, 3))
    c.output(c.nw.add_non_zero(x))
    # TensorRT-RTX 1.7's builder has no NonZero runner (like NMS); full TensorRT builds it
    feeds = {"x": np.array([[0, 1, 0], [2, 0, 3]], np.float32)}
    y = c.run(feeds, device, build=not backend.get().is_rtx)["y"]
    assert y.tolist() == [[0, 1, 1], [1, 0, 2]]


def test_reverse_sequence(device):
    c = Case()
    x = c.input("x", (3, 4))  # batch axis 1, sequence axis 0 (the defaults)
    c.output(c.nw.add_reverse_sequence(x, c.const(np.array([1, 2, 3, 0], np.int32))))
    xv = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = c.run({"x": xv}, device)["y"]
    assert y.tolist() == [[0, 5, 10, 3], [4, 1, 6, 7], [8, 9, 2, 11]]


def test_assertion_fails_the_run(device):
    c = Case()
    x = c.input("x", (-1, 3))
    shape = c.nw.add_shape(x).get_output(0)
    batch = c.nw.add_slice(shape, (0,), (1,), (1,)).get_output(0)
    small = c.nw.add_elementwise(batch, c.const(np.array([3], np.int64)), c.trt.ElementWiseOperation.LESS)
    check = c.nw.add_assertion(small.get_output(0), "batch must be below 3")
    check.name = "batch_check"
    c.output(c.nw.add_identity(x))
    c.run({"x": rand(2, 3)}, device)
    with pytest.raises(ReferenceExecutionError, match="batch_check.*batch must be below 3"):
        c.run({"x": rand(3, 3)}, device, build=False)
