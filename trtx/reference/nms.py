"""INMSLayer: docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/NMS.html.

Per batch item, candidates (box, class) whose score exceeds the score threshold are sorted by score regardless of
class and cut to ``topk_box_limit``; walking them in decreasing score, a candidate is selected when its class has
fewer than MaxOutputBoxesPerClass selections and its IoU with every selected box of the same class is <= the IoU
threshold. Output 0 lists [batch, class, box] in selection order, batch by batch; output 1 is their count.
Equal scores are ordered by box index, then class (TensorRT leaves that order unspecified).
"""

from __future__ import annotations

import torch

from trtx.reference.core import LayerCall, implements


def _corners(boxes: torch.Tensor, fmt: str) -> torch.Tensor:
    if fmt == "CENTER_SIZES":
        cx, cy, w, h = boxes.unbind(-1)
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    x1, y1, x2, y2 = boxes.unbind(-1)  # any pair of diagonal corners
    return torch.stack([torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)], -1)


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda t: (t[..., 2:] - t[..., :2]).clamp(min=0).prod(-1)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(union))


@implements("NMS")
def nms(call: LayerCall) -> list[torch.Tensor]:
    layer = call.layer
    boxes, scores = call.x(0).float(), call.x(1).float()
    max_per_class = call.ints(call.input(2))[0]
    iou_t = call.optional(3)
    score_t = call.optional(4)
    iou_threshold = float(iou_t.reshape(-1)[0]) if iou_t is not None else 0.0
    score_threshold = float(score_t.reshape(-1)[0]) if score_t is not None else 0.0
    fmt = layer.bounding_box_format.name
    if fmt not in ("CORNER_PAIRS", "CENTER_SIZES"):
        raise call.unsupported("bounding_box_format", layer.bounding_box_format)
    limit = int(layer.topk_box_limit)
    batch, num_boxes, num_classes = scores.shape
    per_class_boxes = boxes.dim() == 4
    corners = _corners(boxes, fmt)
    selected: list[list[int]] = []
    for b in range(batch):
        flat = scores[b].reshape(-1)  # index = box * num_classes + class
        keep = torch.nonzero(flat > score_threshold).reshape(-1)
        order = keep[torch.argsort(-flat[keep], stable=True)][:limit].tolist()
        chosen: dict[int, list[int]] = {}
        for i in order:
            box, cls = divmod(i, num_classes)
            picked = chosen.setdefault(cls, [])
            if len(picked) >= max_per_class:
                continue
            cand = corners[b, box, cls] if per_class_boxes else corners[b, box]
            if picked:
                prev = corners[b, picked, cls] if per_class_boxes else corners[b, picked]
                if bool((_iou(cand[None], prev) > iou_threshold).any()):
                    continue
            picked.append(box)
            selected.append([b, cls, box])
    indices = torch.tensor(selected, dtype=torch.int64, device=call.device).reshape(-1, 3)
    return [indices, torch.tensor(len(selected), dtype=torch.int64, device=call.device)]
