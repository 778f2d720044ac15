"""EasyOCR's host side (easyocr 1.7.2: ``Reader.readtext`` with its defaults), mirrored step by step in numpy and
OpenCV so that the strings and boxes agree with EasyOCR's wherever the networks' outputs do:

1. ``detection.test_net``: the image (RGB) padded to multiples of 32, ImageNet-normalized, through CRAFT;
2. ``craft_utils.getDetBoxes``: region + affinity scores thresholded, connected components, a dilated
   min-area rectangle per word;
3. ``utils.group_text_box``: words on a line merged into horizontal boxes (tilted ones kept as free quads);
4. ``utils.get_image_list`` + ``recognition.AlignCollate``: grey crops resized to 64 px high, padded on the right
   (last column repeated) to a multiple of 64;
5. the recognizer, softmax, CTC greedy decoding, the confidence (``custom_mean``), and a second pass with the
   contrast stretched for crops read with confidence < 0.1.

Each crop is recognized on its own, as EasyOCR does on a CPU (``batch_size=1``): its width decides the recognizer
input's, which is why the recognizer has a dynamic width profile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

#: Reader.readtext's defaults
DEFAULTS = {
    "canvas_size": 2560, "mag_ratio": 1.0, "text_threshold": 0.7, "low_text": 0.4, "link_threshold": 0.4,
    "min_size": 20, "slope_ths": 0.1, "ycenter_ths": 0.5, "height_ths": 0.5, "width_ths": 0.5, "add_margin": 0.1,
    "contrast_ths": 0.1, "adjust_contrast": 0.5,
}  # fmt: skip
#: english_g2's characters: class k + 1 (class 0 is the CTC blank); easyocr/config.py
CHARACTERS = "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
HEIGHT = 64


# ---- 1. detection input ----------------------------------------------------------------------------------
def detector_input(rgb: np.ndarray, canvas_size: int, mag_ratio: float) -> tuple[np.ndarray, float]:
    """``resize_aspect_ratio`` + ``normalizeMeanVariance``: [1, 3, H32, W32] float32 and the resize ratio."""
    import cv2

    height, width, channel = rgb.shape
    target_size = min(mag_ratio * max(height, width), canvas_size)
    ratio = target_size / max(height, width)
    target_h, target_w = int(height * ratio), int(width * ratio)
    proc = cv2.resize(rgb, (target_w, target_h), interpolation=cv2.INTER_LINEAR)
    h32, w32 = target_h + (-target_h % 32), target_w + (-target_w % 32)
    canvas = np.zeros((h32, w32, channel), dtype=np.float32)
    canvas[:target_h, :target_w, :] = proc
    canvas -= np.array([m * 255.0 for m in MEAN], dtype=np.float32)
    canvas /= np.array([s * 255.0 for s in STD], dtype=np.float32)
    return np.transpose(canvas, (2, 0, 1))[None], ratio


# ---- 2. words from the score maps --------------------------------------------------------------------
def word_boxes(textmap: np.ndarray, linkmap: np.ndarray, text_threshold: float, link_threshold: float,
               low_text: float) -> list[np.ndarray]:  # fmt: skip
    """``getDetBoxes_core``: one 4-point box (clockwise from top-left, score-map pixels) per connected component
    of (text > low_text) | (link > link_threshold) whose peak text score reaches text_threshold."""
    import cv2

    img_h, img_w = textmap.shape
    _, text_score = cv2.threshold(textmap, low_text, 1, 0)
    _, link_score = cv2.threshold(linkmap, link_threshold, 1, 0)
    text_score_comb = np.clip(text_score + link_score, 0, 1)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(text_score_comb.astype(np.uint8), connectivity=4)
    boxes = []
    for k in range(1, n):
        size = stats[k, cv2.CC_STAT_AREA]
        if size < 10 or np.max(textmap[labels == k]) < text_threshold:
            continue
        segmap = np.zeros(textmap.shape, dtype=np.uint8)
        segmap[labels == k] = 255
        segmap[np.logical_and(link_score == 1, text_score == 0)] = 0  # the links between words are not words
        x, y = stats[k, cv2.CC_STAT_LEFT], stats[k, cv2.CC_STAT_TOP]
        w, h = stats[k, cv2.CC_STAT_WIDTH], stats[k, cv2.CC_STAT_HEIGHT]
        niter = int(math.sqrt(size * min(w, h) / (w * h)) * 2)
        sx, ex, sy, ey = (
            max(x - niter, 0),
            min(x + w + niter + 1, img_w),
            max(y - niter, 0),
            min(y + h + niter + 1, img_h),
        )
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (1 + niter, 1 + niter))
        segmap[sy:ey, sx:ex] = cv2.dilate(segmap[sy:ey, sx:ex], kernel)
        contours = np.roll(np.array(np.where(segmap != 0)), 1, axis=0).transpose().reshape(-1, 2)
        box = cv2.boxPoints(cv2.minAreaRect(contours))
        w, h = np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[1] - box[2])
        if abs(1 - max(w, h) / (min(w, h) + 1e-5)) <= 0.1:  # a near-square: align it with the axes
            left, right = min(contours[:, 0]), max(contours[:, 0])
            top, bottom = min(contours[:, 1]), max(contours[:, 1])
            box = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], dtype=np.float32)
        start = box.sum(axis=1).argmin()
        boxes.append(np.array(np.roll(box, 4 - start, 0)))
    return boxes


def to_image(boxes: list[np.ndarray], ratio: float) -> list[np.ndarray]:
    """``adjustResultCoordinates`` + get_textbox's int32 cast: score-map boxes -> image pixels, flat [8]."""
    if not boxes:
        return []
    polys = np.array(boxes)
    for k in range(len(polys)):
        polys[k] *= (1 / ratio * 2, 1 / ratio * 2)
    return [np.array(p).astype(np.int32).reshape(-1) for p in polys]


