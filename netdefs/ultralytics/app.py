"""Around the network: images in (letterbox; center crop for cls), results out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdefs import imagenet
from netdefs.ultralytics.config import INPUT, Config
from trtx import letterbox as lb


@dataclass
class Context:
    """What postprocess needs from preprocess: the original image sizes and their letterbox geometry."""

    shapes: list[tuple[int, int]]
    boxes: list[lb.Letterbox]


def preprocess(images: list[np.ndarray], cfg: Config) -> tuple[dict[str, np.ndarray], Context]:
    """BGR uint8 HWC images -> {"images": [B, 3, H, W] float32 RGB in [0, 1]}: ultralytics' LetterBox
    (auto=False, pad 114), or for cls its classify_transforms (short side to the size, center crop, no
    mean/std)."""
    shapes = [im.shape[:2] for im in images]
    if cfg.task == "cls":
        return {INPUT: np.stack([classify_image(im, cfg.imgsz[0]) for im in images])}, Context(shapes, [])
    batch, geometry = lb.letterbox_batch(images, cfg.imgsz)
    return {INPUT: batch}, Context(shapes, geometry)


def classify_image(bgr: np.ndarray, size: int) -> np.ndarray:
    """classify_transforms(size): the short side resized to ``size`` (antialiased bilinear, torchvision's; ultralytics
    resizes a PIL image, which rounds its weights differently: within a grey level), center crop, /255."""
    rgb = imagenet.center_crop(imagenet.resize_short_side(np.ascontiguousarray(bgr[:, :, ::-1]), size), size)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / np.float32(255)


def postprocess(outputs: dict, ctx: Context, cfg: Config) -> list:
    """Network outputs -> one result per image ({"probs", "top5"} for cls)."""
    if cfg.task == "cls":
        prob = np.asarray(outputs["prob"], np.float32)
        return [{"probs": p, "top5": np.argsort(-p, kind="stable")[:5]} for p in prob]
    raise NotImplementedError("detection post-processing arrives with the shared detection toolkit")
