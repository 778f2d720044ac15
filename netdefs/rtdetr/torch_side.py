"""The PyTorch side of the RT-DETR netdef: ultralytics' RTDETRDetectionModel from its yaml, its prediction ``y``
mapped to the network's outputs, check's inputs, and the random-init source model of ``gen_wts.py``."""

from __future__ import annotations

from typing import Any

import numpy as np

from trtx.netdef import TorchSide


def rtdetr_model(arch: str, nc: int = 80):
    """ultralytics' RTDETRDetectionModel of ``<arch>.yaml`` with ``nc`` classes, in eval mode."""
    from trtx.sources import prepare_environment, quiet

    prepare_environment()
    with quiet():
        from ultralytics.nn.tasks import RTDETRDetectionModel

        return RTDETRDetectionModel(f"{arch}.yaml", nc=nc, verbose=False).eval()


def torch_model(cfg, weights):
    from trtx.sources import load_state

    model = rtdetr_model(cfg.arch, cfg.nc)
    load_state(model, weights)
    return model


def torch_forward(model, feeds) -> dict[str, Any]:
    """``model(images)[0]`` = RTDETRDecoder.postprocess's y [B, 300, 6] (cx, cy, w, h normalized, score, class),
    split like the network's outputs, boxes in input pixels."""
    import torch

    images = feeds["images"]
    y = model(images)[0]
    h, w = images.shape[2:]
    pixels = torch.tensor([w, h, w, h], dtype=y.dtype, device=y.device)
    return {"boxes": y[..., :4] * pixels, "scores": y[..., 4], "classes": y[..., 5].to(torch.int32)}


def example_feeds(cfg, image: str | None, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``image`` through the netdef's preprocessing (repeated ``batch`` times), else seeded uniform [0, 1) pixels."""
    h, w = cfg.imgsz
    if image is not None:
        from netdefs.rtdetr.app import load_images, preprocess

        feeds, _ = preprocess(load_images([image]) * batch, cfg)
        return feeds
    rng = np.random.default_rng(seed)
    return {"images": rng.random((batch, 3, h, w), dtype=np.float32)}


#: relative tolerance of boxes and scores in check's detection row, by precision
DETECTION_RTOL = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}


def check_extra(cfg, outputs: dict, expected: dict, precision: str = "fp32") -> list[tuple[str, bool, str]]:
    """The detections above ``--conf`` (RTDETRPredictor.postprocess) of the network and of PyTorch, compared with
    the detection toolkit's comparison (PyTorch's 300 rows as the candidates, no suppression: a box is kept
    unless a near-tie moved it past the conf or the top-k cut); and PyTorch's scores are not all equal."""
    from netdefs.common import as_numpy
    from netdefs.detection.boxes import Detections, xywh2xyxy
    from netdefs.detection.compare import compare_detections
    from netdefs.detection.nms import NmsRule
    from netdefs.rtdetr.app import detections

    if any(k not in outputs or k not in expected for k in ("boxes", "scores", "classes")):
        return [("detections", False, "boxes, scores and classes are needed on both sides")]
    ours = detections({k: as_numpy(v) for k, v in outputs.items()}, [cfg.imgsz] * len(outputs["boxes"]), cfg)
    theirs = {k: as_numpy(expected[k]) for k in ("boxes", "scores", "classes")}
    candidates = Detections.from_arrays(xywh2xyxy(theirs["boxes"]), theirs["scores"], theirs["classes"])
    rule = NmsRule(conf=cfg.conf, iou=1.0, max_det=int(theirs["scores"].shape[1]))
    passed, message = compare_detections(ours, candidates, rule, DETECTION_RTOL.get(precision, 1e-4))
    spread = float(np.std(theirs["scores"]))
    return [(f"detections (conf {cfg.conf:g})", passed, message),
            ("scores not constant", spread > 1e-6, f"std of PyTorch's scores {spread:.3g}")]  # fmt: skip


def source_model(arch: str | None = None):
    """A random-init RT-DETR (``gen_wts.py --model netdef:rtdetr[:arch]``): ultralytics' initialization, with the
    parameters it sets to one value (box heads' last layers and attention weights at zero, class biases at the
    prior) drawn at random, so that check sees them (trtx.sources.randomize_constant_parameters)."""
    import torch

    from trtx.sources import randomize_constant_parameters

    model = rtdetr_model(arch or "rtdetr-l")
    randomize_constant_parameters(model)
    head = model.model[-1]
    with torch.no_grad():
        # Query selection masks the features of invalid anchors (at the image border) to zero; enc_output's
        # LayerNorm then sees enc_output.0's bias alone. Left random, that small vector normalizes to a full-size
        # feature whose one score can outrank the valid ones: the top-k fills with identical invalid queries and
        # the whole decoder runs on 300 copies of one query. Without the bias it normalizes to the LayerNorm's
        # bias and scores low, as a trained model's invalid anchors do.
        head.enc_output[0].bias.zero_()
    return model


TORCH = TorchSide(model=torch_model, forward=torch_forward, feeds=example_feeds, extra=check_extra, source=source_model)
