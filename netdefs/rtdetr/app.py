"""``infer`` and ``bench`` around the RT-DETR network: ultralytics' RTDETRPredictor before and after the engine.

Before: the image stretched to the input size (``LetterBox(scale_fill=True)``: cv2.resize, bilinear, no
padding), BGR to RGB, / 255. After (``RTDETRPredictor.postprocess``): the detections above the confidence
threshold, boxes to corners and scaled from the input size to the original image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trtx.net import NetdefError


def load_images(paths: Sequence[str]) -> list[np.ndarray]:
    import cv2

    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise NetdefError(f"{path}: not a readable image")
        images.append(image)
    return images


def preprocess(images: list[np.ndarray], cfg) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
    """BGR uint8 images -> {"images": [B, 3, H, W] float32 RGB in [0, 1]}, and each original (height, width)."""
    import cv2

    h, w = cfg.imgsz
    batch = []
    for image in images:
        resized = image if image.shape[:2] == (h, w) else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        batch.append(resized[:, :, ::-1].transpose(2, 0, 1))
    x = np.ascontiguousarray(np.stack(batch)).astype(np.float32) / np.float32(255.0)
    return {"images": x}, [im.shape[:2] for im in images]


def detections(outputs: dict[str, Any], sizes: list[tuple[int, int]], cfg, conf: float | None = None) -> list[dict]:
    """RTDETRPredictor.postprocess on the network's outputs: per image the detections with score > conf, in the
    network's order, as {"boxes" [N, 4] (x1, y1, x2, y2 original pixels), "scores" [N], "classes" [N]}."""
    conf = cfg.conf if conf is None else conf
    h, w = cfg.imgsz
    boxes = np.asarray(outputs["boxes"], np.float32)
    scores = np.asarray(outputs["scores"], np.float32)
    classes = np.asarray(outputs["classes"]).astype(np.int64)
    results = []
    for b, (oh, ow) in enumerate(sizes):
        keep = scores[b] > conf
        xywh = boxes[b][keep] / np.array([w, h, w, h], np.float32)  # back to the network's normalized boxes
        half = xywh[:, 2:] / np.float32(2)
        xyxy = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], 1)
        xyxy *= np.array([ow, oh, ow, oh], np.float32)
        results.append({"boxes": xyxy, "scores": scores[b][keep], "classes": classes[b][keep]})
    return results
