"""The PyTorch side of ``check``: the ultralytics model rebuilt from its yaml with the scale, classes, masks,
keypoints and reg_max the weights contain, the weights loaded, and its forward returning the network's outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from netdefs.ultralytics.arch import SCALE_NAMES, SUFFIX, make_divisible
from netdefs.ultralytics.config import INPUT, Config
from netdefs.ultralytics.decode import RAW_OUTPUTS, WTS_EXTRAS
from trtx.net import NetdefError


def torch_model(cfg: Config, weights):
    """``--model SPEC``, or the family's yaml rebuilt with the weights' multiples; weights loaded."""
    from netdefs.sources import build_model
    from trtx import sources

    ignore = [f"model.{cfg.arch.head}.{k}" for k in WTS_EXTRAS]
    try:
        model = build_model(cfg.model_spec) if cfg.model_spec else build(cfg)
        sources.load_state(model, weights, ignore=ignore)
    except sources.SourceError as exc:
        where = f"--model {cfg.model_spec}" if cfg.model_spec else f"the {cfg.family} yaml rebuilt as {cfg.model_name}"
        raise NetdefError(f"{where}: {exc}") from None
    model.trtx_task, model.trtx_postprocess = cfg.task, cfg.postprocess  # what torch_forward returns
    return model.eval()


def yaml_dict(cfg: Config) -> dict[str, Any]:
    """The family's yaml for this task with the weights' scale (a custom one under the key that gives its C3k
    rule), classes, masks, keypoints and reg_max."""
    import yaml

    from trtx import sources

    folder = sources.package_dir("ultralytics")
    if folder is None:
        raise NetdefError("check needs the ultralytics package (pip install --no-deps ultralytics==8.4.190)")
    sub = "v8" if cfg.family == "yolov8" else "11"
    d = yaml.safe_load((folder / "cfg" / "models" / sub / f"{cfg.family}{SUFFIX[cfg.task]}.yaml").read_text())
    if cfg.multiples is None:
        raise NetdefError(
            "the weights' widths/depths match no ultralytics depth/width/max_channels; pass --model "
            "SPEC to compare with"
        )
    depth, width, cap = cfg.multiples
    key = cfg.scale
    if key not in SCALE_NAMES:  # C3k2 blocks are all C3k for the m, l and x keys of parse_model
        c3k2 = set(cfg.arch.repeats) - cfg.arch.psa if cfg.family == "yolo11" else set()
        key = "m" if c3k2 and c3k2 <= cfg.arch.c3k else "custom"
    d["scales"] = {key: [depth, width, cap if cap != float("inf") else 1 << 30]}
    d["scale"] = key
    d["nc"] = cfg.num_classes
    d["reg_max"] = cfg.reg_max
    if cfg.task == "pose":
        d["kpt_shape"] = list(cfg.kpt_shape)
    if cfg.task == "seg":
        d["head"][-1][3][1] = cfg.num_masks
        protos = cfg.arch.num_protos
        d["head"][-1][3][2] = next(n for n in range(1, 4097) if make_divisible(min(n, cap) * width) == protos)
    return d


def build(cfg: Config):
    from trtx import sources

    d = yaml_dict(cfg)
    sources.prepare_environment()
    with sources.quiet():
        from ultralytics.nn import tasks

        kind = {
            "detect": tasks.DetectionModel,
            "seg": tasks.SegmentationModel,
            "pose": tasks.PoseModel,
            "obb": tasks.OBBModel,
            "cls": tasks.ClassificationModel,
        }[cfg.task]
        return kind(d, ch=3, nc=cfg.num_classes, verbose=False).float()


def torch_forward(model, feeds) -> dict[str, Any]:
    """The network's outputs as ultralytics computes them: its model's ``y`` (decoded boxes, class scores,
    extras) split into the native outputs, or the head's raw dict for ``--postprocess none``."""
    out = model(feeds[INPUT])
    task = model.trtx_task
    if task == "cls":
        prob, logits = out
        return {"logits": logits, "prob": prob}
    y, preds = out
    if task == "seg":
        y, proto = y
    if model.trtx_postprocess == "none":
        return {RAW_OUTPUTS[k]: v for k, v in preds.items() if k in RAW_OUTPUTS}
    return split_prediction(y, model.model[-1].nc, task, proto if task == "seg" else None)


