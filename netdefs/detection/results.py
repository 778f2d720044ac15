"""What ``infer`` writes and prints per image: COCO-style detections JSON and a one-line summary."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def coco_detections(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, names: Sequence[str],
                    masks: np.ndarray | None = None) -> list[dict]:  # fmt: skip
    """One dict per detection: ``bbox`` [x, y, w, h] (original pixels), ``category_id`` (0-based class),
    ``category`` (its name), ``score``; with ``masks`` [K, H, W] also ``segmentation`` (polygons) and ``area``."""
    dets = []
    for k, (box, score, cls) in enumerate(zip(boxes, scores, classes)):
        x1, y1, x2, y2 = (float(v) for v in box)
        det = {"bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": int(cls), "category": names[int(cls)],
               "score": float(score)}  # fmt: skip
        if masks is not None:
            det["segmentation"] = polygons(masks[k])
            det["area"] = int(masks[k].sum())
        dets.append(det)
    return dets


def polygons(mask: np.ndarray) -> list[list[float]]:
    """The outer contours of a boolean mask as flat [x0, y0, x1, y1, ...] lists (3 points or more)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def summary(classes: np.ndarray, names: Sequence[str], what: str = "detections") -> str:
    """``5 detections: 4 person, 1 bus`` (classes in order of first appearance)."""
    counts: dict[str, int] = {}
    for c in classes:
        counts[names[int(c)]] = counts.get(names[int(c)], 0) + 1
    listed = ": " + ", ".join(f"{n} {k}" for k, n in counts.items()) if counts else ""
    return f"{len(classes)} {what}{listed}"
