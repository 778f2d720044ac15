"""In-network post-processing, and ``define``: the head's outputs decoded the way ``Detect._inference`` decodes
them (DFL, dist2bbox / dist2rbox and the angle, keypoints with their visibility sigmoid, mask coefficients beside
the prototypes), in fp32, then the outputs ``--postprocess`` asks for.

``native``: ``boxes`` [B, A, 4] (cx, cy, w, h in input pixels; OBB: the rotated box's), ``scores`` [B, A, nc]
(every class's sigmoid), and per task ``masks`` [B, A, nm] + ``proto`` [B, nm, H/4, W/4], ``keypoints``
[B, A, K*D] (x, y in pixels[, visibility]), ``angles`` [B, A] (radians): ultralytics' prediction ``y``
(B, 4 + nc + extra, A), transposed and split -- what its non_max_suppression takes. ``none``: the head's raw
outputs (Detect.forward_head).

An end-to-end head's one-to-one branch (YOLOv10, YOLO26; ``--head one2one``) ends instead in ultralytics' end2end
post-processing, a top-k and no NMS: ``det_boxes`` [B, k, 4] (x1, y1, x2, y2; OBB: cx, cy, w, h), ``det_scores``,
``det_classes``, ``det_index`` (the anchor) [B, k] and the task's ``det_masks`` + ``proto``, ``det_keypoints``,
``det_angles``, best first (:func:`end2end_outputs`). ``check`` also outputs the candidates the top-k chooses
from, as ``native`` names them (boxes as corners), which it compares element by element.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netdefs.common import concat
from netdefs.ultralytics import model
from netdefs.ultralytics.arch import END2END, HEAD
from netdefs.ultralytics.config import INPUT, Config, meta
from trtx.net import Net, NetdefError


def define(net: Net, cfg: Config) -> None:
    """DetectionModel / SegmentationModel / PoseModel / OBBModel / ClassificationModel forward, then the
    post-processing of ``cfg.postprocess``."""
    h, w = cfg.imgsz
    net.network.name = cfg.model_name
    net.meta["ultralytics"] = meta(cfg)  # first: the blocks read bn_eps and attention from it
    for key in WTS_EXTRAS:  # gen_wts.py's records of kpt_shape and names, read by configure
        if f"{cfg.arch.prefix}.{key}" in net.weights:
            net.weights[f"{cfg.arch.prefix}.{key}"]
    x = net.input(INPUT, (-1, 3, h, w))
    branch = {"one2one": cfg.end2end} if cfg.family in END2END else {}
    out = model.NETWORKS[cfg.family](net, x, cfg.task, **branch)
    if cfg.task == "cls":
        prob = net.network.add_softmax(net.to_fp32(out, "softmax.to_fp32"))
        prob.axes = 1 << 1
        net.output(out, "logits")
        net.output(net.name(prob, "softmax").get_output(0), "prob")
        return
    path = f"model.{HEAD[cfg.family]}"
    if cfg.postprocess == "none":
        for key, name in RAW_OUTPUTS.items():
            if key in out:
                net.output(out[key], name)
        return
    if cfg.postprocess == "plugin":
        plugin_outputs(net, out, cfg, path)
        return
    pred = decode(net, out, cfg, path)
    if cfg.end2end:
        end2end_outputs(net, pred, cfg, f"{path}.topk")
    if not cfg.end2end or cfg.candidates:
        native_outputs(net, pred, cfg, f"{path}.post")


#: entries gen_wts.py adds to the head (netdefs/ultralytics/source.py) that the PyTorch model has no tensor for
WTS_EXTRAS = ("kpt_shape", "names")
#: Detect.forward_head's dict -> the output names of --postprocess none
RAW_OUTPUTS = {
    "boxes": "raw_boxes",
    "scores": "raw_scores",
    "mask_coefficient": "raw_masks",
    "kpts": "raw_kpts",
    "angle": "raw_angle",
    "proto": "proto",
}


def decode(net: Net, raw: dict[str, Any], cfg: Config, path: str) -> dict[str, Any]:
    """Detect._inference per part, [B, C, A] in fp32: {"boxes" (xywh pixels; end-to-end: corners), "scores"
    (sigmoid), "masks", "keypoints" (decoded), "angle"} -- the rows of ultralytics' ``y`` (B, 4 + nc + extra, A)."""
    nw, trt = net.network, net.trt
    a = int(raw["boxes"].shape[2])
    anchors, strides = anchor_points(cfg, a)
    anchors = net.constant(anchors[None], f"{path}.anchors", np.float32)  # [1, 2, A]
    strides = net.constant(strides[None, None], f"{path}.strides", np.float32)  # [1, 1, A]
    if cfg.reg_max > 1:
        dist = model.dfl(net, raw["boxes"], f"{path}.dfl")
    else:  # YOLO26: the distances themselves, no DFL
        dist = net.to_fp32(raw["boxes"], f"{path}.boxes.to_fp32")
    angle = net.to_fp32(raw["angle"], f"{path}.angle.to_fp32") if cfg.task == "obb" else None
    if cfg.task == "obb":
        box = dist2rbox(net, dist, angle, anchors, f"{path}.dist2rbox")
    else:
        box = dist2bbox(net, dist, anchors, f"{path}.dist2bbox", xywh=not cfg.end2end)
    out = {"boxes": _op(net, box, strides, trt.ElementWiseOperation.PROD, f"{path}.dbox")}
    scores = nw.add_activation(net.to_fp32(raw["scores"], f"{path}.scores.to_fp32"), trt.ActivationType.SIGMOID)
    out["scores"] = net.name(scores, f"{path}.scores.sigmoid").get_output(0)
    if cfg.task == "seg":
        out["masks"] = net.to_fp32(raw["mask_coefficient"], f"{path}.mask_coefficient.to_fp32")
        out["proto"] = raw["proto"]
    if cfg.task == "pose":
        out["keypoints"] = kpts_decode(net, raw["kpts"], anchors, strides, cfg.kpt_shape, f"{path}.kpts_decode",
                                       yolo26=cfg.family == "yolo26")  # fmt: skip
    if cfg.task == "obb":
        out["angle"] = angle
    return out


