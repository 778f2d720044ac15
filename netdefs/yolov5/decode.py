"""``define``: the network (:mod:`netdefs.yolov5.model`), then the post-processing ``--postprocess`` asks for.

``native`` decodes boxes in TensorRT layers as Detect.forward does at inference, takes each box's best class
and its score (yolov5's non_max_suppression up to the NMS itself), and ends either in TensorRT's NMS layer
(engines built where the backend's builder has one) or at those candidates, with NMS right after the engine;
``plugin`` uses the ``yolo_decode`` + ``nms`` plugins; ``none`` outputs the raw head.
"""

from __future__ import annotations

import numpy as np

from netdefs.common import concat, constant, elementwise, gather, reshape
from netdefs.detection.decode import best_class
from netdefs.detection.nms import gather_selected, nms_layer
from netdefs.yolov5.config import INPUT, Config, detector_meta, meta
from netdefs.yolov5.model import yolov5
from netdefs.yolov5.source import WTS_EXTRAS
from trtx.net import Net, NetdefError


def define(net: Net, cfg: Config) -> None:
    """Mirrors DetectionModel / SegmentationModel / ClassificationModel forward, then the post-processing."""
    h, w = cfg.imgsz
    net.network.name = cfg.model_name
    x = net.input(INPUT, (-1, 3, h, w))
    if cfg.task == "cls":
        logits = yolov5(net, x, cfg.task, cfg.p6)
        prob = net.network.add_softmax(net.to_fp32(logits, "softmax.to_fp32"))
        prob.axes = 1 << 1
        net.output(logits, "logits")
        net.output(net.name(prob, "softmax").get_output(0), "prob")
    else:
        raw, protos = yolov5(net, x, cfg.task, cfg.p6)
        path = f"model.{cfg.arch.head}"
        for key in ("anchors", *WTS_EXTRAS):  # read in configure: decode's constants
            if f"{path}.{key}" in net.weights:
                net.weights[f"{path}.{key}"]
        if cfg.postprocess == "none":
            for i, r in enumerate(raw):
                net.output(r, f"raw{i}")
        elif cfg.postprocess == "plugin":
            plugin_postprocess(net, raw, cfg, path)
        else:
            native_postprocess(net, decode(net, raw, cfg, path), cfg, path)
        if protos is not None:
            net.output(protos, "proto")
    net.meta["yolov5"] = meta(cfg)
    if cfg.task == "detect" and cfg.postprocess == "native":
        net.meta["detector"] = detector_meta(cfg)


def decode(net: Net, raw: list, cfg: Config, path: str):
    """Detect.forward at inference: per level, [B, na*no, ny, nx] -> [B, na, ny, nx, no] -> sigmoid ->
    xy = (2σ + grid) * stride, wh = (2σ)² * anchor (Segment: mask coefficients stay raw), concatenated to
    [B, N, no] -- the tensor yolov5's non_max_suppression takes. In fp32.

    Written as y = σ·(a + σ·q) + gx + gy (+ x·m for masks) with small broadcast constants, so no layer slices
    the (dynamic) batch axis: a = 2·stride on x, y and 1 on the scores; q = 4·anchor on w, h; gx, gy =
    (cell - 0.5)·stride on x, y; m = 1 on the mask coefficients.
    """
    trt, nw = net.trt, net.network
    na, no, nc = cfg.num_anchors, 5 + cfg.num_classes + cfg.num_masks, cfg.num_classes
    levels = []
    for i, r in enumerate(raw):
        ny, nx = int(r.shape[2]), int(r.shape[3])
        s = float(cfg.strides[i])
        p = f"{path}.decode.{i}"
        shuffle = nw.add_shuffle(net.to_fp32(r, f"{p}.to_fp32"))
        shuffle.reshape_dims = (0, na, no, ny, nx)
        shuffle.second_transpose = (0, 1, 3, 4, 2)
        t = net.name(shuffle, f"{p}.permute").get_output(0)  # x[i] of Detect.forward: [B, na, ny, nx, no]
        sig = net.name(nw.add_activation(t, trt.ActivationType.SIGMOID), f"{p}.sigmoid").get_output(0)
        a = np.zeros((1, 1, 1, 1, no), np.float32)
        a[..., 0:2] = 2 * s
        a[..., 4 : 5 + nc] = 1.0
        q = np.zeros((1, na, 1, 1, no), np.float32)
        q[0, :, 0, 0, 2:4] = 4 * np.asarray(cfg.anchors[i], np.float32)
        gx = np.zeros((1, 1, 1, nx, no), np.float32)
        gx[0, 0, 0, :, 0] = (np.arange(nx, dtype=np.float32) - 0.5) * s
        gy = np.zeros((1, 1, ny, 1, no), np.float32)
        gy[0, 0, :, 0, 1] = (np.arange(ny, dtype=np.float32) - 0.5) * s
        y = elementwise(net, sig, constant(net, q, f"{p}.anchor4"), "PROD", f"{p}.wh_sq")
        y = elementwise(net, y, constant(net, a, f"{p}.gain"), "SUM", f"{p}.gain_add")
        y = elementwise(net, sig, y, "PROD", f"{p}.mul")
        y = elementwise(net, y, constant(net, gx, f"{p}.grid_x"), "SUM", f"{p}.grid_x_add")
        y = elementwise(net, y, constant(net, gy, f"{p}.grid_y"), "SUM", f"{p}.grid_y_add")
        if cfg.num_masks:
            m = np.zeros((1, 1, 1, 1, no), np.float32)
            m[..., 5 + nc :] = 1.0
            masks = elementwise(net, t, constant(net, m, f"{p}.mask_select"), "PROD", f"{p}.mask")
            y = elementwise(net, y, masks, "SUM", f"{p}.mask_add")
        levels.append(reshape(net, y, (0, na * ny * nx, no), f"{p}.flatten"))
    return concat(net, levels, f"{path}.decoded", axis=1)


