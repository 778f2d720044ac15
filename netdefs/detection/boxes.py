"""Boxes on the host: :class:`Detections` (one image's rows), center <-> corner conversions and IoU, in float32
computed the way yolov5 and torchvision compute them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    """One image's detections (or the candidates NMS chooses from), row by row.

    ``boxes`` [K, 4] corners (x1, y1, x2, y2), ``scores`` [K], ``classes`` [K] (int64; zeros for a one-class
    detector), ``extras`` {name: [K, ...]} per-box values that travel with the box (landmarks, mask
    coefficients, keypoints), ``index`` [K] the candidate each row was selected from, where known.
    Candidates may carry ``class_scores`` [K, C], every class's score (a best class within a near tie of
    another may differ between two computations)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    index: np.ndarray | None = None
    class_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        n = len(self.scores)
        self.classes = np.zeros(n, np.int64) if self.classes is None else np.asarray(self.classes).reshape(-1)
        self.classes = self.classes.astype(np.int64)
        self.extras = {k: _rows(v, n) for k, v in self.extras.items()}
        if len(self.boxes) != n or len(self.classes) != n:
            raise ValueError(f"{len(self.boxes)} boxes, {n} scores, {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, rows) -> Detections:
        """The rows ``rows`` (indices or a mask), their ``index`` = the rows taken when none was set."""
        rows = np.arange(len(self))[rows]
        return Detections(self.boxes[rows], self.scores[rows], self.classes[rows],
                          {k: v[rows] for k, v in self.extras.items()},
                          self.index[rows] if self.index is not None else rows,
                          self.class_scores[rows] if self.class_scores is not None else None)  # fmt: skip

    @classmethod
    def from_arrays(cls, boxes, scores, classes=None, extras: Mapping | None = None, **kw) -> list[Detections]:
        """A batch: ``boxes`` [B, N, 4] corners, ``scores`` [B, N], ``classes`` [B, N], extras {name: [B, N, ...]}."""
        return [cls(boxes[b], scores[b], None if classes is None else classes[b],
                    {k: v[b] for k, v in (extras or {}).items()},
                    **{k: v[b] for k, v in kw.items() if v is not None}) for b in range(len(boxes))]  # fmt: skip


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    """Center boxes (cx, cy, w, h) to corners, computed as yolov5's xywh2xyxy (x - w / 2, ...), in float32."""
    x = np.asarray(x, np.float32)
    half = x[..., 2:4] / np.float32(2)
    return np.concatenate([x[..., 0:2] - half, x[..., 0:2] + half], -1)


def xyxy2xywh(x: np.ndarray) -> np.ndarray:
    """Corners to center boxes (cx, cy, w, h), in float32."""
    x = np.asarray(x, np.float32)
    return np.concatenate([(x[..., 0:2] + x[..., 2:4]) / np.float32(2), x[..., 2:4] - x[..., 0:2]], -1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] IoU of corner boxes, float32 as torchvision.ops.box_iou (0 where the union is empty)."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    zero = np.float32(0)
    w = np.maximum(zero, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    h = np.maximum(zero, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]))
    inter = w * h
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, zero).astype(np.float32)


def iou_bounds(a: np.ndarray, b: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray]:
    """[N, M] lower and upper bounds of the IoU of boxes ``a`` and ``b`` when every corner coordinate may move by
    up to ``d``: an IoU decision against a threshold inside these bounds can go either way (float64)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ow = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    oh = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    pos = lambda x: np.maximum(x, 0.0)  # noqa: E731
    inter_max, inter_min = pos(ow + 2 * d) * pos(oh + 2 * d), pos(ow - 2 * d) * pos(oh - 2 * d)
    wa, ha, wb, hb = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    amin, bmin = pos(wa - 2 * d) * pos(ha - 2 * d), pos(wb - 2 * d) * pos(hb - 2 * d)
    amax, bmax = pos(wa + 2 * d) * pos(ha + 2 * d), pos(wb + 2 * d) * pos(hb + 2 * d)
    union_min = np.maximum(np.maximum(amin[:, None] + bmin[None, :] - inter_max, np.maximum.outer(amin, bmin)),
                           1e-30)  # fmt: skip
    union_max = amax[:, None] + bmax[None, :] - inter_min
    with np.errstate(divide="ignore", invalid="ignore"):
        low = np.where(union_max > 0, inter_min / union_max, 0.0)
    return low, np.minimum(1.0, inter_max / union_min)


def _rows(values, n: int) -> np.ndarray:
    """``values`` as ``n`` rows of float32 (no rows: the width its trailing axes give, 0 when they give none)."""
    values = np.asarray(values, np.float32)
    if n == 0 and values.size == 0:
        return values.reshape(0, int(np.prod(values.shape[1:])) if values.ndim > 1 else 0)
    return values.reshape(n, -1)
