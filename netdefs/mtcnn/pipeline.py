"""MTCNN's host side, as facenet-pytorch's ``detect_face`` computes it (facenet_pytorch/models/utils/detect_face.py):
the image pyramid through P-Net, candidate boxes, NMS within each scale and across scales, R-Net on 24 x 24 crops,
O-Net on 48 x 48 crops, box regression, landmarks, and the last "Min" NMS. numpy only; the networks are called
through ``runners`` (the reference executor or TensorRT engines).

The arithmetic is facenet-pytorch's, in float32 and in the same order, so that the boxes agree to the last bits
where the networks' outputs do: crops are resampled with PyTorch's ``interpolate(mode="area")`` windows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from trtx.nms import nms

F32 = np.float32


def area_weights(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] averaging matrix of ``interpolate(mode="area")`` (= adaptive average pooling) on one
    axis: output i averages inputs floor(i·in/out) .. ceil((i+1)·in/out) - 1."""
    m = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = ((i + 1) * size_in + size_out - 1) // size_out
        m[i, start:end] = 1.0 / (end - start)
    return m


def resample(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``imresample``: an [H, W, 3] float image -> [3, height, width] float32, area-averaged."""
    rows, cols = area_weights(image.shape[0], height), area_weights(image.shape[1], width)
    planes = image.transpose(2, 0, 1).astype(np.float64)
    return (rows @ planes @ cols.T).astype(F32)


def normalize(x: np.ndarray) -> np.ndarray:
    return (x - F32(127.5)) * F32(0.0078125)


def pyramid(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """The scales detect_face runs P-Net at: 12 / min_face_size, times ``factor`` while the short side >= 12."""
    m = 12.0 / min_face_size
    minl = min(height, width) * m
    scales, scale = [], m
    while minl >= 12:
        scales.append(scale)
        scale *= factor
        minl *= factor
    return scales


def generate_boxes(reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """``generateBoundingBox``: P-Net's windows with face probability >= threshold, as [N, 9] rows
    (x1, y1, x2, y2, score, 4 regression offsets) in image pixels; stride 2, window 12."""
    ys, xs = np.nonzero(prob >= threshold)
    bb = np.stack([xs, ys], axis=1).astype(F32)
    q1 = np.floor((F32(2) * bb + F32(1)) / F32(scale))
    q2 = np.floor((F32(2) * bb + F32(12)) / F32(scale))
    return np.concatenate([q1, q2, prob[ys, xs, None], reg[:, ys, xs].T], axis=1).astype(F32)


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """``bbreg``: move the corners by the regression offsets, in units of the inclusive width/height."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + F32(1)
    h = boxes[:, 3] - boxes[:, 1] + F32(1)
    out[:, 0] = boxes[:, 0] + reg[:, 0] * w
    out[:, 1] = boxes[:, 1] + reg[:, 1] * h
    out[:, 2] = boxes[:, 2] + reg[:, 2] * w
    out[:, 3] = boxes[:, 3] + reg[:, 3] * h
    return out


def square(boxes: np.ndarray) -> np.ndarray:
    """``rerec``: each box grown to a square of its longer side, about its centre."""
    out = boxes.copy()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * F32(0.5) - side * F32(0.5)
    out[:, 1] = boxes[:, 1] + h * F32(0.5) - side * F32(0.5)
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``pad`` + the crop loop: each box (truncated to ints, clipped to the image, 1-based) resampled to
    size x size and normalized: [N, 3, size, size]."""
    h, w = image.shape[:2]
    b = np.trunc(boxes[:, :4]).astype(np.int32)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    out = [resample(image[y[k] - 1 : ey[k], x[k] - 1 : ex[k]], size, size) for k in range(len(b))]
    return normalize(np.stack(out)) if out else np.zeros((0, 3, size, size), F32)


def batched(run: Callable, data: np.ndarray, max_batch: int) -> dict[str, np.ndarray]:
    """``fixed_batch_process``: the network over ``data`` in chunks of at most ``max_batch``."""
    parts = [run({"data": data[i : i + max_batch]}) for i in range(0, len(data), max_batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def detect(runners: Mapping[str, Callable], image_rgb: np.ndarray, cfg) -> dict[str, np.ndarray]:
    """``detect_face`` for one RGB uint8 image, then ``MTCNN.detect``'s order (largest face first): boxes
    [N, 4] (x1, y1, x2, y2), scores [N] (face probability), landmarks [N, 5, 2] (eyes, nose, mouth corners)."""
    img = image_rgb.astype(F32)
    h, w = img.shape[:2]
    t1, t2, t3 = cfg.thresholds
    empty = {"boxes": np.zeros((0, 4), F32), "scores": np.zeros(0, F32), "landmarks": np.zeros((0, 5, 2), F32)}

    # stage 1: P-Net over the pyramid, NMS 0.5 within each scale, 0.7 across scales
    per_scale = []
    for scale in pyramid(h, w, cfg.min_face_size, cfg.factor):
        level = normalize(resample(img, int(h * scale + 1), int(w * scale + 1)))
        out = runners["pnet"]({"data": level[None]})
        boxes = generate_boxes(out["reg"][0], out["prob"][0, 1], scale, t1)
        per_scale.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
    boxes = np.concatenate(per_scale) if per_scale else np.zeros((0, 9), F32)
    boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
    if not len(boxes):
        return empty
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    corners = [boxes[:, k] + boxes[:, 5 + k] * (regw if k % 2 == 0 else regh) for k in range(4)]
    boxes = square(np.stack(corners + [boxes[:, 4]], axis=1))

    # stage 2: R-Net on 24 x 24 crops
    out = batched(runners["rnet"], crops(img, boxes, 24), cfg.max_crops)
    score = out["prob"][:, 1]
    keep = score > t2
    boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
    reg = out["reg"][keep]
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes = square(regress(boxes[pick], reg[pick]))
    if not len(boxes):
        return empty

    # stage 3: O-Net on 48 x 48 crops: boxes, probabilities, landmarks
    out = batched(runners["onet"], crops(img, boxes, 48), cfg.max_crops)
    score = out["prob"][:, 1]
    keep = score > t3
    points = out["landmarks"][keep]
    boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
    reg = out["reg"][keep]
    bw = boxes[:, 2] - boxes[:, 0] + F32(1)
    bh = boxes[:, 3] - boxes[:, 1] + F32(1)
    px = bw[:, None] * points[:, :5] + boxes[:, 0, None] - F32(1)
    py = bh[:, None] * points[:, 5:] + boxes[:, 1, None] - F32(1)
    points = np.stack([px, py], axis=2)
    boxes = regress(boxes, reg)
    pick = _min_nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes, points = boxes[pick], points[pick]

    order = np.argsort((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[::-1]
    return {"boxes": boxes[order, :4], "scores": boxes[order, 4], "landmarks": points[order]}


def _min_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """The last stage's NMS: overlap = intersection over the smaller box, pixel-inclusive areas."""
    return nms(boxes, scores, threshold, overlap="min", inclusive=True)