def anchor_points(cfg: Config, total: int) -> tuple[np.ndarray, np.ndarray]:
    """make_anchors(feats, strides, 0.5): cell centers (x, y) [2, A] in grid units and each anchor's stride [A],
    level by level, rows then columns."""
    h, w = cfg.imgsz
    points, strides = [], []
    for s in cfg.strides:
        ny, nx = h // s, w // s
        sy, sx = np.meshgrid(
            np.arange(ny, dtype=np.float32) + 0.5, np.arange(nx, dtype=np.float32) + 0.5, indexing="ij"
        )
        points.append(np.stack([sx.reshape(-1), sy.reshape(-1)]))
        strides.append(np.full(ny * nx, s, np.float32))
    points, strides = np.concatenate(points, 1), np.concatenate(strides)
    if points.shape[1] != total:
        raise NetdefError(f"the head has {total} anchors but strides {cfg.strides} at {h}x{w} make {points.shape[1]}")
    return points, strides


def dist2bbox(net: Net, dist, anchors, name: str, xywh: bool = True):
    """ultralytics.utils.tal.dist2bbox(xywh, dim=1): (left, top, right, bottom) from the anchor point ->
    (cx, cy, w, h), or the corners (x1, y1, x2, y2) where ``xywh`` is False (end-to-end heads); [B, 4, A] in grid
    units."""
    E = net.trt.ElementWiseOperation
    lt, rb = _rows(net, dist, [0, 1], f"{name}.lt"), _rows(net, dist, [2, 3], f"{name}.rb")
    x1y1 = _op(net, anchors, lt, E.SUB, f"{name}.x1y1")
    x2y2 = _op(net, anchors, rb, E.SUM, f"{name}.x2y2")
    if not xywh:
        return concat(net, [x1y1, x2y2], name, axis=1)
    two = net.constant(np.full((1, 1, 1), 2.0, np.float32), f"{name}.two", np.float32)
    c_xy = _op(net, _op(net, x1y1, x2y2, E.SUM, f"{name}.xy_sum"), two, E.DIV, f"{name}.c_xy")
    wh = _op(net, x2y2, x1y1, E.SUB, f"{name}.wh")
    return concat(net, [c_xy, wh], name, axis=1)


