"""Drawing detections on a copy of a BGR image (OpenCV): boxes with labels in yolov5/ultralytics' colors,
points (landmarks, keypoints) and instance masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: yolov5's / ultralytics' Colors palette (RGB hex)
PALETTE = ("FF3838 FF9D97 FF701F FFB21D CFD231 48F90A 92CC17 3DDB86 1A9334 00D4BB 2C99A8 00C2FF 344593 6473FF "
           "0018EC 8438FF 520085 CB38FF FF95C8 FF37C7").split()  # fmt: skip


def color(i: int) -> tuple[int, int, int]:
    """The palette's color for class ``i``, BGR."""
    h = PALETTE[int(i) % len(PALETTE)]
    return int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16)


def line_width(image: np.ndarray) -> int:
    """yolov5's Annotator line width for this image: 0.3 % of its mean side, at least 2."""
    return max(round(sum(image.shape[:2]) / 2 * 0.003), 2)


def boxes(image: np.ndarray, boxes: np.ndarray, labels: Sequence[str], colors: Sequence[tuple[int, int, int]],
          lw: int | None = None) -> np.ndarray:  # fmt: skip
    """Corner ``boxes`` in ``image`` (drawn in place, returned), each with its label on a filled tab, as yolov5's
    Annotator.box_label draws them."""
    import cv2

    lw = lw or line_width(image)
    for box, label, c in zip(boxes, labels, colors):
        p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
        cv2.rectangle(image, p1, p2, c, lw, cv2.LINE_AA)
        tw, th = cv2.getTextSize(label, 0, lw / 3, max(lw - 1, 1))[0]
        outside = p1[1] - th >= 3
        q2 = (p1[0] + tw, p1[1] - th - 3 if outside else p1[1] + th + 3)
        cv2.rectangle(image, p1, q2, c, -1, cv2.LINE_AA)
        cv2.putText(image, label, (p1[0], p1[1] - 2 if outside else p1[1] + th + 2), 0, lw / 3, (255, 255, 255),
                    max(lw - 1, 1), cv2.LINE_AA)  # fmt: skip
    return image


def masks(image: np.ndarray, masks: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Boolean ``masks`` [K, H, W] blended half and half into ``image`` (in place, returned)."""
    for mask, c in zip(masks, colors):
        image[mask] = (image[mask] * 0.5 + np.array(c, np.float32) * 0.5).astype(np.uint8)
    return image


def points(image: np.ndarray, points: np.ndarray, colors: Sequence[tuple[int, int, int]], radius: int) -> np.ndarray:
    """Filled circles at ``points`` [K, P, 2] (landmarks, keypoints), point j in ``colors[j]`` (in place)."""
    import cv2

    for pts in points:
        for (x, y), c in zip(pts, colors):
            cv2.circle(image, (int(round(float(x))), int(round(float(y)))), radius, c, -1)
    return image


def label(name: str, score: float) -> str:
    """``person 0.87`` (``person 1.6e-04`` below 0.01, the scores of untrained weights)."""
    return f"{name} {score:.2f}" if score >= 0.01 else f"{name} {score:.1e}"
