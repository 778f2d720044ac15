"""Oriented boxes (OBB models) on the host: ultralytics' rotated NMS over the candidates, the boxes' corners, and
the post-NMS comparison for ``check``.

An OBB candidate is a :class:`Detections` row whose ``extras["xywhr"]`` is the rotated box (cx, cy, w, h, angle in
radians) and whose ``boxes`` are the corners of the axis-aligned box around it (for labels and COCO's bbox).
ultralytics selects with Fast NMS (``TorchNMS.fast_nms`` + ``batch_probiou``; :func:`trtx.nms.rotated_nms`): a
candidate is dropped when any candidate scoring higher -- kept or not -- overlaps it with probiou > IoU.
"""

from __future__ import annotations

import numpy as np

from netdefs.detection.boxes import Detections
from netdefs.detection.compare import Tolerance, verdict
from trtx import nms as exact

#: ultralytics' max_wh (the class offset of its class-aware NMS) and max_nms (candidates entering the NMS)
MAX_WH = 7680.0
MAX_NMS = 30000


def candidates(xywh: np.ndarray, angles: np.ndarray, class_scores: np.ndarray) -> Detections:
    """One image's candidates from its native outputs: boxes [A, 4] (cx, cy, w, h), angles [A], scores [A, nc]."""
    xywhr = np.concatenate([np.asarray(xywh, np.float32), np.asarray(angles, np.float32)[:, None]], 1)
    class_scores = np.asarray(class_scores, np.float32)
    return Detections(aabb(xywhr), class_scores.max(1), class_scores.argmax(1), {"xywhr": xywhr},
                      np.arange(len(xywhr)), class_scores)  # fmt: skip


def select(c: Detections, conf: float, iou: float, max_det: int) -> np.ndarray:
    """Indices of the candidates ultralytics keeps, best first: ``score > conf``, the best MAX_NMS, Fast NMS with
    probiou, classes apart by MAX_WH."""
    cand = np.nonzero(c.scores > np.float32(conf))[0]
    cand = cand[exact.order(c.scores[cand])][:MAX_NMS]
    kept = exact.rotated_nms(c.extras["xywhr"][cand], c.scores[cand], iou, c.classes[cand], class_offset=MAX_WH,
                             max_keep=max_det)  # fmt: skip
    return cand[kept]


def corners(xywhr: np.ndarray) -> np.ndarray:
    """[K, 4, 2] corner points of rotated boxes (ultralytics' xywhr2xyxyxyxy, same order)."""
    xywhr = np.asarray(xywhr, np.float32).reshape(-1, 5)
    ctr, w, h, a = xywhr[:, None, :2], xywhr[:, 2:3], xywhr[:, 3:4], xywhr[:, 4:5]
    cos, sin = np.cos(a), np.sin(a)
    v1 = np.concatenate([w / 2 * cos, w / 2 * sin], 1)[:, None]
    v2 = np.concatenate([-h / 2 * sin, h / 2 * cos], 1)[:, None]
    return np.concatenate([ctr + v1 + v2, ctr + v1 - v2, ctr - v1 - v2, ctr - v1 + v2], 1)


def aabb(xywhr: np.ndarray) -> np.ndarray:
    """[K, 4] corners (x1, y1, x2, y2) of the axis-aligned boxes around rotated boxes."""
    pts = corners(xywhr)
    return np.concatenate([pts.min(1), pts.max(1)], 1)