def dist2rbox(net: Net, dist, angle, anchors, name: str):
    """ultralytics.utils.tal.dist2rbox(dim=1): the center offset (rb - lt) / 2 rotated by the angle, plus the
    anchor point; width and height lt + rb. [B, 4, A] in grid units."""
    E, U = net.trt.ElementWiseOperation, net.trt.UnaryOperation
    nw = net.network
    lt, rb = _rows(net, dist, [0, 1], f"{name}.lt"), _rows(net, dist, [2, 3], f"{name}.rb")
    angle = net.to_fp32(angle, f"{name}.angle.to_fp32")
    cos = net.name(nw.add_unary(angle, U.COS), f"{name}.cos").get_output(0)
    sin = net.name(nw.add_unary(angle, U.SIN), f"{name}.sin").get_output(0)
    two = net.constant(np.full((1, 1, 1), 2.0, np.float32), f"{name}.two", np.float32)
    half = _op(net, _op(net, rb, lt, E.SUB, f"{name}.rb_lt"), two, E.DIV, f"{name}.half")
    xf, yf = _rows(net, half, [0], f"{name}.xf"), _rows(net, half, [1], f"{name}.yf")
    x = _op(
        net,
        _op(net, xf, cos, E.PROD, f"{name}.xf_cos"),
        _op(net, yf, sin, E.PROD, f"{name}.yf_sin"),
        E.SUB,
        f"{name}.x",
    )
    y = _op(
        net,
        _op(net, xf, sin, E.PROD, f"{name}.xf_sin"),
        _op(net, yf, cos, E.PROD, f"{name}.yf_cos"),
        E.SUM,
        f"{name}.y",
    )
    xy = _op(net, concat(net, [x, y], f"{name}.xy_rot", axis=1), anchors, E.SUM, f"{name}.xy")
    return concat(net, [xy, _op(net, lt, rb, E.SUM, f"{name}.wh")], name, axis=1)


def kpts_decode(net: Net, kpts, anchors, strides, kpt_shape: tuple[int, int], name: str, yolo26: bool = False):
    """Pose.kpts_decode: x, y = (raw * 2 + (anchor - 0.5)) * stride (Pose26: (raw + anchor) * stride); visibility
    = sigmoid(raw). [B, K*D, A]."""
    E = net.trt.ElementWiseOperation
    nw = net.network
    k, d = kpt_shape
    a = int(kpts.shape[2])
    grid = nw.add_shuffle(net.to_fp32(kpts, f"{name}.to_fp32"))
    grid.reshape_dims = (0, k, d, a)
    y = net.name(grid, f"{name}.view").get_output(0)
    xy = _rows(net, y, [0, 1], f"{name}.xy", axis=2)
    if yolo26:
        offset = _reshape(net, anchors, (1, 1, 2, a), f"{name}.anchor_offset4")
    else:
        two = net.constant(np.full((1, 1, 1, 1), 2.0, np.float32), f"{name}.two", np.float32)
        xy = _op(net, xy, two, E.PROD, f"{name}.xy2")
        half = net.constant(np.full((1, 1, 1), 0.5, np.float32), f"{name}.half", np.float32)
        offset = _op(net, anchors, half, E.SUB, f"{name}.anchor_offset")  # [1, 2, A]
        offset = _reshape(net, offset, (1, 1, 2, a), f"{name}.anchor_offset4")
    xy = _op(
        net,
        _op(net, xy, offset, E.SUM, f"{name}.xy_shift"),
        _reshape(net, strides, (1, 1, 1, a), f"{name}.strides4"),
        E.PROD,
        f"{name}.xy_px",
    )
    parts = [xy]
    if d == 3:
        vis = nw.add_activation(_rows(net, y, [2], f"{name}.vis_logit", axis=2), net.trt.ActivationType.SIGMOID)
        parts.append(net.name(vis, f"{name}.vis").get_output(0))
    return _reshape(net, concat(net, parts, f"{name}.cat", axis=2), (0, k * d, a), name)


