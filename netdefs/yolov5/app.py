"""Around the network: images in (letterbox, on the CPU or the GPU; center crop for cls), detections out (NMS
after the engine, boxes and masks back on the original image), pictures, JSON and the printed line."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from netdefs.detection import draw, results
from netdefs.detection.boxes import Detections, xywh2xyxy
from netdefs.detection.nms import unpack_selected
from netdefs.yolov5.config import INPUT, MAX_WH, Config
from netdefs.yolov5.torch_side import candidates
from trtx import letterbox as lb
from trtx import nms as exact
from trtx.net import NetdefError

CLS_MEAN = (0.485, 0.456, 0.406)  # yolov5's IMAGENET_MEAN / IMAGENET_STD (classify_transforms)
CLS_STD = (0.229, 0.224, 0.225)


@dataclass
class Context:
    """What postprocess needs from preprocess: the original image sizes and their letterbox geometry."""

    shapes: list[tuple[int, int]]
    boxes: list[lb.Letterbox]


def preprocess(images: list[np.ndarray], cfg: Config) -> tuple[dict[str, np.ndarray], Context]:
    """BGR uint8 HWC images -> {"images": [B, 3, H, W] float32 RGB in [0, 1]} (letterbox, pad 114; cls:
    yolov5's classify_transforms: center crop, resize, ImageNet mean/std)."""
    shapes = [im.shape[:2] for im in images]
    if cfg.task == "cls":
        return {INPUT: lb.center_crop_normalize(images, cfg.imgsz, CLS_MEAN, CLS_STD)}, Context(shapes, [])
    if cfg.device.startswith("cuda"):
        return _gpu_preprocess(images, cfg)
    batch, geometry = lb.letterbox_batch(images, cfg.imgsz)
    return {INPUT: batch}, Context(shapes, geometry)


def _gpu_preprocess(images: list[np.ndarray], cfg: Config) -> tuple[dict, Context]:
    """The fused letterbox kernel into a torch CUDA tensor (uploads the images; one launch for the batch)."""
    import torch

    if cfg._gpu_letterbox is None:
        cfg._gpu_letterbox = lb.GpuLetterbox(cfg.imgsz, cfg.io_dtype)
    device = torch.device(cfg.device)
    with torch.cuda.device(device):
        out = torch.empty((len(images), 3, *cfg.imgsz), dtype=getattr(torch, cfg.io_dtype), device=device)
        cfg._gpu_letterbox(images, out=out, stream=torch.cuda.current_stream(device))
    return {INPUT: out}, Context([im.shape[:2] for im in images], cfg._gpu_letterbox.geometry)


def detections_from_outputs(outputs: dict, cfg: Config, class_offset: float | None = MAX_WH,
                            batch: int | None = None) -> list[Detections]:  # fmt: skip
    """Per image, the detections in input pixels, best first (``extras["masks"]``: mask coefficients).

    Native outputs go through the exact CPU NMS, class-aware the way yolov5 does it (``class_offset``; None:
    exactly per class); engines that ran NMS themselves are only unpacked (``batch``: the number of images,
    which TensorRT's NMS outputs do not tell when the last ones have no detection)."""
    if "dets" in outputs:  # the nms plugin's records: cx, cy, w, h, score, class, level, anchor index
        num, dets = np.asarray(outputs["num"]).reshape(-1), np.asarray(outputs["dets"])
        per = []
        for b in range(dets.shape[0]):
            r = dets[b, : min(int(num[b]), dets.shape[1])]
            r = r[r[:, 4] > cfg.conf][: cfg.max_det]  # the engine's thresholds, or stricter ones given to infer
            per.append(Detections(xywh2xyxy(r[:, :4]), r[:, 4], r[:, 5]))
        return per
    if "det_boxes" in outputs:  # NMS ran in the engine: rows in no particular order
        image = np.asarray(outputs["det_batch"]).reshape(-1)
        columns = {k: np.asarray(outputs[f"det_{k}"]) for k in ("boxes", "scores", "classes", "index", "masks")
                   if f"det_{k}" in outputs}  # fmt: skip
        images = batch if batch is not None else (int(image.max()) + 1 if image.size else 0)
        rows = [{k: v[: cfg.max_det] for k, v in r.items()} for r in unpack_selected(image, columns, images, cfg.conf)]
        return [Detections(xywh2xyxy(r["boxes"]), r["scores"], r["classes"],
                           {"masks": r["masks"]} if "masks" in r else {}) for r in rows]  # fmt: skip
    return replace(cfg.rule, class_offset=class_offset).detect(candidates(outputs))


def gpu_detections(outputs: dict, cfg: Config) -> list[Detections]:
    """:func:`detections_from_outputs` for native outputs held as torch CUDA tensors: NMS by the ``nms``
    plugin's GPU kernels (:func:`trtx.nms.gpu_non_max_suppression`: exactly per class, candidates ordered by
    score, then box index)."""
    import torch

    kept_num, kept = exact.gpu_non_max_suppression(
        outputs["boxes"], outputs["scores"], outputs["classes"], conf_threshold=cfg.conf, iou_threshold=cfg.iou,
        max_det=cfg.max_det, max_nms=cfg.rule.max_candidates,
    )  # fmt: skip
    kept_num, kept = kept_num.cpu().numpy(), kept.cpu().numpy()
    masks = outputs.get("masks")
    per = []
    for i in range(len(kept_num)):
        r = kept[i, : kept_num[i]]
        index = r[:, 7].astype(np.int64)
        extras = {}
        if masks is not None:
            extras["masks"] = masks[i][torch.as_tensor(index, device=masks.device)].float().cpu().numpy()
        per.append(Detections(xywh2xyxy(r[:, :4]), r[:, 4], r[:, 5], extras, index))
    return per


def postprocess(outputs: dict, ctx: Context, cfg: Config) -> list[dict]:
    """Network outputs -> per image {"boxes" (original pixels), "scores", "classes"[, "masks"]}
    ({"probs", "top5"} for cls)."""
    if cfg.task == "cls":
        prob = np.asarray(outputs["prob"])
        return [{"probs": p, "top5": np.argsort(-p, kind="stable")[:5]} for p in prob]
    if cfg.postprocess == "none":
        raise NetdefError("this engine was built with --postprocess none: it outputs the raw head; decode it "
                          "yourself or rebuild with --postprocess native")  # fmt: skip
    on_gpu = getattr(outputs.get("scores"), "is_cuda", False)
    dets = gpu_detections(outputs, cfg) if on_gpu else detections_from_outputs(outputs, cfg, batch=len(ctx.shapes))
    if on_gpu and cfg.task == "seg":
        outputs = dict(outputs, proto=outputs["proto"].float().cpu().numpy())
    per = []
    for b, det in enumerate(dets):
        shape = ctx.shapes[b]
        res = {"boxes": lb.scale_boxes(det.boxes, cfg.imgsz, shape), "scores": det.scores.copy(),
               "classes": det.classes}  # fmt: skip
        if cfg.task == "seg":
            res["masks"] = process_masks(np.asarray(outputs["proto"])[b], det.extras["masks"], det.boxes, cfg.imgsz,
                                         shape)  # fmt: skip
        per.append(res)
    return per


def process_masks(protos: np.ndarray, coefs: np.ndarray, boxes: np.ndarray, imgsz, shape) -> np.ndarray:
    """yolov5's process_mask(upsample=True) then scale_image: [k, H0, W0] bool masks on the original image."""
    import cv2

    n = len(coefs)
    h0, w0 = shape
    if n == 0:
        return np.zeros((0, h0, w0), bool)
    c, mh, mw = protos.shape
    ih, iw = imgsz
    masks = 1 / (1 + np.exp(-(coefs @ protos.reshape(c, -1)))).reshape(n, mh, mw)
    down = boxes * np.array([mw / iw, mh / ih, mw / iw, mh / ih], np.float32)
    r, cc = np.arange(mw)[None, None, :], np.arange(mh)[None, :, None]
    x1, y1, x2, y2 = (down[:, k, None, None] for k in range(4))
    masks = masks * ((r >= x1) & (r < x2) & (cc >= y1) & (cc < y2))
    up = np.stack([cv2.resize(m.astype(np.float32), (iw, ih), interpolation=cv2.INTER_LINEAR) for m in masks])
    up = up > 0.5
    gain = min(ih / h0, iw / w0)
    pad_w, pad_h = (iw - w0 * gain) / 2, (ih - h0 * gain) / 2
    top, left, bottom, right = int(pad_h), int(pad_w), int(ih - pad_h), int(iw - pad_w)
    crop = up[:, top:bottom, left:right].astype(np.uint8)
    return np.stack([cv2.resize(m, (w0, h0), interpolation=cv2.INTER_LINEAR) for m in crop]).astype(bool)


def render(image: np.ndarray, result: dict, cfg: Config) -> np.ndarray:
    """Boxes, labels (and masks) drawn on a copy of the BGR image, yolov5's colors."""
    import cv2

    out = image.copy()
    if cfg.task == "cls":
        text = ", ".join(f"{cfg.names[i]} {result['probs'][i]:.2f}" for i in result["top5"])
        cv2.putText(out, text, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        return out
    colors = [draw.color(c) for c in result["classes"]]
    draw.masks(out, result.get("masks", []), colors)
    labels = [draw.label(cfg.names[int(c)], s) for s, c in zip(result["scores"], result["classes"])]
    return draw.boxes(out, result["boxes"], labels, colors)


def result_json(result: dict, cfg: Config) -> dict:
    """COCO-style: bbox [x, y, w, h] in original pixels, category_id (0-based class), category name, score."""
    if cfg.task == "cls":
        return {"top5": [{"category_id": int(i), "category": cfg.names[i], "score": float(result["probs"][i])}
                         for i in result["top5"]]}  # fmt: skip
    dets = results.coco_detections(result["boxes"], result["scores"], result["classes"], cfg.names,
                                   result.get("masks"))  # fmt: skip
    return {"model": cfg.model_name, "detections": dets}


def summary(result: dict, cfg: Config) -> str:
    if cfg.task == "cls":
        return ", ".join(f"{cfg.names[i]} {result['probs'][i]:.3f}" for i in result["top5"])
    return results.summary(result["classes"], cfg.names)
