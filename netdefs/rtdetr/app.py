"""``infer`` and ``bench`` around the RT-DETR network: ultralytics' RTDETRPredictor before and after the engine.

Before: the image stretched to the input size (``LetterBox(scale_fill=True)``: cv2.resize, bilinear, no
padding), BGR to RGB, / 255. After (``RTDETRPredictor.postprocess``): the detections with a score above
``--conf``, in the network's order (best first), boxes to corners and scaled from the input size to the
original image. No NMS: the decoder's queries do not duplicate each other, the top-k in the network chose them.
Pictures, COCO-style JSON and the printed line come from the detection toolkit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from netdefs.common import as_numpy
from netdefs.detection import draw, results
from netdefs.detection.boxes import Detections, xywh2xyxy
from trtx.net import NetdefError
from trtx.netdef import App

INPUT = "images"


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
    return {INPUT: x}, [im.shape[:2] for im in images]


def detections(outputs: dict[str, Any], sizes: list[tuple[int, int]], cfg, conf: float | None = None
               ) -> list[Detections]:  # fmt: skip
    """RTDETRPredictor.postprocess on the network's outputs: per image the rows with score > conf, in the network's
    order; corner boxes in original pixels (the network's normalized boxes x the original width and height)."""
    conf = cfg.conf if conf is None else conf
    h, w = cfg.imgsz
    boxes = np.asarray(outputs["boxes"], np.float32)
    scores = np.asarray(outputs["scores"], np.float32)
    classes = np.asarray(outputs["classes"]).astype(np.int64)
    found = []
    for b, (oh, ow) in enumerate(sizes):
        keep = scores[b] > np.float32(conf)
        xyxy = xywh2xyxy(boxes[b][keep] / np.array([w, h, w, h], np.float32))
        found.append(Detections(xyxy * np.array([ow, oh, ow, oh], np.float32), scores[b][keep], classes[b][keep]))
    return found


def postprocess(outputs: dict[str, Any], sizes: list[tuple[int, int]], cfg) -> list[dict]:
    """One result per image: {"boxes" [K, 4] (x1, y1, x2, y2 original pixels), "scores" [K], "classes" [K]}."""
    outputs = {k: as_numpy(v) for k, v in outputs.items()}
    return [{"boxes": d.boxes, "scores": d.scores, "classes": d.classes} for d in detections(outputs, sizes, cfg)]


def render(image: np.ndarray, result: dict, cfg) -> np.ndarray:
    """The detections drawn on a copy of the BGR image (ultralytics' colors and labels)."""
    labels = [draw.label(cfg.names[int(c)], float(s)) for c, s in zip(result["classes"], result["scores"])]
    return draw.boxes(image.copy(), result["boxes"], labels, [draw.color(c) for c in result["classes"]])


def result_json(result: dict, cfg) -> dict:
    """COCO-style: bbox [x, y, w, h] in original pixels, category_id (0-based class), category, score."""
    dets = results.coco_detections(result["boxes"], result["scores"], result["classes"], cfg.names)
    return {"model": cfg.arch, "detections": dets}


def summary(result: dict, cfg) -> str:
    return results.summary(result["classes"], cfg.names)


APP = App(preprocess=preprocess, postprocess=postprocess, render=render, result_json=result_json, summary=summary)