def native_outputs(net: Net, pred: dict[str, Any], cfg: Config, path: str) -> None:
    """[B, C, A] parts -> the native outputs [B, A, C] (angles [B, A]); protos as they are. The scores of every
    class, as ultralytics' ``y`` has them: the best class is taken after the engine, where a near tie between two
    classes is no longer an output that fp16 rounding can flip."""
    a = int(pred["boxes"].shape[2])
    net.output(_transpose(net, pred["boxes"], f"{path}.boxes"), "boxes")
    net.output(_transpose(net, pred["scores"], f"{path}.scores"), "scores")
    if "masks" in pred:
        net.output(_transpose(net, pred["masks"], f"{path}.masks"), "masks")
        net.output(pred["proto"], "proto")
    if "keypoints" in pred:
        net.output(_transpose(net, pred["keypoints"], f"{path}.keypoints"), "keypoints")
    if "angle" in pred:
        net.output(_reshape(net, pred["angle"], (0, a), f"{path}.angles"), "angles")


def end2end_outputs(net: Net, pred: dict[str, Any], cfg: Config, path: str) -> None:
    """ultralytics' end2end post-processing (Detect.postprocess, get_topk_index): the best k = min(max_det, A)
    anchors by their best class score, then the best k (anchor, class) pairs among those anchors' k x nc scores --
    per pair its box, score, class, anchor and the task's extras, best first. No NMS; the confidence threshold is
    left to after the engine, where ultralytics applies it too."""
    nw, trt = net.network, net.trt
    E = trt.ElementWiseOperation
    a, nc = int(pred["scores"].shape[2]), cfg.num_classes
    k = min(cfg.max_det, a)
    scores = _transpose(net, pred["scores"], f"{path}.scores_t")  # [B, A, nc]
    best = net.name(nw.add_reduce(scores, trt.ReduceOperation.MAX, 1 << 2, False), f"{path}.best").get_output(0)
    anchors = net.name(nw.add_topk(best, trt.TopKOperation.MAX, k, 1 << 1), f"{path}.anchors").get_output(1)
    pairs = _take(net, scores, anchors, f"{path}.anchor_scores")  # [B, k, nc]
    pairs = _reshape(net, pairs, (0, k * nc), f"{path}.pairs")
    top = net.name(nw.add_topk(pairs, trt.TopKOperation.MAX, k, 1 << 1), f"{path}.pair_topk")
    index = top.get_output(1)  # anchor slot * nc + class
    ncs = net.constant(np.full((1, 1), nc, np.int32), f"{path}.nc", np.int32)
    slot = _op(net, index, ncs, E.FLOOR_DIV, f"{path}.slot")
    classes = _op(net, index, _op(net, slot, ncs, E.PROD, f"{path}.slot_nc"), E.SUB, f"{path}.classes")
    anchor = _take(net, anchors, slot, f"{path}.index")  # [B, k]
    net.output(_take(net, _transpose(net, pred["boxes"], f"{path}.boxes_t"), anchor, f"{path}.boxes"), "det_boxes")
    net.output(top.get_output(0), "det_scores")
    net.output(classes, "det_classes", np.int32)
    net.output(anchor, "det_index", np.int32)
    if "masks" in pred:
        net.output(_take(net, _transpose(net, pred["masks"], f"{path}.masks_t"), anchor, f"{path}.masks"), "det_masks")
        if not cfg.candidates:  # else with the candidates
            net.output(pred["proto"], "proto")
    if "keypoints" in pred:
        kpts = _take(net, _transpose(net, pred["keypoints"], f"{path}.keypoints_t"), anchor, f"{path}.keypoints")
        net.output(kpts, "det_keypoints")
    if "angle" in pred:
        angles = _take(net, _reshape(net, pred["angle"], (0, a), f"{path}.angles_a"), anchor, f"{path}.angles")
        net.output(angles, "det_angles")


def _take(net: Net, data, index, name: str):
    """Per image, the rows ``index`` [B, k] of ``data`` [B, N, ...] -> [B, k, ...] (``torch.gather`` along 1)."""
    layer = net.network.add_gather(data, index, 1)
    layer.num_elementwise_dims = 1
    return net.name(layer, name).get_output(0)


