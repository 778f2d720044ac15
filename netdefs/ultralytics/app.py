"""Around the network: images in (letterbox; center crop for cls), results out -- ultralytics' NMS after the engine
(exact on the host, or the plugins' GPU kernels for CUDA outputs), boxes, masks, keypoints and rotated boxes back
on the original image, pictures, COCO-style JSON and the printed line."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdefs import imagenet
from netdefs.detection import draw, results
from netdefs.detection.boxes import Detections, xywh2xyxy
from netdefs.detection.nms import NmsRule
from netdefs.ultralytics import rotated
from netdefs.ultralytics.config import INPUT, Config
from trtx import letterbox as lb
from trtx.net import NetdefError

#: COCO's 17-keypoint skeleton (ultralytics' Annotator.skeleton, 1-based) and its limb / keypoint colors
SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9), (8, 10),
            (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))  # fmt: skip
POSE_PALETTE = (
    (255, 128, 0),
    (255, 153, 51),
    (255, 178, 102),
    (230, 230, 0),
    (255, 153, 255),
    (153, 204, 255),
    (255, 102, 255),
    (255, 51, 255),
    (102, 178, 255),
    (51, 153, 255),
    (255, 153, 153),
    (255, 102, 102),
    (255, 51, 51),
    (153, 255, 153),
    (102, 255, 102),
    (51, 255, 51),
    (0, 255, 0),
    (0, 0, 255),
    (255, 0, 0),
    (255, 255, 255),
)  # fmt: skip  (RGB)
LIMB_COLORS = (9, 9, 9, 9, 7, 7, 7, 0, 0, 0, 0, 0, 16, 16, 16, 16, 16, 16, 16)
KPT_COLORS = (16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9)
KPT_VISIBLE = 0.5  # ultralytics draws keypoints whose visibility is above this


@dataclass
class Context:
    """What postprocess needs from preprocess: the original image sizes and their letterbox geometry."""

    shapes: list[tuple[int, int]]
    boxes: list[lb.Letterbox]


def preprocess(images: list[np.ndarray], cfg: Config) -> tuple[dict[str, np.ndarray], Context]:
    """BGR uint8 HWC images -> {"images": [B, 3, H, W] float32 RGB in [0, 1]}: ultralytics' LetterBox
    (auto=False, pad 114), or for cls its classify_transforms (short side to the size, center crop, no
    mean/std)."""
    shapes = [im.shape[:2] for im in images]
    if cfg.task == "cls":
        return {INPUT: np.stack([classify_image(im, cfg.imgsz[0]) for im in images])}, Context(shapes, [])
    batch, geometry = lb.letterbox_batch(images, cfg.imgsz)
    return {INPUT: batch}, Context(shapes, geometry)


def classify_image(bgr: np.ndarray, size: int) -> np.ndarray:
    """classify_transforms(size): the short side resized to ``size`` (antialiased bilinear, torchvision's; ultralytics
    resizes a PIL image, which rounds its weights differently: within a grey level), center crop, /255."""
    rgb = imagenet.center_crop(imagenet.resize_short_side(np.ascontiguousarray(bgr[:, :, ::-1]), size), size)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32) / np.float32(255)


# ---- the detections of native outputs ----------------------------------------------------------------------
def rule(cfg: Config) -> NmsRule:
    """ultralytics' non_max_suppression: best class per box above conf, the best 30000, class-aware greedy NMS
    with boxes shifted by class x 7680 (torchvision.ops.nms), max_det kept."""
    return NmsRule(cfg.conf, cfg.iou, cfg.max_det, rotated.MAX_NMS, class_aware=True, class_offset=rotated.MAX_WH)


def candidates(outputs: dict, cfg: Config) -> list[Detections]:
    """Per image, the candidates NMS (an end-to-end head: its top-k) chooses from: every anchor with its corner
    box, best score and class, every class's score, and the task's extras (mask coefficients, decoded keypoints;
    OBB: the rotated box)."""
    boxes, scores = (np.asarray(outputs[k], np.float32) for k in ("boxes", "scores"))
    if cfg.task == "obb":
        angles = np.asarray(outputs["angles"], np.float32)
        return [rotated.candidates(boxes[b], angles[b], scores[b]) for b in range(len(boxes))]
    extras = {k: np.asarray(outputs[k], np.float32) for k in ("masks", "keypoints") if k in outputs}
    corners = boxes if cfg.end2end else xywh2xyxy(boxes)  # the one-to-one branch decodes to corners
    return [Detections(corners[b], scores[b].max(1), scores[b].argmax(1), {k: v[b] for k, v in extras.items()},
                       np.arange(boxes.shape[1]), scores[b]) for b in range(len(boxes))]  # fmt: skip


def end2end_detections(outputs: dict, cfg: Config) -> list[Detections]:
    """Per image, the detections of an end-to-end head's top-k (``det_*`` outputs): the rows scoring above
    ``conf``, the first ``max_det`` -- ultralytics' non_max_suppression(end2end=True) -- with the anchor each
    came from as ``index``."""
    from netdefs.common import as_numpy

    out = {k: as_numpy(v) for k, v in outputs.items() if k.startswith("det_")}
    per = []
    for b in range(len(out["det_scores"])):
        rows = np.nonzero(out["det_scores"][b] > np.float32(cfg.conf))[0][: cfg.max_det]
        boxes = out["det_boxes"][b, rows].astype(np.float32)
        scores, classes = out["det_scores"][b, rows].astype(np.float32), out["det_classes"][b, rows].astype(np.int64)
        index = out["det_index"][b, rows].astype(np.int64)
        if cfg.task == "obb":
            xywhr = np.concatenate([boxes, out["det_angles"][b, rows, None].astype(np.float32)], 1)
            per.append(Detections(rotated.aabb(xywhr), scores, classes, {"xywhr": xywhr}, index))
            continue
        extras = {k: out[f"det_{k}"][b, rows].astype(np.float32) for k in ("masks", "keypoints") if f"det_{k}" in out}
        per.append(Detections(boxes, scores, classes, extras, index))
    return per


def detect(outputs: dict, cfg: Config) -> list[Detections]:
    """Per image, the detections of native outputs in input pixels, best first: an end-to-end head's top-k above
    conf; else ultralytics' NMS on the host (exact), or, for torch CUDA outputs, the plugins' GPU kernels."""
    if "det_scores" in outputs:
        return end2end_detections(outputs, cfg)
    if "dets" in outputs:
        return from_records(outputs, cfg)
    if getattr(outputs.get("scores"), "is_cuda", False):
        return gpu_detect(outputs, cfg)
    per = candidates(outputs, cfg)
    if cfg.task == "obb":
        return [c.take(rotated.select(c, cfg.conf, cfg.iou, cfg.max_det)) for c in per]
    return rule(cfg).detect(per)


def from_records(outputs: dict, cfg: Config) -> list[Detections]:
    """The detections of an engine whose plugins ran the NMS (``--postprocess plugin``): ``num`` and the records
    ``dets`` (cx, cy, w, h, score, class, angle, anchor index), with the kept anchors' ``det_masks`` /
    ``det_keypoints``; rows scoring ``conf`` or less (a stricter threshold given to infer) dropped."""
    from netdefs.common import as_numpy

    num, dets = as_numpy(outputs["num"]).reshape(-1), as_numpy(outputs["dets"])
    extras = {k[len("det_") :]: as_numpy(outputs[k]) for k in ("det_masks", "det_keypoints") if k in outputs}
    per = []
    for b in range(len(dets)):
        n = min(int(num[b]), dets.shape[1])
        rows = np.nonzero(dets[b, :n, 4] > np.float32(cfg.conf))[0][: cfg.max_det]
        r = dets[b, rows]
        if cfg.task == "obb":
            xywhr = np.concatenate([r[:, :4], r[:, 6:7]], 1)
            per.append(Detections(rotated.aabb(xywhr), r[:, 4], r[:, 5], {"xywhr": xywhr}, r[:, 7].astype(np.int64)))
        else:
            per.append(Detections(xywh2xyxy(r[:, :4]), r[:, 4], r[:, 5], {k: v[b, rows] for k, v in extras.items()},
                                  r[:, 7].astype(np.int64)))  # fmt: skip
    return per


def gpu_detect(outputs: dict, cfg: Config) -> list[Detections]:
    """:func:`detect` for outputs held as torch CUDA tensors: each anchor's record (box, best score and class,
    angle, anchor index) made on the GPU, then the ``nms`` kernels (exactly per class) or, for OBB, the
    ``rotated_nms`` kernels (ultralytics' Fast NMS); the extras of the kept anchors gathered after."""
    import torch

    from plugins import nms, rotated_nms

    boxes, scores = outputs["boxes"].float(), outputs["scores"].float()
    best, cls = scores.max(-1)
    b, a = best.shape
    angle = outputs["angles"].float() if cfg.task == "obb" else torch.zeros_like(best)
    index = torch.arange(a, device=best.device, dtype=torch.float32).expand(b, a)
    records = torch.cat([boxes, best[..., None], cls[..., None].float(), angle[..., None], index[..., None]], -1)
    num = torch.full((b,), a, dtype=torch.int32, device=best.device)
    fields = dict(iou_threshold=cfg.iou, score_threshold=cfg.conf, max_det=cfg.max_det)
    after = rotated_nms if cfg.task == "obb" else nms
    kept_num, kept = (t.cpu().numpy() for t in after.run([num, records.contiguous()], **fields))
    per = []
    for i in range(b):
        r = kept[i, : kept_num[i]]
        idx = r[:, 7].astype(np.int64)
        extras = {k: outputs[k][i][torch.as_tensor(idx, device=best.device)].float().cpu().numpy()
                  for k in ("masks", "keypoints") if k in outputs}  # fmt: skip
        if cfg.task == "obb":
            xywhr = np.concatenate([r[:, :4], r[:, 6:7]], 1)
            per.append(Detections(rotated.aabb(xywhr), r[:, 4], r[:, 5], {"xywhr": xywhr}, idx))
        else:
            per.append(Detections(xywh2xyxy(r[:, :4]), r[:, 4], r[:, 5], extras, idx))
    return per


# ---- results on the original image -------------------------------------------------------------------------
def postprocess(outputs: dict, ctx: Context, cfg: Config) -> list:
    """Network outputs -> one result per image: {"boxes" (original pixels), "scores", "classes"} and per task
    "masks" [K, H0, W0] bool, "keypoints" [K, kpts, 2|3], "xywhr" [K, 5]; cls: the top-5 (id, name, prob)."""
    if cfg.task == "cls":
        prob = np.asarray(outputs["prob"], np.float32)
        return [[(i, cfg.names[i], float(p[i])) for i in imagenet.top_k(p)] for p in prob]
    if cfg.postprocess == "none":
        raise NetdefError("this engine was built with --postprocess none: it outputs the head's raw tensors; decode "
                          "them yourself or rebuild with --postprocess native")  # fmt: skip
    proto = outputs.get("proto")
    if proto is not None and hasattr(proto, "detach"):
        proto = proto.detach().float().cpu().numpy()
    per = []
    for b, det in enumerate(detect(outputs, cfg)):
        g, shape = ctx.boxes[b], ctx.shapes[b]
        res = {"boxes": lb.scale_boxes(det.boxes, cfg.imgsz, shape), "scores": det.scores.copy(),
               "classes": det.classes}  # fmt: skip
        if cfg.task == "seg":
            res["masks"] = process_masks(np.asarray(proto)[b], det.extras["masks"], det.boxes, g)
        if cfg.task == "pose":
            k, d = cfg.kpt_shape
            kpts = det.extras["keypoints"].reshape(-1, k, d).copy()
            kpts[..., :2] = _to_original(kpts[..., :2], g, clip=True)
            res["keypoints"] = kpts
        if cfg.task == "obb":
            xywhr = det.extras["xywhr"].copy()
            xywhr[:, :2] = _to_original(xywhr[:, :2], g)
            xywhr[:, 2:4] /= np.float32(g.r)
            res["xywhr"] = xywhr
            res["boxes"] = rotated.aabb(xywhr)
        per.append(res)
    return per


def _to_original(points: np.ndarray, g: lb.Letterbox, clip: bool = False) -> np.ndarray:
    """Input-pixel (x, y) points back on the original image (ultralytics' scale_coords: minus the padding,
    divided by the gain; clipped to the image when ``clip``)."""
    out = (points - np.array([g.left, g.top], np.float32)) / np.float32(g.r)
    if clip:
        out[..., 0] = out[..., 0].clip(0, g.src[1])
        out[..., 1] = out[..., 1].clip(0, g.src[0])
    return out


def process_masks(protos: np.ndarray, coefs: np.ndarray, boxes: np.ndarray, g: lb.Letterbox) -> np.ndarray:
    """ultralytics' process_mask(upsample=True): coefficients x prototypes, upsampled (bilinear) to the input size,
    > 0, cropped to the box; then the letterbox's padding removed and resized to the original image: [K, H0, W0]."""
    import cv2

    h0, w0 = g.src
    if len(coefs) == 0:
        return np.zeros((0, h0, w0), bool)
    c, mh, mw = protos.shape
    ih, iw = g.dst
    logits = (coefs @ protos.reshape(c, -1)).reshape(-1, mh, mw)
    up = np.stack([cv2.resize(m, (iw, ih), interpolation=cv2.INTER_LINEAR) for m in logits]) > 0
    cols, rows = np.arange(iw)[None, None, :], np.arange(ih)[None, :, None]
    x1, y1, x2, y2 = (boxes[:, k, None, None] for k in range(4))
    up &= (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
    crop = up[:, g.top : g.top + g.new[1], g.left : g.left + g.new[0]].astype(np.uint8)
    return np.stack([cv2.resize(m, (w0, h0), interpolation=cv2.INTER_LINEAR) for m in crop]).astype(bool)


def render(image: np.ndarray, result, cfg: Config) -> np.ndarray:
    """Boxes with labels, masks, skeletons, rotated boxes drawn on a copy of the BGR image (ultralytics' colors)."""
    import cv2

    if cfg.task == "cls":
        return imagenet.render(image, result, cfg)
    out = image.copy()
    colors = [draw.color(c) for c in result["classes"]]
    labels = [draw.label(cfg.names[int(c)], float(s)) for c, s in zip(result["classes"], result["scores"])]
    lw = draw.line_width(out)
    if "masks" in result:
        draw.masks(out, result["masks"], colors)
    if "xywhr" in result:
        for pts, c, text in zip(rotated.corners(result["xywhr"]), colors, labels):
            cv2.polylines(out, [np.round(pts).astype(np.int32)], True, c, lw, cv2.LINE_AA)
            x, y = (int(v) for v in pts.min(0))
            cv2.putText(out, text, (x, max(y - 2, 0)), 0, lw / 3, c, max(lw - 1, 1), cv2.LINE_AA)
        return out
    draw.boxes(out, result["boxes"], labels, colors, lw)
    for kpts in result.get("keypoints", []):
        _skeleton(out, kpts, lw)
    return out


def _skeleton(image: np.ndarray, kpts: np.ndarray, lw: int) -> None:
    """ultralytics' Annotator.kpts: the keypoints whose visibility is above 0.5 and, for COCO's 17, the limbs."""
    import cv2

    bgr = [tuple(int(v) for v in c[::-1]) for c in POSE_PALETTE]
    visible = kpts[:, 2] > KPT_VISIBLE if kpts.shape[1] == 3 else np.ones(len(kpts), bool)
    if len(kpts) == 17:
        for (a, b), color in zip(SKELETON, LIMB_COLORS):
            if visible[a - 1] and visible[b - 1]:
                p, q = (tuple(int(round(float(v))) for v in kpts[i - 1, :2]) for i in (a, b))
                cv2.line(image, p, q, bgr[color], max(lw // 2, 1), cv2.LINE_AA)
    colors = [bgr[KPT_COLORS[i]] if len(kpts) == 17 else bgr[0] for i in range(len(kpts))]
    draw.points(image, kpts[visible][None, :, :2], [c for c, v in zip(colors, visible) if v], max(lw, 2))


def result_json(result, cfg: Config) -> dict:
    """COCO-style: bbox [x, y, w, h] in original pixels, category_id (0-based class), category, score; seg: also
    segmentation polygons and area; pose: keypoints [x, y, v, ...]; obb: rbox [cx, cy, w, h, angle] and its
    polygon. cls: the top-5."""
    if cfg.task == "cls":
        return imagenet.result_json(result, cfg)
    dets = results.coco_detections(result["boxes"], result["scores"], result["classes"], cfg.names,
                                   result.get("masks"))  # fmt: skip
    for k, det in enumerate(dets):
        if "keypoints" in result:
            det["keypoints"] = [float(v) for v in result["keypoints"][k].reshape(-1)]
        if "xywhr" in result:
            det["rbox"] = [float(v) for v in result["xywhr"][k]]
            det["polygon"] = [float(v) for v in rotated.corners(result["xywhr"][k : k + 1])[0].reshape(-1)]
    return {"model": cfg.model_name, "detections": dets}


def summary(result, cfg: Config) -> str:
    if cfg.task == "cls":
        return imagenet.summary(result, cfg)
    return results.summary(result["classes"], cfg.names)
