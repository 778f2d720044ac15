"""trtx.nms: the exact CPU NMS against torchvision.ops.nms and YOLOv5 v7.0's non_max_suppression."""

from __future__ import annotations

import numpy as np
import pytest

from trtx import nms


def _boxes(rng: np.random.Generator, n: int, extent: float = 640.0, size: float = 120.0) -> np.ndarray:
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(2, size, (n, 2))
    return np.concatenate([xy - wh / 2, xy + wh / 2], 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_matches_torchvision_nms(seed):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, 800)
    scores = rng.random(800).astype(np.float32)
    for thr in (0.3, 0.45, 0.7):
        expected = tv.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()
        np.testing.assert_array_equal(nms.nms(boxes, scores, thr), expected)


def test_class_aware_never_suppresses_across_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms.nms(boxes, scores, 0.5).tolist() == [0]
    assert nms.nms(boxes, scores, 0.5, classes=np.array([0, 1, 0])).tolist() == [0, 1]
    assert nms.nms(boxes, scores, 0.5, classes=np.array([0, 1, 0]), class_offset=nms.MAX_WH).tolist() == [0, 1]


def test_ties_break_by_index_and_threshold_is_strict():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    scores = np.array([0.5, 0.5, 0.5, 0.9], np.float32)
    assert nms.nms(boxes, scores, 0.5).tolist() == [3, 0]
    # IoU exactly 0.5 is not "> 0.5": both stay
    half = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    assert nms.nms(half, np.array([0.9, 0.8], np.float32), 0.5).tolist() == [0, 1]
    assert nms.nms(half, np.array([0.9, 0.8], np.float32), 0.49).tolist() == [0]


def test_empty_and_shape_errors():
    assert nms.nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        nms.nms(np.zeros((3, 5)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="3 boxes but 2 scores"):
        nms.nms(np.zeros((3, 4)), np.zeros(2), 0.5)


@pytest.mark.parametrize("seed", range(4))
def test_matches_yolov5_non_max_suppression(seed):
    """Decoded predictions [B, N, 5 + nc] through YOLOv5's NMS and through ours give the same detections.

    Without tied scores: torch's argsort orders ties arbitrarily for large inputs, ours by index."""
    torch = pytest.importorskip("torch")
    general = pytest.importorskip("yolov5.utils.general")
    rng = np.random.default_rng(100 + seed)
    b, n, nc = 2, 3000, 7
    xywh = np.concatenate([rng.uniform(0, 640, (b, n, 2)), rng.uniform(4, 200, (b, n, 2))], 2)
    obj = rng.random((b, n, 1)) ** 0.5
    cls = rng.random((b, n, nc))
    pred = np.concatenate([xywh, obj, cls], 2).astype(np.float32)
    expected = general.non_max_suppression(torch.from_numpy(pred.copy()), 0.3, 0.45, max_det=100)

    conf = pred[..., 5:] * pred[..., 4:5]
    scores, classes = conf.max(2), conf.argmax(2)
    xy, wh = pred[..., :2], pred[..., 2:4]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 2)
    kept = nms.batched_non_max_suppression(boxes, scores, classes, conf_threshold=0.3, iou_threshold=0.45, max_det=100)
    for i in range(b):
        ours = np.concatenate([boxes[i][kept[i]], scores[i][kept[i], None], classes[i][kept[i], None]], 1)
        assert len(ours) > 10
        np.testing.assert_array_equal(ours, expected[i].numpy())