def compare(ours: list[Detections], theirs: list[Detections], conf: float, iou: float, max_det: int,
            rtol: float) -> tuple[bool, str]:  # fmt: skip
    """Per image, our detections (with ``index``) held to PyTorch's candidates ``theirs`` the way the shared
    comparison holds greedy NMS (netdefs/detection/compare.py), for Fast NMS:

    1. every detection is the PyTorch candidate of its index: box, angle, score (and class, up to a near tie)
       within ``rtol`` of their scale;
    2. no detection is overlapped (probiou > IoU) by a candidate of its class that scores clearly higher, and
       every candidate above the cuts that no candidate of its class scoring as high (within tolerance) overlaps
       is detected. Scores within tolerance may order either way; a probiou within what the box tolerance and the
       rounding of the class-shifted centers can move it (2 x that / the smaller side) counts either way."""
    problems, same, total = [], 0, 0
    for b, (o, t) in enumerate(zip(ours, theirs)):
        tol = Tolerance.relative(rtol, [o, t.take(t.scores > np.float32(conf))])
        index = np.asarray(o.index, np.int64)
        for k, i in enumerate(index):
            why = _differs(o, k, t, int(i), tol, rtol)
            if why:
                problems.append(f"image {b}: detection {k} differs from PyTorch's candidate {i}: {why}")
        if not problems:
            problems += [f"image {b}: {p}" for p in _not_a_fast_nms(index, t, conf, iou, max_det, tol)]
            same += len(np.intersect1d(index, select(t, conf, iou, max_det)))
        total += len(o)
    matched = f"rotated box and score within {rtol:g} relative"
    return verdict(problems, total, same, matched, "NMS", "a Fast NMS of PyTorch's candidates")


def _differs(o: Detections, k: int, t: Detections, i: int, tol: Tolerance, rtol: float) -> str:
    box = float(np.abs(o.extras["xywhr"][k, :4] - t.extras["xywhr"][i, :4]).max())
    angle = abs(float(o.extras["xywhr"][k, 4] - t.extras["xywhr"][i, 4]))
    score = abs(float(o.scores[k] - t.scores[i]))
    c = int(o.classes[k])
    if box > tol.box:
        return f"rotated box by {box:.3g} (> {tol.box:.3g})"
    if angle > rtol * np.pi:
        return f"angle by {angle:.3g} (> {rtol * np.pi:.3g})"
    if score > tol.score:
        return f"score by {score:.3g} (> {tol.score:.3g})"
    if c != int(t.classes[i]) and t.class_scores[i, c] < t.scores[i] - np.float32(tol.score):
        return f"class {c} vs {int(t.classes[i])}"
    return ""


def _not_a_fast_nms(index: np.ndarray, t: Detections, conf: float, iou: float, max_det: int,
                    tol: Tolerance) -> list[str]:  # fmt: skip
    problems = []
    if len(index) > max_det or len(np.unique(index)) != len(index):
        problems.append(f"{len(index)} detections ({len(np.unique(index))} distinct), max_det {max_det}")
    scores = t.scores.astype(np.float64)
    floor = conf + tol.score
    if len(index) >= max_det and len(index):
        floor = max(floor, scores[index].min() + tol.score)
    cand = np.nonzero(scores > conf)[0]
    xywhr = t.extras["xywhr"][cand]
    pairs = exact.probiou(xywhr, xywhr).astype(np.float64)  # rows: the overlapping candidate, columns: the one it drops
    side = np.maximum(np.minimum(xywhr[:, 2], xywhr[:, 3]), 1e-6)
    # ultralytics shifts the centers by class x MAX_WH in float32 before probiou: they round to that number's ulp
    shift = float(np.spacing(np.float32(MAX_WH * (int(t.classes.max(initial=0)) + 1))))
    slack = np.minimum(2 * (tol.box + shift) / np.minimum.outer(side, side), 0.5)
    s = scores[cand]
    cls, class_scores = t.classes[cand], t.class_scores[cand]
    same_class = cls[:, None] == cls[None, :]
    may_share = same_class | (class_scores[:, cls] >= s[:, None] - tol.score)  # i's scores nearly tie for j's class
    may_share |= (class_scores[:, cls] >= s[:, None] - tol.score).T  # or j's for i's
    np.fill_diagonal(same_class, False)
    np.fill_diagonal(may_share, False)
    must_drop = ((s[:, None] > s[None, :] + tol.score) & (pairs > iou + slack) & same_class).any(0)
    may_drop = ((s[:, None] >= s[None, :] - tol.score) & (pairs > iou - slack) & may_share).any(0)
    detected = np.isin(cand, index)
    for j in np.nonzero(detected & must_drop)[0]:
        problems.append(f"detection {cand[j]} is overlapped by a candidate of its class scoring clearly higher")
    for j in np.nonzero(~detected & ~may_drop & (s > floor))[0]:
        problems.append(f"PyTorch's candidate {cand[j]} (score {s[j]:.6g}) is neither detected nor overlapped by a "
                        "candidate of its class scoring as high")  # fmt: skip
    return problems
