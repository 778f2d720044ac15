"""RetinaFace's anchors and box coder: biubug6's PriorBox for an input size and its decode / decode_landm, here
in numpy (the network decodes with TensorRT layers: netdefs/retinaface/decode.py)."""

from __future__ import annotations

import math
from itertools import product

import numpy as np

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)


def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(rows, columns) of the stride 8, 16, 32 feature maps: ceil(size / stride), as PriorBox computes them."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in STEPS]


def num_priors(height: int, width: int) -> int:
    return sum(h * w * len(m) for (h, w), m in zip(feature_sizes(height, width), MIN_SIZES))


def prior_boxes(height: int, width: int) -> np.ndarray:
    """biubug6's PriorBox for a ``height`` × ``width`` input: [A, 4] (cx, cy, w, h) normalized, float32, with
    the same loop order (level, row, column, size) and the same float64 arithmetic as PriorBox.forward."""
    anchors = []
    for (rows, cols), step, sizes in zip(feature_sizes(height, width), STEPS, MIN_SIZES):
        for i, j in product(range(rows), range(cols)):
            for size in sizes:
                anchors += [(j + 0.5) * step / width, (i + 0.5) * step / height, size / width, size / height]
    return np.asarray(anchors, np.float32).reshape(-1, 4)


def prior_levels(height: int, width: int) -> np.ndarray:
    """The FPN level (0, 1, 2) of each prior."""
    counts = [h * w * len(m) for (h, w), m in zip(feature_sizes(height, width), MIN_SIZES)]
    return np.repeat(np.arange(len(counts)), counts)


def decode_numpy(loc: np.ndarray, landms: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """biubug6's decode / decode_landm in numpy, float32, into input pixels: [N, A, 4] and [N, A, 10]."""
    priors = prior_boxes(height, width)
    center, size = priors[:, :2], priors[:, 2:]
    var0, var1, two = np.float32(VARIANCE[0]), np.float32(VARIANCE[1]), np.float32(2)
    loc = np.asarray(loc, np.float32)
    cxcy = center + loc[..., :2] * var0 * size
    wh = size * np.exp(loc[..., 2:] * var1)
    x1y1 = cxcy - wh / two
    scale = np.array([width, height], np.float32)
    boxes = np.concatenate([x1y1, wh + x1y1], -1) * np.tile(scale, 2)
    points = np.asarray(landms, np.float32).reshape(*landms.shape[:-1], 5, 2)
    points = (center[:, None] + points * var0 * size[:, None]) * scale
    return boxes, points.reshape(*landms.shape[:-1], 10)


def face_score(classifications: np.ndarray) -> np.ndarray:
    """softmax(classifications, -1)[..., 1] in float32."""
    logits = np.asarray(classifications, np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e[..., 1] / e.sum(-1)).astype(np.float32)