# ---- 3. lines ---------------------------------------------------------------------------------------------
def group_text_box(polys, slope_ths, ycenter_ths, height_ths, width_ths, add_margin):
    """``utils.group_text_box`` (sort_output=True): (horizontal boxes [x_min, x_max, y_min, y_max], free quads)."""
    horizontal, free, combined, merged = [], [], [], []
    for poly in polys:
        slope_up = (poly[3] - poly[1]) / np.maximum(10, (poly[2] - poly[0]))
        slope_down = (poly[5] - poly[7]) / np.maximum(10, (poly[4] - poly[6]))
        if max(abs(slope_up), abs(slope_down)) < slope_ths:
            xs, ys = [poly[0], poly[2], poly[4], poly[6]], [poly[1], poly[3], poly[5], poly[7]]
            y_min, y_max = min(ys), max(ys)
            horizontal.append([min(xs), max(xs), y_min, y_max, 0.5 * (y_min + y_max), y_max - y_min])
        else:
            height = np.linalg.norm([poly[6] - poly[0], poly[7] - poly[1]])
            width = np.linalg.norm([poly[2] - poly[0], poly[3] - poly[1]])
            margin = int(1.44 * add_margin * min(width, height))
            theta13 = abs(np.arctan((poly[1] - poly[5]) / np.maximum(10, (poly[0] - poly[4]))))
            theta24 = abs(np.arctan((poly[3] - poly[7]) / np.maximum(10, (poly[2] - poly[6]))))
            free.append([
                [poly[0] - np.cos(theta13) * margin, poly[1] - np.sin(theta13) * margin],
                [poly[2] + np.cos(theta24) * margin, poly[3] - np.sin(theta24) * margin],
                [poly[4] + np.cos(theta13) * margin, poly[5] + np.sin(theta13) * margin],
                [poly[6] - np.cos(theta24) * margin, poly[7] + np.sin(theta24) * margin],
            ])  # fmt: skip
    horizontal = sorted(horizontal, key=lambda item: item[4])
    new_box: list = []
    b_height: list = []
    b_ycenter: list = []
    for poly in horizontal:  # lines: boxes whose centres are within ycenter_ths x the mean height
        if new_box and abs(np.mean(b_ycenter) - poly[4]) < ycenter_ths * np.mean(b_height):
            b_height.append(poly[5])
            b_ycenter.append(poly[4])
            new_box.append(poly)
        else:
            if new_box:
                combined.append(new_box)
            b_height, b_ycenter, new_box = [poly[5]], [poly[4]], [poly]
    combined.append(new_box)
    for boxes in combined:
        if len(boxes) == 1:
            box = boxes[0]
            margin = int(add_margin * min(box[1] - box[0], box[5]))
            merged.append([box[0] - margin, box[1] + margin, box[2] - margin, box[3] + margin])
            continue
        boxes = sorted(boxes, key=lambda item: item[0])
        runs, run, x_max = [], [], 0
        for box in boxes:  # words of a line: merged while the heights agree and the gap is small
            if (
                run
                and abs(np.mean(b_height) - box[5]) < height_ths * np.mean(b_height)
                and (box[0] - x_max) < width_ths * (box[3] - box[2])
            ):
                b_height.append(box[5])
                x_max = box[1]
                run.append(box)
            else:
                if run:
                    runs.append(run)
                b_height, x_max, run = [box[5]], box[1], [box]
        if run:
            runs.append(run)
        for run in runs:
            x_min, x_max = min(b[0] for b in run), max(b[1] for b in run)
            y_min, y_max = min(b[2] for b in run), max(b[3] for b in run)
            margin = int(add_margin * min(x_max - x_min, y_max - y_min))
            merged.append([x_min - margin, x_max + margin, y_min - margin, y_max + margin])
    return merged, free


