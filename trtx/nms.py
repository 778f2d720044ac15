"""Exact non-maximum suppression on the CPU, in numpy: the reference every NMS path is held to.

Greedy NMS, computed the way ``torchvision.ops.nms`` computes it (float32 boxes, areas and IoU, a box is
suppressed when its IoU with a kept box is *greater than* the threshold), made deterministic: candidates are
visited by score descending, ties by index ascending (a stable sort). Class-aware when ``classes`` is given:
boxes of different classes never suppress each other.

:func:`non_max_suppression` is YOLOv5 v7.0's ``utils.general.non_max_suppression`` (best class per box,
``conf > conf_thres``, at most ``max_nms`` candidates, at most ``max_det`` kept), on boxes already decoded to
corners. YOLOv5 makes its NMS class-aware by shifting every box by ``class * 7680`` pixels; pass
``class_offset=MAX_WH`` to reproduce that float32 shift bit for bit (the IoU of shifted boxes differs from
the unshifted one in the last bits, which decides borderline pairs).

:func:`gpu_non_max_suppression` is the same NMS on the GPU for torch CUDA tensors, through the ``nms`` plugin's
kernels (exactly per class, no class offset); it equals :func:`non_max_suppression` with ``class_offset=None``.

Importing this module needs neither torch nor a GPU; the CPU functions never use them.
"""

from __future__ import annotations

import numpy as np

#: YOLOv5's ``max_wh``: the class offset of its batched NMS
MAX_WH = 7680.0


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] (x1, y1, x2, y2), got shape {boxes.shape}")
    return boxes


def order(scores: np.ndarray) -> np.ndarray:
    """Indices by score descending, ties by index ascending."""
    scores = np.asarray(scores, dtype=np.float32)
    return np.argsort(-scores, kind="stable")


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    classes: np.ndarray | None = None,
    *,
    class_offset: float | None = None,
    max_keep: int | None = None,
    overlap: str = "iou",
    inclusive: bool = False,
) -> np.ndarray:
    """Greedy NMS; returns the kept indices (int64) by score descending, ties by index ascending.

    ``classes`` (int, [N]) makes it class-aware: exactly so by default, or YOLOv5's way (boxes shifted by
    ``classes * class_offset`` in float32, then class-agnostic) when ``class_offset`` is given.
    ``max_keep`` stops after that many boxes are kept. ``overlap="min"`` measures the intersection over the
    smaller box's area instead of the union (MTCNN's last stage); ``inclusive`` counts pixels as the MATLAB-era
    face detectors do (width = x2 - x1 + 1).
    """
    if overlap not in ("iou", "min"):
        raise ValueError(f"overlap must be 'iou' or 'min', got {overlap!r}")
    boxes = _as_boxes(boxes)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    n = boxes.shape[0]
    if scores.shape[0] != n:
        raise ValueError(f"{n} boxes but {scores.shape[0]} scores")
    if classes is not None:
        classes = np.asarray(classes).reshape(-1)
        if classes.shape[0] != n:
            raise ValueError(f"{n} boxes but {classes.shape[0]} classes")
        if class_offset is not None:
            boxes = boxes + (classes.astype(np.float32) * np.float32(class_offset))[:, None]
            classes = None
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    thr = np.float32(iou_threshold)
    idx = order(scores)
    x1, y1, x2, y2 = (boxes[idx, k] for k in range(4))
    one = np.float32(1 if inclusive else 0)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    cls = classes[idx] if classes is not None else None
    alive = np.ones(n, dtype=bool)
    keep: list[int] = []
    limit = n if max_keep is None else max(0, int(max_keep))
    zero = np.float32(0)
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        rest = np.nonzero(alive[i + 1 :])[0] + i + 1
        if cls is not None:
            rest = rest[cls[rest] == cls[i]]
        if rest.size == 0:
            continue
        w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * h
        if overlap == "min":
            iou = inter / np.minimum(areas[i], areas[rest])
        else:
            iou = inter / (areas[i] + areas[rest] - inter)
        alive[rest[iou > thr]] = False
    return idx[np.asarray(keep, dtype=np.int64)].astype(np.int64)


