"""Around the network: images in (letterbox, biubug6's mean subtraction), faces out (NMS after the engine where
it did not run inside, faces back on the original image), pictures, JSON and the printed line.

A result per image: {"boxes" [K, 4] (x1, y1, x2, y2), "scores" [K], "landmarks" [K, 5, 2]}, best first."""

from __future__ import annotations

from typing import Any

import numpy as np

from netdefs.detection import draw
from netdefs.detection.boxes import Detections, xywh2xyxy
from netdefs.detection.nms import unpack_selected
from netdefs.retinaface.config import INPUT, MEAN_BGR, Config
from netdefs.retinaface.priors import decode_numpy, face_score
from trtx import letterbox as lb

#: landmark colors (BGR): left eye, right eye, nose, left and right mouth corner (biubug6's detect.py)
LANDMARK_COLORS = ((0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0))


def preprocess(images: list[np.ndarray], cfg: Config) -> tuple[dict[str, np.ndarray], list]:
    """BGR uint8 images -> {"data": [B, 3, H, W] float32}: letterboxed (trtx.letterbox, pad 114), then biubug6's
    preprocessing (BGR, minus (104, 117, 123), no scaling). The context is each image's letterbox geometry."""
    batch = np.empty((len(images), 3, cfg.height, cfg.width), np.float32)
    geometry = []
    for i, image in enumerate(images):
        boxed, g = lb.letterbox(image, (cfg.height, cfg.width))
        batch[i] = (boxed.astype(np.float32) - np.float32(MEAN_BGR)).transpose(2, 0, 1)
        geometry.append(g)
    return {INPUT: batch}, geometry


def select(boxes: np.ndarray, scores: np.ndarray, cfg: Config, device: str | None = None) -> np.ndarray:
    """Indices kept for one image, best first: score > conf, the best ``top_k``, NMS at ``iou`` (exact, trtx.nms),
    the first ``keep_top_k``. ``device="cuda"`` runs :func:`select_gpu` instead."""
    if _nms_device(device or cfg.nms_device) == "cuda":
        return select_gpu(boxes[None], scores[None], cfg)[0]
    return cfg.rule.select(Detections(boxes, scores))


def _nms_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def select_gpu(boxes, scores, cfg: Config) -> list[np.ndarray]:
    """:func:`select` for a batch ([B, A, 4] corners, [B, A] scores) with the nms GPU kernel
    (plugins.retinaface_decode.select)."""
    from plugins import retinaface_decode

    return retinaface_decode.select(boxes, scores, conf_threshold=cfg.conf, iou_threshold=cfg.iou, top_k=cfg.top_k,
                                    keep_top_k=cfg.keep_top_k)  # fmt: skip


def _faces(boxes, scores, landmarks) -> dict[str, np.ndarray]:
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, np.float32).reshape(-1),
        "landmarks": np.asarray(landmarks, np.float32).reshape(-1, 5, 2),
    }


def as_detections(faces: dict[str, np.ndarray]) -> Detections:
    """A result as :class:`~netdefs.detection.boxes.Detections` (landmarks as an extra), for comparisons."""
    return Detections(faces["boxes"], faces["scores"], extras={"landmarks": faces["landmarks"]})


def detect(outputs: dict[str, np.ndarray], cfg: Config, device: str | None = None) -> list[dict[str, np.ndarray]]:
    """Faces per image in network-input pixels, best first, from the outputs of any post-processing mode."""
    if "face_boxes" in outputs:  # TensorRT's NMS layer
        batch = np.asarray(outputs["face_batch"]).reshape(-1)
        images = int(outputs.get("batch_size", batch.max(initial=-1) + 1))
        columns = {k: np.asarray(outputs[f"face_{k}"]) for k in ("boxes", "scores", "landmarks")}
        return [_faces(r["boxes"], r["scores"], r["landmarks"]) for r in unpack_selected(batch, columns, images, -1)]
    if "faces" in outputs:  # the nms plugin: records, best first
        result = []
        for n, r, p in zip(outputs["num_faces"], outputs["faces"], outputs["face_landmarks"]):
            r = np.asarray(r[: int(n)], np.float32)
            result.append(_faces(xywh2xyxy(r[:, :4]), r[:, 4], p[: int(n)]))
        return result
    if "boxes" in outputs:
        boxes, scores, landmarks = outputs["boxes"], outputs["scores"], outputs["landmarks"]
    else:  # raw heads (or biubug6's test-phase outputs loc, conf, landms: conf after the softmax)
        loc, landms = (
            outputs.get("bbox_regressions", outputs.get("loc")),
            outputs.get("ldm_regressions", outputs.get("landms")),
        )
        boxes, landmarks = decode_numpy(loc, landms, cfg.height, cfg.width)
        scores = np.asarray(outputs["conf"])[..., 1] if "conf" in outputs else face_score(outputs["classifications"])
    boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
    if _nms_device(device or cfg.nms_device) == "cuda":
        kept = select_gpu(boxes, scores, cfg)
    else:
        kept = [select(boxes[b], scores[b], cfg, device="cpu") for b in range(boxes.shape[0])]
    return [_faces(boxes[b][k], scores[b][k], landmarks[b][k]) for b, k in enumerate(kept)]


def to_original(faces: dict[str, np.ndarray], g) -> dict[str, np.ndarray]:
    """Input pixels -> original image pixels through the letterbox geometry ``g`` (boxes clipped to the image,
    landmarks not). The resized image spans new_w × new_h input pixels from (left, top)."""
    (h, w), (new_w, new_h) = g.src, g.new
    offset = np.array([g.left, g.top], np.float32)
    gain = np.array([w / new_w, h / new_h], np.float32)
    boxes = (faces["boxes"].reshape(-1, 2, 2) - offset) * gain
    boxes = np.clip(boxes, 0, np.array([w, h], np.float32)).reshape(-1, 4)
    return {"boxes": boxes, "scores": faces["scores"], "landmarks": (faces["landmarks"] - offset) * gain}


def postprocess(outputs: dict[str, np.ndarray], ctx: list, cfg: Config) -> list[dict[str, np.ndarray]]:
    """Faces per image in original-image pixels: boxes [K, 4] (x1, y1, x2, y2), scores [K], landmarks [K, 5, 2]."""
    outputs = dict(outputs, batch_size=len(ctx))
    return [to_original(f, g) for f, g in zip(detect(outputs, cfg), ctx)]


def render(image: np.ndarray, faces: dict[str, np.ndarray], cfg: Config) -> np.ndarray:
    """Boxes, scores and the 5 landmarks drawn on a copy of the BGR image."""
    import cv2

    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 500))
    for box, score in zip(faces["boxes"], faces["scores"]):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 0, 255), thick)
        cv2.putText(out, f"{score:.3f}", (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_DUPLEX, 0.4 * thick, (255, 255, 255))
    return draw.points(out, faces["landmarks"], LANDMARK_COLORS, thick + 1)


def result_json(faces: dict[str, np.ndarray], cfg: Config) -> dict[str, Any]:
    return {
        "faces": [
            {"box": [round(float(v), 3) for v in b], "score": round(float(s), 6),
             "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in p]}
            for b, s, p in zip(faces["boxes"], faces["scores"], faces["landmarks"])
        ]
    }  # fmt: skip


def summary(faces: dict[str, np.ndarray], cfg: Config) -> str:
    n = len(faces["scores"])
    return f"{n} face{'s' if n != 1 else ''}" + (f", best score {faces['scores'].max():.3f}" if n else "")
