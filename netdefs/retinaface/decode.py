"""``define``: the network (:mod:`netdefs.retinaface.model`), then the post-processing ``--postprocess`` asks for.

``native`` generates the prior boxes for the build's input size and decodes boxes, 5 landmarks and the face
score in TensorRT layers (biubug6's decode, variances 0.1 / 0.2), then TensorRT's NMS layer where the engine has
one; elsewhere the engine ends at the decoded candidates and NMS runs right after it. ``plugin`` uses the
``retinaface_decode`` and ``nms`` plugins. ``none`` outputs the raw heads.
"""

from __future__ import annotations

import numpy as np

from netdefs.common import concat, constant, elementwise, gather, reshape
from netdefs.detection.nms import gather_selected, nms_layer
from netdefs.retinaface.config import INPUT, Config, meta
from netdefs.retinaface.model import retinaface
from netdefs.retinaface.priors import VARIANCE, prior_boxes
from trtx.net import Net


def define(net: Net, cfg: Config) -> None:
    """Mirrors RetinaFace.forward (biubug6 models/retinaface.py), then the chosen post-processing."""
    net.network.name = f"retinaface_{cfg.arch}"
    x = net.input(INPUT, (-1, 3, cfg.height, cfg.width))
    heads = retinaface(net, x, cfg.arch, cfg.out_channel)
    loc, classifications, landms = (net.to_fp32(h, f"{n}.to_fp32") for h, n in zip(heads, HEADS))
    if cfg.postprocess == "none":  # what RetinaFace.forward returns in phase "train": no softmax
        for tensor, name in zip((loc, classifications, landms), HEADS):
            net.output(tensor, name)
    elif cfg.postprocess == "plugin":
        plugin_postprocess(net, loc, classifications, landms, cfg)
    else:
        softmax = net.network.add_softmax(classifications)
        softmax.axes = 1 << 2
        conf = net.name(softmax, "conf").get_output(0)  # F.softmax(classifications, dim=-1)
        boxes, landmarks = decode(net, loc, landms, cfg)
        scores = reshape(net, gather(net, conf, [1], "scores.face", axis=2), (0, -1), "scores")
        if cfg.nms_in_engine:  # outputs face_batch [K], face_boxes [K, 4], face_scores [K], face_landmarks [K, 10]
            selected = nms_layer(net, boxes, scores, cfg.rule, "nms")
            faces = gather_selected(net, selected, {"boxes": boxes, "scores": scores, "landmarks": landmarks}, "nms")
            for key in ("batch", "boxes", "scores", "landmarks"):
                net.output(faces[key], f"face_{key}")
        else:  # the engine ends here; NMS runs right after it
            net.output(boxes, "boxes")
            net.output(scores, "scores")
            net.output(landmarks, "landmarks")
    net.meta["retinaface"] = meta(cfg)


#: the heads' output names (RetinaFace.forward in phase "train")
HEADS = ("bbox_regressions", "classifications", "ldm_regressions")


def decode(net: Net, loc, landms, cfg: Config):
    """biubug6's decode / decode_landm with the priors of this input size, op for op, then × (W, H) into input
    pixels. Returns boxes [N, A, 4] (x1, y1, x2, y2) and landmarks [N, A, 10] (5 × x, y), fp32."""
    a = cfg.num_priors
    priors = prior_boxes(cfg.height, cfg.width)
    center = constant(net, priors[:, :2].reshape(1, a, 1, 2), "decode.prior_center")
    size = constant(net, priors[:, 2:].reshape(1, a, 1, 2), "decode.prior_size")
    var0 = constant(net, np.full((1, 1, 1, 1), VARIANCE[0]), "decode.variance0")
    var1 = constant(net, np.full((1, 1, 1, 1), VARIANCE[1]), "decode.variance1")
    two = constant(net, np.full((1, 1, 1, 1), 2.0), "decode.two")
    scale = constant(net, np.array([cfg.width, cfg.height]).reshape(1, 1, 1, 2), "decode.scale")

    pairs = reshape(net, loc, (0, a, 2, 2), "decode.loc_pairs")  # (dx, dy), (dw, dh)
    dxy = gather(net, pairs, [0], "decode.dxy", axis=2)
    dwh = gather(net, pairs, [1], "decode.dwh", axis=2)
    # priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    offset = elementwise(net, elementwise(net, dxy, var0, "PROD", "decode.dxy_var"), size, "PROD", "decode.offset")
    cxcy = elementwise(net, center, offset, "SUM", "decode.center")
    # priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])
    log_scale = elementwise(net, dwh, var1, "PROD", "decode.dwh_var")
    exp = net.name(net.network.add_unary(log_scale, net.trt.UnaryOperation.EXP), "decode.exp").get_output(0)
    wh = elementwise(net, size, exp, "PROD", "decode.wh")
    half = elementwise(net, wh, two, "DIV", "decode.half_wh")
    x1y1 = elementwise(net, cxcy, half, "SUB", "decode.x1y1")  # boxes[:, :2] -= boxes[:, 2:] / 2
    x2y2 = elementwise(net, wh, x1y1, "SUM", "decode.x2y2")  # boxes[:, 2:] += boxes[:, :2]
    corners = concat(net, [x1y1, x2y2], "decode.corners", axis=2)
    boxes = reshape(net, elementwise(net, corners, scale, "PROD", "decode.corners_px"), (0, a, 4), "boxes")

    points = reshape(net, landms, (0, a, 5, 2), "decode.landm_pairs")
    offset = elementwise(net, elementwise(net, points, var0, "PROD", "decode.landm_var"), size, "PROD",
                         "decode.landm_offset")  # fmt: skip
    points = elementwise(net, elementwise(net, center, offset, "SUM", "decode.landm"), scale, "PROD", "decode.landm_px")
    return boxes, reshape(net, points, (0, a, 10), "landmarks")


def plugin_postprocess(net: Net, loc, classifications, landms, cfg: Config) -> None:
    """retinaface_decode (priors, decode, softmax, score filter) + nms plugins; the kept faces' landmarks are
    gathered by their anchor index. Outputs: ``num_faces`` [N] int32, ``faces`` [N, K, 8] records
    (cx, cy, w, h, score, 0, level, anchor index; rows >= num_faces are zero) and ``face_landmarks`` [N, K, 10]
    (rows >= num_faces hold anchor 0's landmarks), K = keep_top_k."""
    from plugins import nms, retinaface_decode

    trt = net.trt
    decoded = retinaface_decode.add_to_network(
        net, [loc, classifications, landms], name="decode", height=cfg.height, width=cfg.width,
        conf_threshold=cfg.conf, max_det=cfg.top_k,
    )  # fmt: skip
    num, dets, landmarks = (decoded.get_output(i) for i in range(3))
    kept = nms.add_to_network(
        net, [num, dets], name="nms", iou_threshold=cfg.iou, score_threshold=cfg.conf, max_det=cfg.keep_top_k,
        agnostic=True,
    )  # fmt: skip
    faces = kept.get_output(1)
    index = net.cast(gather(net, faces, [7], "nms.anchor_index", axis=2), np.int32, "nms.anchor_index.int32")
    pick = net.network.add_gather_v2(landmarks, index, trt.GatherMode.ND)
    pick.num_elementwise_dims = 1  # per image: landmarks[b, index[b, k]]
    net.output(kept.get_output(0), "num_faces")
    net.output(faces, "faces")
    net.output(net.name(pick, "nms.landmarks").get_output(0), "face_landmarks")