def text_boxes(score: np.ndarray, ratio: float, cfg) -> tuple[list, list]:
    """``Reader.detect``: the horizontal boxes and free quads of one image from CRAFT's scores [H/2, W/2, 2]."""
    words = to_image(word_boxes(score[:, :, 0], score[:, :, 1], cfg.text_threshold, cfg.link_threshold,
                                cfg.low_text), ratio)  # fmt: skip
    horizontal, free = group_text_box(words, cfg.slope_ths, cfg.ycenter_ths, cfg.height_ths, cfg.width_ths,
                                      cfg.add_margin)  # fmt: skip
    if cfg.min_size:
        horizontal = [b for b in horizontal if max(b[1] - b[0], b[3] - b[2]) > cfg.min_size]
        free = [q for q in free if max(_spread([c[0] for c in q]), _spread([c[1] for c in q])) > cfg.min_size]
    return horizontal, free


def _spread(values) -> float:
    return max(values) - min(values)


# ---- 4. crops -------------------------------------------------------------------------------------------
def _ratio(width, height) -> float:
    ratio = width / height
    return 1.0 / ratio if ratio < 1.0 else ratio


def _resize_to_height(img: np.ndarray, width, height) -> tuple[np.ndarray, float]:
    """``compute_ratio_and_resize``. EasyOCR passes PIL's LANCZOS (1) as OpenCV's interpolation flag: bilinear."""
    import cv2

    ratio = width / height
    if ratio < 1.0:
        ratio = _ratio(width, height)
        return cv2.resize(img, (HEIGHT, int(HEIGHT * ratio)), interpolation=cv2.INTER_LINEAR), ratio
    return cv2.resize(img, (int(HEIGHT * ratio), HEIGHT), interpolation=cv2.INTER_LINEAR), ratio


def four_point_transform(image: np.ndarray, rect: np.ndarray) -> np.ndarray:
    """``utils.four_point_transform``: the quad warped to an upright rectangle."""
    import cv2

    tl, tr, br, bl = rect
    max_width = max(int(np.sqrt(((br[0] - bl[0]) ** 2) + ((br[1] - bl[1]) ** 2))),
                    int(np.sqrt(((tr[0] - tl[0]) ** 2) + ((tr[1] - tl[1]) ** 2))))  # fmt: skip
    max_height = max(int(np.sqrt(((tr[0] - br[0]) ** 2) + ((tr[1] - br[1]) ** 2))),
                     int(np.sqrt(((tl[0] - bl[0]) ** 2) + ((tl[1] - bl[1]) ** 2))))  # fmt: skip
    dst = np.array([[0, 0], [max_width - 1, 0], [max_width - 1, max_height - 1], [0, max_height - 1]], "float32")
    return cv2.warpPerspective(image, cv2.getPerspectiveTransform(rect, dst), (max_width, max_height))


def crop_list(horizontal: list, free: list, grey: np.ndarray) -> tuple[list, int]:
    """``get_image_list`` for one box: ([(box corners, grey crop 64 px high)], recognizer input width)."""
    items, max_ratio_free, max_ratio_hori = [], 1, 1
    for box in free:
        rect = np.array(box, dtype="float32")
        warped = four_point_transform(grey, rect)
        if int(HEIGHT * _ratio(warped.shape[1], warped.shape[0])) != 0:
            crop, ratio = _resize_to_height(warped, warped.shape[1], warped.shape[0])
            items.append((box, crop))
            max_ratio_free = max(ratio, max_ratio_free)
    max_ratio_free = math.ceil(max_ratio_free)
    maximum_y, maximum_x = grey.shape
    for box in horizontal:
        x_min, x_max = max(0, box[0]), min(box[1], maximum_x)
        y_min, y_max = max(0, box[2]), min(box[3], maximum_y)
        width, height = x_max - x_min, y_max - y_min
        if int(HEIGHT * _ratio(width, height)) != 0:
            crop, ratio = _resize_to_height(grey[y_min:y_max, x_min:x_max], width, height)
            items.append(([[x_min, y_min], [x_max, y_min], [x_max, y_max], [x_min, y_max]], crop))
            max_ratio_hori = max(ratio, max_ratio_hori)
    max_ratio = max(math.ceil(max_ratio_hori), max_ratio_free)
    items = sorted(items, key=lambda item: item[0][0][1])
    return items, math.ceil(max_ratio) * HEIGHT