def plugin_outputs(net: Net, raw: dict[str, Any], cfg: Config, path: str) -> None:
    """tensorrtx's way, with the plugins' kernels: the head's parts concatenated in fp32, the ``dfl_decode`` plugin
    (decode + confidence filter), then the ``nms`` plugin (OBB: ``rotated_nms``, ultralytics' Fast NMS). Outputs
    ``num`` [B] and ``dets`` [B, max_det, 8] (cx, cy, w, h, score, class, angle, anchor index), and the kept
    anchors' ``det_masks`` [B, max_det, nm] (+ ``proto``) or decoded ``det_keypoints`` [B, max_det, K*D]."""
    from plugins import dfl_decode, nms, rotated_nms

    bins = np.arange(cfg.reg_max, dtype=np.float32)
    if cfg.reg_max > 1 and not np.array_equal(net.array(f"{path}.dfl.conv.weight").reshape(-1), bins):
        raise NetdefError(
            f"--postprocess plugin: the dfl_decode kernel has the DFL's fixed weights 0.."
            f"{cfg.reg_max - 1}, but {path}.dfl.conv.weight holds others; use --postprocess native"
        )
    parts = ["boxes", "scores", "angle"] if cfg.task == "obb" else ["boxes", "scores"]
    head = concat(net, [net.to_fp32(raw[k], f"{path}.{k}.to_fp32") for k in parts], f"{path}.head", axis=1)
    a = int(head.shape[2])
    h, w = cfg.imgsz
    decoded = dfl_decode.add_to_network(
        net, [head], name=f"{path}.decode", num_classes=cfg.num_classes, reg_max=cfg.reg_max, strides=cfg.strides,
        height=h, width=w, angle=cfg.task == "obb", conf_threshold=cfg.conf, max_det=min(a, nms.MAX_SLOTS),
    )  # fmt: skip
    after = rotated_nms if cfg.task == "obb" else nms
    kept = after.add_to_network(net, [decoded.get_output(0), decoded.get_output(1)], name=f"{path}.nms",
                                iou_threshold=cfg.iou, score_threshold=cfg.conf, max_det=cfg.max_det)  # fmt: skip
    dets = kept.get_output(1)
    net.output(kept.get_output(0), "num", np.int32)
    net.output(dets, "dets")
    extras = {}
    if cfg.task == "seg":
        extras["det_masks"] = net.to_fp32(raw["mask_coefficient"], f"{path}.mask_coefficient.to_fp32")
    if cfg.task == "pose":
        anchors, strides = anchor_points(cfg, a)
        anchors = net.constant(anchors[None], f"{path}.anchors", np.float32)
        strides = net.constant(strides[None, None], f"{path}.strides", np.float32)
        extras["det_keypoints"] = kpts_decode(net, raw["kpts"], anchors, strides, cfg.kpt_shape, f"{path}.kpts_decode")
    if extras:
        index = net.cast(_rows(net, dets, [7], f"{path}.nms.anchor_index", axis=2), np.int32, f"{path}.nms.index")
        for name, values in extras.items():  # [B, C, A] -> the kept anchors' [B, max_det, C]
            pick = net.network.add_gather_v2(_transpose(net, values, f"{path}.{name}.t"), index,
                                             net.trt.GatherMode.ND)  # fmt: skip
            pick.num_elementwise_dims = 1  # per image: values[b, index[b, k]]
            net.output(net.name(pick, f"{path}.{name}").get_output(0), name)
    if cfg.task == "seg":
        net.output(raw["proto"], "proto")


# ---- small helpers ----------------------------------------------------------------------------------------
def _op(net: Net, a, b, kind, name: str):
    return net.name(net.network.add_elementwise(a, b, kind), name).get_output(0)


def _rows(net: Net, x, indices, name: str, axis: int = 1):
    idx = net.constant(np.asarray(indices, np.int32), f"{name}.indices", np.int32)
    return net.name(net.network.add_gather(x, idx, axis), name).get_output(0)


def _reshape(net: Net, x, dims, name: str):
    layer = net.network.add_shuffle(x)
    layer.reshape_dims = dims
    return net.name(layer, name).get_output(0)


def _transpose(net: Net, x, name: str):
    """[B, C, A] -> [B, A, C]."""
    layer = net.network.add_shuffle(x)
    layer.first_transpose = (0, 2, 1)
    return net.name(layer, name).get_output(0)
