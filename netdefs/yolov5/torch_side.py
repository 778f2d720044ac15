"""The PyTorch side of ``check``: the yolov5 package's model with the weights loaded, its forward returning the
network's outputs, example inputs, and the comparison of the detections after NMS."""

from __future__ import annotations

import numpy as np

from netdefs.common import as_numpy, read_image
from netdefs.detection.boxes import Detections, xywh2xyxy
from netdefs.detection.compare import compare_detections
from netdefs.yolov5.config import INPUT, Config
from netdefs.yolov5.source import WTS_EXTRAS
from trtx.net import NetdefError

#: boxes and scores of matched detections agree within this fraction of the box scale / top score
DETECTION_RTOL = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}


def torch_model(cfg: Config, weights):
    """The yolov5 package's model with these weights: ``--model SPEC`` or built from the yaml with the
    depth/width multiples, classes, anchors (and mask coefficients) the weights contain."""
    from netdefs.sources import build_model
    from trtx import sources

    ignore = [f"model.{cfg.arch.head}.{k}" for k in (*WTS_EXTRAS, "names")]  # gen_wts.py's, not the model's
    try:
        model = build_model(cfg.model_spec) if cfg.model_spec else _build(cfg)
        sources.load_state(model, weights, ignore=ignore)
    except sources.SourceError as exc:
        where = f"--model {cfg.model_spec}" if cfg.model_spec else f"the yolov5 yaml rebuilt as yolov5{cfg.variant}"
        raise NetdefError(f"{where}: {exc}") from None
    model.trtx_postprocess = cfg.postprocess  # which outputs torch_forward computes
    return model.eval()


def _build(cfg: Config):
    import yaml

    from netdefs.yolov5.source import yaml_path
    from trtx import sources

    if cfg.depth_multiple is None:
        raise NetdefError("the weights' depths/widths match no YOLOv5 multiple; pass --model SPEC to compare")
    base = "yolov5s6" if cfg.p6 else ("yolov5s-seg" if cfg.task == "seg" else "yolov5s")
    d = yaml.safe_load(yaml_path(base).read_text())
    d["depth_multiple"], d["width_multiple"] = cfg.depth_multiple, cfg.width_multiple
    d["nc"] = cfg.num_classes if cfg.task != "cls" else 80
    if cfg.task != "cls":
        d["anchors"] = [[round(v, 6) for pair in level for v in pair] for level in cfg.anchors]
    if cfg.task == "seg":
        d["head"][-1][3][2] = cfg.num_masks
    sources.prepare_environment()
    with sources.quiet():
        from yolov5.models.yolo import ClassificationModel, DetectionModel, SegmentationModel

        if cfg.task == "cls":
            detect = DetectionModel(d)
            return ClassificationModel(model=detect, nc=cfg.num_classes, cutoff=len(d["backbone"]))
        return (SegmentationModel if cfg.task == "seg" else DetectionModel)(d)


def torch_forward(model, feeds) -> dict:
    """The network's outputs computed by the PyTorch model (+ yolov5's own xywh2xyxy and conf = obj x cls)."""
    import torch

    out = model(feeds[INPUT])
    if not isinstance(out, (tuple, list)):  # Classify
        return {"logits": out, "prob": torch.softmax(out, 1)}
    pred, raw = out[0], out[-1]
    result = {"proto": out[1]} if len(out) == 3 else {}
    nc = model.model[-1].nc
    if getattr(model, "trtx_postprocess", "native") == "none":
        for i, r in enumerate(raw):
            b, na, ny, nx, no = r.shape
            result[f"raw{i}"] = r.permute(0, 1, 4, 2, 3).reshape(b, na * no, ny, nx)
        return result
    scores, classes = (pred[..., 5 : 5 + nc] * pred[..., 4:5]).max(2)
    result.update(boxes=pred[..., :4], scores=scores, classes=classes.int())
    if pred.shape[-1] > 5 + nc:
        result["masks"] = pred[..., 5 + nc :]
    return result


def example_feeds(cfg: Config, image: str | None, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``image`` (letterboxed, or center-cropped for cls) repeated ``batch`` times; without one, a seeded
    uniform [0, 1) input."""
    h, w = cfg.imgsz
    if image is None:
        rng = np.random.default_rng(seed)
        return {INPUT: rng.random((batch, 3, h, w), dtype=np.float32)}
    from netdefs.yolov5.app import preprocess

    return preprocess([read_image(image)] * batch, cfg)[0]


def candidates(outputs: dict) -> list[Detections]:
    """Native outputs (boxes, scores, classes[, masks]) as each image's NMS candidates, boxes as corners."""
    out = {k: as_numpy(v) for k, v in outputs.items()}
    extras = {"masks": out["masks"]} if "masks" in out else {}
    return Detections.from_arrays(xywh2xyxy(out["boxes"]), out["scores"], out["classes"], extras)


def check_extra(cfg: Config, outputs: dict, expected: dict, precision: str = "fp32") -> list[tuple[str, bool, str]]:
    """Final detections: the exact NMS (trtx.nms, which equals yolov5's non_max_suppression:
    tests/test_nms_cpu.py) on the network's outputs, held to PyTorch's candidates (netdefs.detection.compare)
    within ``DETECTION_RTOL[precision]``; cls: the top-1 class."""
    if cfg.task == "cls":
        top_net, top_torch = as_numpy(outputs["prob"]).argmax(1), as_numpy(expected["prob"]).argmax(1)
        same = bool(np.array_equal(top_net, top_torch))
        return [("top-1 class", same, f"network {top_net.tolist()} vs PyTorch {top_torch.tolist()}")]
    if cfg.postprocess != "native" or cfg.nms_in_engine:
        return []
    ours = cfg.rule.detect(candidates(outputs))
    passed, message = compare_detections(ours, candidates(expected), cfg.rule, DETECTION_RTOL[precision])
    return [("detections after NMS", passed, message)]