def adjust_contrast_grey(img: np.ndarray, target: float = 0.4) -> np.ndarray:
    """``recognition.adjust_contrast_grey``: stretch a low-contrast crop (10th..90th percentile)."""
    high, low = np.percentile(img, 90), np.percentile(img, 10)
    contrast = (high - low) / np.maximum(10, high + low)
    if contrast < target:
        img = img.astype(int)
        ratio = 200.0 / np.maximum(10, high - low)
        img = (img - low + 25) * ratio
        img = np.maximum(np.full(img.shape, 0), np.minimum(np.full(img.shape, 255), img)).astype(np.uint8)
    return img


def recognizer_input(crop: np.ndarray, width: int, adjust_contrast: float = 0.0) -> np.ndarray:
    """``AlignCollate(keep_ratio_with_pad=True)`` + ``NormalizePAD``: [1, 1, 64, width] in [-1, 1], the crop's last
    column repeated to the right. The width resize is PIL's bicubic, as EasyOCR's (a no-op for crops already 64
    px high whose width fits)."""
    if adjust_contrast > 0:
        crop = adjust_contrast_grey(crop, target=adjust_contrast)
    h, w = crop.shape
    resized_w = min(width, math.ceil(HEIGHT * (w / float(h))))
    if (resized_w, HEIGHT) != (w, h):
        from PIL import Image

        crop = np.asarray(Image.fromarray(crop, "L").resize((resized_w, HEIGHT), Image.BICUBIC))
    x = (crop.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    out = np.empty((1, 1, HEIGHT, width), np.float32)
    out[0, 0, :, :resized_w] = x
    out[0, 0, :, resized_w:] = x[:, -1:]
    return out


# ---- 5. decoding ----------------------------------------------------------------------------------------
def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def decode(preds: np.ndarray, ignore_idx: list[int] = ()) -> tuple[str, float]:
    """``recognizer_predict`` for one crop: softmax, ignored classes zeroed and renormalized, greedy CTC (repeats
    merged, blanks dropped), confidence = prod(p)^(2/sqrt(n)) over the non-blank steps."""
    prob = softmax(preds.astype(np.float32))
    prob[:, list(ignore_idx)] = 0.0
    prob = prob / np.expand_dims(prob.sum(axis=1), axis=-1)
    index = prob.argmax(axis=1)
    keep = np.insert(index[1:] != index[:-1], 0, True) & (index != 0)
    text = "".join(CHARACTERS[i - 1] for i in index[keep])
    best = prob.max(axis=1)[index != 0]
    if len(best) == 0:
        best = np.array([0])
    return text, float(best.prod() ** (2.0 / np.sqrt(len(best))))


def read(recognize: Callable, items: list, width: int, cfg) -> list[tuple[Any, str, float]]:
    """``get_text``: each crop through the recognizer; low-confidence ones again with the contrast stretched."""
    results = []
    for box, crop in items:
        text, conf = decode(recognize({"crop": recognizer_input(crop, width)})["preds"][0])
        if conf < cfg.contrast_ths:
            again = decode(recognize({"crop": recognizer_input(crop, width, cfg.adjust_contrast)})["preds"][0])
            if again[1] >= conf:
                text, conf = again
        results.append((box, text, conf))
    return results


def readtext(runners: Mapping[str, Callable], bgr: np.ndarray, cfg) -> list[tuple[Any, str, float]]:
    """``Reader.readtext(path)`` for one BGR image: [(4 corners, text, confidence)] in EasyOCR's order."""
    import cv2

    rgb, grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    image, ratio = detector_input(rgb, cfg.canvas_size, cfg.mag_ratio)
    score = runners["craft"]({"image": image})["score"][0]
    horizontal, free = text_boxes(score, ratio, cfg)
    results = []
    for boxes, quads in [([b], []) for b in horizontal] + [([], [q]) for q in free]:
        items, width = crop_list(boxes, quads, grey)
        results += read(runners["crnn"], items, width, cfg)
    return results