def native_postprocess(net: Net, pred, cfg: Config, path: str) -> None:
    """From [B, N, no]: boxes (cx, cy, w, h as decoded), score = obj x best class score and that class --
    yolov5's non_max_suppression up to the NMS itself -- then TensorRT's NMS layer where the engine has it
    (outputs det_batch, det_index, det_boxes, det_scores, det_classes[, det_masks]: one row per detection of
    the whole batch)."""
    nc, nm = cfg.num_classes, cfg.num_masks
    p = f"{path}.post"
    boxes = gather(net, pred, [0, 1, 2, 3], f"{p}.boxes", axis=2)
    obj = gather(net, pred, [4], f"{p}.obj", axis=2)
    conf = elementwise(net, gather(net, pred, range(5, 5 + nc), f"{p}.cls", axis=2), obj, "PROD", f"{p}.conf")
    scores, classes = best_class(net, conf, f"{p}.best")
    masks = gather(net, pred, range(5 + nc, 5 + nc + nm), f"{p}.masks", axis=2) if nm else None
    values = {"boxes": boxes, "scores": scores, "classes": classes, **({"masks": masks} if nm else {})}
    if cfg.nms_in_engine:
        selected = nms_layer(net, boxes, scores, cfg.rule, f"{p}.nms", classes=classes, center=True)
        values = gather_selected(net, selected, values, f"{p}.nms")
        net.output(values.pop("batch"), "det_batch", np.int32)
        net.output(values.pop("index"), "det_index", np.int32)
    for key, tensor in values.items():
        net.output(tensor, f"det_{key}" if cfg.nms_in_engine else key, np.int32 if key == "classes" else None)


def plugin_postprocess(net: Net, raw: list, cfg: Config, path: str) -> None:
    """tensorrtx's way: the ``yolo_decode`` plugin per level (decode + confidence filter), then the ``nms``
    plugin over all levels: outputs ``num`` [B] and ``dets`` [B, max_det, 8] (cx, cy, w, h, score, class,
    level, anchor index)."""
    from plugins import nms as nms_plugin
    from plugins import yolo_decode

    if cfg.num_masks:
        raise NetdefError("--postprocess plugin: the yolo_decode plugin has no mask coefficients; build seg "
                          "models with --postprocess native or none")  # fmt: skip
    sizes = [cfg.num_anchors * int(r.shape[2]) * int(r.shape[3]) for r in raw]
    cap = nms_plugin.MAX_SLOTS // len(raw)  # the nms plugin takes at most MAX_SLOTS rows per image
    pairs = []
    for i, r in enumerate(raw):
        anchors = [float(v) for pair in cfg.anchors[i] for v in pair]
        layer = yolo_decode.add_to_network(
            net, [r], name=f"{path}.decode.{i}", num_classes=cfg.num_classes, anchors=anchors,
            stride=float(cfg.strides[i]), conf_threshold=cfg.conf, max_det=min(sizes[i], cap), level=i,
        )  # fmt: skip
        pairs += [layer.get_output(0), layer.get_output(1)]
    layer = nms_plugin.add_to_network(net, pairs, name=f"{path}.nms", iou_threshold=cfg.iou,
                                      score_threshold=cfg.conf, max_det=cfg.max_det)  # fmt: skip
    net.output(layer.get_output(0), "num", np.int32)
    net.output(layer.get_output(1), "dets")