def split_prediction(y, nc: int, task: str, proto=None) -> dict[str, Any]:
    """ultralytics' ``y`` [B, 4 + nc + extra, A] -> boxes [B, A, 4], scores [B, A, nc], the task's extras."""
    out = {"boxes": y[:, :4].transpose(1, 2), "scores": y[:, 4 : 4 + nc].transpose(1, 2)}
    extra = y[:, 4 + nc :]
    if task == "seg":
        out.update(masks=extra.transpose(1, 2), proto=proto)
    elif task == "pose":
        out["keypoints"] = extra.transpose(1, 2)
    elif task == "obb":
        out["angles"] = extra[:, 0]
    return out


def example_feeds(cfg: Config, image: str | None, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``image`` through the preprocessing, repeated ``batch`` times; without one, a seeded uniform [0, 1)
    input (the range of a letterboxed photo)."""
    if image is None:
        rng = np.random.default_rng(seed)
        return {INPUT: rng.random((batch, 3, *cfg.imgsz), dtype=np.float32)}
    import cv2

    from netdefs.ultralytics.app import preprocess

    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if img is None:
        raise NetdefError(f"{image}: not a readable image")
    return preprocess([img] * batch, cfg)[0]


#: boxes and scores of matched detections agree within this fraction of the box scale / top score
DETECTION_RTOL = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}


def check_extra(cfg: Config, outputs: dict, expected: dict, precision: str = "fp32") -> list[tuple[str, bool, str]]:
    """``check``'s rows after the network: cls, the top-5 (netdefs/imagenet.py's rows); detectors, the detections
    after NMS (the host NMS of :mod:`netdefs.ultralytics.app`) held to PyTorch's candidates by the shared
    comparison (OBB: its Fast NMS form, :func:`netdefs.ultralytics.rotated.compare`), and ultralytics' own
    non_max_suppression on PyTorch's prediction held to the same candidates."""
    from netdefs import imagenet

    if cfg.task == "cls":
        return imagenet.check_extra(cfg, outputs, expected, precision)
    if cfg.postprocess != "native" or cfg.nms_in_engine:
        return []
    from netdefs.common import as_numpy
    from netdefs.ultralytics import app

    rtol = DETECTION_RTOL[precision]
    theirs = app.candidates({k: as_numpy(v) for k, v in expected.items()}, cfg)
    ours = app.detect({k: as_numpy(v) for k, v in outputs.items()}, cfg)
    rows = [("detections after NMS", *_compare(ours, theirs, cfg, rtol))]
    kept = _ultralytics_nms(expected, cfg)
    theirs_kept = [t.take(k) for t, k in zip(theirs, kept)]
    passed, message = _compare(theirs_kept, theirs, cfg, 1e-6)
    same = sum(len(np.intersect1d(o.index, k)) for o, k in zip(ours, kept))
    message = f"ultralytics kept {sum(map(len, kept))}, {same} of them the network's too; as NMS: {message}"
    rows.append(("ultralytics' non_max_suppression", passed, message))
    return rows


def _compare(ours, theirs, cfg: Config, rtol: float) -> tuple[bool, str]:
    from netdefs.detection.compare import compare_detections
    from netdefs.ultralytics import app, rotated

    if cfg.task == "obb":
        return rotated.compare(ours, theirs, cfg.conf, cfg.iou, cfg.max_det, rtol)
    return compare_detections(ours, theirs, app.rule(cfg), rtol)


def _ultralytics_nms(expected: dict, cfg: Config) -> list[np.ndarray]:
    """The anchors ultralytics.utils.nms.non_max_suppression keeps from PyTorch's prediction ``y`` (rebuilt from
    the outputs: boxes, every class's score, the task's extras), per image, best first."""
    import torch

    from trtx import sources

    parts = [expected["boxes"], expected["scores"]]
    parts += [expected[k] for k in ("masks", "keypoints") if k in expected]
    if cfg.task == "obb":
        parts.append(expected["angles"][..., None])
    y = torch.cat([p.float().cpu() for p in parts], -1).transpose(1, 2)
    sources.prepare_environment()
    with sources.quiet():
        from ultralytics.utils.nms import non_max_suppression

        _, keep = non_max_suppression(y, cfg.conf, cfg.iou, nc=cfg.num_classes, max_det=cfg.max_det,
                                      rotated=cfg.task == "obb", return_idxs=True, max_time_img=60.0)  # fmt: skip
    return [k.cpu().numpy().astype(np.int64).reshape(-1) for k in keep]