def probiou(boxes1: np.ndarray, boxes2: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """ultralytics' ``batch_probiou``: [N, M] probabilistic IoU (1 - Hellinger distance of the boxes' Gaussians) of
    rotated boxes (cx, cy, w, h, angle in radians), computed in float32 in ultralytics' order of operations."""
    b1, b2 = (np.asarray(b, np.float32).reshape(-1, 5) for b in (boxes1, boxes2))
    f = np.float32
    x1, y1, x2, y2 = b1[:, 0:1], b1[:, 1:2], b2[None, :, 0], b2[None, :, 1]
    a1, bb1, c1 = (v[:, None] for v in _covariance(b1))
    a2, bb2, c2 = (v[None, :] for v in _covariance(b2))
    a, b, c = a1 + a2, bb1 + bb2, c1 + c2
    det = a * b - c * c
    t1 = ((a * (y1 - y2) ** 2 + b * (x1 - x2) ** 2) / (det + f(eps))) * f(0.25)
    t2 = ((c * (x2 - x1) * (y1 - y2)) / (det + f(eps))) * f(0.5)
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate (zero-area) boxes give inf/nan, as in torch
        root = np.sqrt(np.maximum(a1 * bb1 - c1 * c1, f(0)) * np.maximum(a2 * bb2 - c2 * c2, f(0)))
        t3 = np.log(det / (f(4) * root + f(eps)) + f(eps)) * f(0.5)
        bd = np.clip(t1 + t2 + t3, f(eps), f(100.0))
        hd = np.sqrt(f(1.0) - np.exp(-bd) + f(eps))
    return (f(1) - hd).astype(np.float32)


def _covariance(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, c) of the covariance [[a, c], [c, b]] of each rotated box's Gaussian (w^2 / 12, h^2 / 12, rotated)."""
    w2, h2 = boxes[:, 2] ** 2 / np.float32(12), boxes[:, 3] ** 2 / np.float32(12)
    cos, sin = np.cos(boxes[:, 4]), np.sin(boxes[:, 4])
    cos2, sin2 = cos**2, sin**2
    return w2 * cos2 + h2 * sin2, w2 * sin2 + h2 * cos2, (w2 - h2) * cos * sin


def rotated_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    classes: np.ndarray | None = None,
    *,
    class_offset: float = MAX_WH,
    max_keep: int | None = None,
    block: int = 1024,
) -> np.ndarray:
    """ultralytics' rotated NMS (``TorchNMS.fast_nms`` with ``batch_probiou``): candidates by score descending (ties
    by index), a box is dropped when *any* higher-scoring box -- kept or dropped -- overlaps it with probiou >
    ``iou_threshold`` (Fast NMS, not greedy). ``boxes`` [N, 5] (cx, cy, w, h, angle); ``classes`` moves each box's
    center by ``class * class_offset`` in float32 first, as ultralytics does. Returns kept indices, best first.
    Memory is O(``block`` x N)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 5)
    scores = np.asarray(scores, np.float32).reshape(-1)
    n = boxes.shape[0]
    if scores.shape[0] != n:
        raise ValueError(f"{n} boxes but {scores.shape[0]} scores")
    if classes is not None:
        shift = np.asarray(classes).reshape(-1).astype(np.float32) * np.float32(class_offset)
        boxes = np.concatenate([boxes[:, :2] + shift[:, None], boxes[:, 2:]], 1)
    idx = order(scores)
    boxes = boxes[idx]
    thr = np.float32(iou_threshold)
    dropped = np.zeros(n, bool)
    for start in range(0, n, block):
        rows = probiou(boxes[start : start + block], boxes)  # rows i, columns j: drop j when i < j overlaps it
        above = rows > thr
        above &= np.arange(n)[None, :] > np.arange(start, start + rows.shape[0])[:, None]
        dropped |= above.any(0)
    kept = idx[~dropped]
    return (kept if max_keep is None else kept[: max(0, int(max_keep))]).astype(np.int64)


def non_max_suppression(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    *,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_det: int = 300,
    max_nms: int = 30000,
    class_offset: float | None = MAX_WH,
) -> np.ndarray:
    """YOLOv5's single-label NMS for one image on decoded boxes; returns kept indices into the N boxes.

    ``boxes`` [N, 4] corners, ``scores`` [N] (objectness × best class score), ``classes`` [N] (best class).
    Candidates have ``score > conf_threshold``; the best ``max_nms`` of them (score descending, ties by
    index) go through class-aware NMS; the first ``max_det`` kept are returned, best first.
    """
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    cand = np.nonzero(scores > np.float32(conf_threshold))[0]
    cand = cand[order(scores[cand])][:max_nms]
    kept = nms(
        _as_boxes(boxes)[cand],
        scores[cand],
        iou_threshold,
        np.asarray(classes).reshape(-1)[cand],
        class_offset=class_offset,
        max_keep=max_det,
    )
    return cand[kept]


def batched_non_max_suppression(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    **kwargs,
) -> list[np.ndarray]:
    """:func:`non_max_suppression` per image of a batch ([B, N, 4], [B, N], [B, N]); a list of index arrays."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 3:
        raise ValueError(f"batched boxes must be [B, N, 4], got shape {boxes.shape}")
    return [non_max_suppression(boxes[b], scores[b], classes[b], **kwargs) for b in range(boxes.shape[0])]


def gpu_non_max_suppression(
    boxes,
    scores,
    classes,
    *,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_det: int = 300,
    max_nms: int = 30000,
):
    """:func:`non_max_suppression` per image of a batch of torch CUDA tensors -- ``boxes`` [B, N, 4] as (cx, cy,
    w, h), ``scores`` [B, N], ``classes`` [B, N] -- on the GPU, by the ``nms`` plugin's kernels, exactly per class.

    Returns device tensors ``num`` [B] int32 and ``records`` [B, max_det, 8] (cx, cy, w, h, score, class, 0, box
    index), the first ``num[b]`` rows of image b kept, best first (ties by box index). When N exceeds ``max_nms``
    (or the kernels' row limit), the best of them by score go in, as yolov5 keeps its best max_nms candidates.
    """
    import torch

    from plugins import nms as nms_plugin

    boxes, scores, classes = boxes.float(), scores.float(), classes.float()
    b, n = scores.shape
    limit = min(max_nms, nms_plugin.MAX_SLOTS)
    if n <= limit:
        idx = torch.arange(n, device=scores.device).expand(b, n)
    else:  # the best boxes only (a superset of the best max_nms candidates), kept in box order
        idx = torch.topk(scores, limit, dim=1).indices.sort(dim=1).values
    pick = lambda t: t.gather(1, idx)  # noqa: E731
    records = torch.stack(
        [*(pick(boxes[..., k]) for k in range(4)), pick(scores), pick(classes), torch.zeros_like(pick(scores)),
         idx.float()], dim=-1,
    ).contiguous()  # fmt: skip
    num = torch.full((b,), records.shape[1], dtype=torch.int32, device=scores.device)
    return nms_plugin.run([num, records], iou_threshold=iou_threshold, score_threshold=conf_threshold,
                          max_det=max_det)  # fmt: skip
