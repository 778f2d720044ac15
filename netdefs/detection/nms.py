"""NMS, wherever it runs: the rule (:class:`NmsRule`), the exact host NMS, and TensorRT's INMSLayer.

A detector's engine ends either at its decoded candidates (boxes, scores, classes: NMS runs right after the
engine, on the host or with the ``nms`` GPU kernel) or in TensorRT's NMS layer, where the backend's builder
implements one (TensorRT-RTX's has none). :func:`nms_in_engine` decides; ``check`` and the reference executor
always compare up to the candidates, so the layer goes into engines only.

The host NMS is :mod:`trtx.nms` (exact: float32 IoU as torchvision computes it, candidates by score, ties by
index). :func:`nms_layer` wires the INMSLayer the same way: the best ``max_candidates`` by score, class-aware
(exactly, or yolov5's way by shifting boxes ``class x class_offset``), ``max_det`` kept per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdefs.common import concat, constant, elementwise, gather, reshape
from netdefs.detection.boxes import Detections
from trtx import nms as exact
from trtx.net import Net

#: INMSLayer's largest TopK box limit: at most this many candidates per image enter the NMS layer
TRT_NMS_TOPK_LIMIT = 5000


@dataclass(frozen=True)
class NmsRule:
    """How a detector selects its detections from the candidates of one image.

    Candidates with ``score > conf``; the best ``max_candidates`` of them (by score, ties by index; None: all)
    go through greedy NMS, a box suppressing a later one of its class (any class when not ``class_aware``) whose
    IoU with it is greater than ``iou``; the first ``max_det`` kept are the detections. ``class_offset``: class
    awareness yolov5's way, boxes shifted by ``class x class_offset`` in float32 before a class-agnostic NMS
    (the IoU of shifted boxes differs in the last bits, which decides borderline pairs)."""

    conf: float
    iou: float
    max_det: int
    max_candidates: int | None = None
    class_aware: bool = True
    class_offset: float | None = None

    def select(self, candidates: Detections) -> np.ndarray:
        """Indices of the kept candidates, best first (exact CPU NMS, :mod:`trtx.nms`)."""
        classes = candidates.classes if self.class_aware else np.zeros(len(candidates), np.int64)
        return exact.non_max_suppression(
            candidates.boxes, candidates.scores, classes, conf_threshold=self.conf, iou_threshold=self.iou,
            max_det=self.max_det, max_nms=self.max_candidates or len(candidates) or 1,
            class_offset=self.class_offset if self.class_aware else None,
        )  # fmt: skip

    def detect(self, candidates: list[Detections]) -> list[Detections]:
        """Each image's detections (rows of its candidates, ``index`` set), best first."""
        return [c.take(self.select(c)) for c in candidates]


def nms_in_engine(postprocess: str, command: str | None) -> bool:
    """Whether TensorRT's NMS layer ends the network: native post-processing, an engine being built (``build``,
    ``inspect``), and a backend whose builder implements the layer. ``check`` and the reference executor
    compare up to the candidates and run the exact NMS after them."""
    from trtx_base import backend

    if postprocess != "native" or command not in ("build", "inspect"):
        return False
    try:
        return bool(backend.get().has_nms_runner)
    except backend.BackendUnavailable:
        return False


def nms_layer(net: Net, boxes, scores, rule: NmsRule, name: str, *, classes=None, center: bool = False):
    """TensorRT's INMSLayer named ``name`` over ``boxes`` [B, N, 4] (corners, or (cx, cy, w, h) with ``center``)
    and ``scores`` [B, N] (one score per box, of its best class ``classes`` [B, N] int32 when the rule is
    class-aware: boxes are shifted by ``class x rule.class_offset``). Returns the selected [K, 3] int32 rows
    (batch, class, box), image by image, best first; :func:`gather_selected` picks their values."""
    trt, nw = net.trt, net.network
    n = int(boxes.shape[1])
    if rule.class_aware and classes is not None:
        if rule.class_offset is None:
            raise ValueError(f"layer {name}: a class-aware NMS layer over one score per box needs a class_offset")
        cls = reshape(net, net.cast(classes, np.float32, f"{name}.classes_f"), (0, n, 1), f"{name}.classes_f3")
        offset = [[[rule.class_offset, rule.class_offset] + ([0.0, 0.0] if center else [rule.class_offset] * 2)]]
        shift = elementwise(net, cls, constant(net, offset, f"{name}.class_offset"), "PROD", f"{name}.class_shift")
        boxes = elementwise(net, boxes, shift, "SUM", f"{name}.shifted_boxes")
    scores = reshape(net, scores, (0, n, 1), f"{name}.scores3")
    layer = nw.add_nms(boxes, scores, constant(net, rule.max_det, f"{name}.max_det", np.int32))
    layer.set_input(3, constant(net, rule.iou, f"{name}.iou"))
    layer.set_input(4, constant(net, rule.conf, f"{name}.conf"))
    layer.topk_box_limit = min(TRT_NMS_TOPK_LIMIT, n, rule.max_candidates or n)
    layer.bounding_box_format = trt.BoundingBoxFormat.CENTER_SIZES if center else trt.BoundingBoxFormat.CORNER_PAIRS
    return net.name(layer, name).get_output(0)


def gather_selected(net: Net, selected, values: dict, name: str) -> dict:
    """The rows of ``values`` ({key: [B, N, ...] tensor}) that :func:`nms_layer` selected, as {key: [K, ...]},
    plus ``batch`` and ``index`` ([K] int32: the image and the candidate of each)."""
    batch = gather(net, selected, [0], f"{name}.batch_col", axis=1)
    box = gather(net, selected, [2], f"{name}.box_col", axis=1)
    pairs = concat(net, [batch, box], f"{name}.pairs", axis=1)  # [K, 2]: (image, candidate)
    out = {"batch": reshape(net, batch, (-1,), f"{name}.batch"), "index": reshape(net, box, (-1,), f"{name}.index")}
    for key, data in values.items():
        layer = net.network.add_gather_v2(data, pairs, net.trt.GatherMode.ND)
        out[key] = net.name(layer, f"{name}.{key}").get_output(0)
    return out


def unpack_selected(batch: np.ndarray, columns: dict[str, np.ndarray], images: int, conf: float) -> list[dict]:
    """The outputs of an engine that ran NMS, per image: {key: rows} best first (score, then candidate index,
    when ``columns`` has "index"), rows scoring ``conf`` or less dropped (stricter thresholds given at infer
    time). ``images``: the batch size, which TensorRT's NMS outputs do not tell when the last images have none."""
    batch = np.asarray(batch).reshape(-1)
    scores = np.asarray(columns["scores"]).reshape(-1)
    index = np.asarray(columns["index"]).reshape(-1) if "index" in columns else np.zeros_like(batch)
    per = []
    for b in range(images):
        mine = np.nonzero((batch == b) & (scores > np.float32(conf)))[0]
        mine = mine[np.lexsort((index[mine], -scores[mine]))]
        per.append({k: np.asarray(v)[mine] for k, v in columns.items()})
    return per
