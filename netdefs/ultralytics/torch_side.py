"""The PyTorch side of ``check``: the ultralytics model rebuilt from its yaml with the scale, classes, masks,
keypoints and reg_max the weights contain, the weights loaded, and its forward returning the network's outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from netdefs.ultralytics.arch import END2END, SCALE_NAMES, SUFFIX, V10_LAYOUT, make_divisible, v10_layout_fits
from netdefs.ultralytics.config import INPUT, Config
from netdefs.ultralytics.decode import RAW_OUTPUTS, WTS_EXTRAS
from trtx.net import NetdefError

#: each family's folder of yaml files under ultralytics/cfg/models
YAML_DIRS = {"yolov8": "v8", "yolo11": "11", "yolov10": "v10", "yolo12": "12", "yolo26": "26"}


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
    if cfg.family in END2END and cfg.task != "cls":
        model.end2end = cfg.end2end  # the branch the network runs: one-to-one (top-k) or one-to-many (NMS)
        model.model[-1].max_det = cfg.max_det  # the top-k's k
    model.trtx_task, model.trtx_postprocess = cfg.task, cfg.postprocess  # what torch_forward returns
    model.trtx_end2end = cfg.end2end
    return model.eval()


def yaml_path(cfg: Config):
    """The yaml file of this family and task (YOLOv10: of the scale whose C2fCIB layout the weights have)."""
    from trtx import sources

    folder = sources.package_dir("ultralytics")
    if folder is None:
        raise NetdefError("check needs the ultralytics package (pip install --no-deps ultralytics==8.4.190)")
    models = folder / "cfg" / "models" / YAML_DIRS[cfg.family]
    if cfg.family != "yolov10":
        return models / f"{cfg.family}{SUFFIX[cfg.task]}.yaml"
    scale = next((s for s in V10_LAYOUT if v10_layout_fits(cfg.arch, s)), None)
    if scale is None:
        raise NetdefError(f"the weights' C2fCIB modules (model.{sorted(cfg.arch.cib)}) match no yolov10*.yaml; "
                          "pass --model SPEC to compare with")  # fmt: skip
    return models / f"yolov10{scale}.yaml"


def yaml_dict(cfg: Config) -> dict[str, Any]:
    """The family's yaml for this task with the weights' scale (a custom one under the key whose rules parse_model
    applies to it: C3k2's C3k blocks for m/l/x, A2C2f's residual for l/x), classes, masks, keypoints and reg_max."""
    import yaml

    d = yaml.safe_load(yaml_path(cfg).read_text())
    if cfg.multiples is None:
        raise NetdefError(
            "the weights' widths/depths match no ultralytics depth/width/max_channels; pass --model "
            "SPEC to compare with"
        )
    depth, width, cap = cfg.multiples
    key = cfg.scale
    if key not in SCALE_NAMES:
        c3k2 = (
            set(cfg.arch.repeats) - cfg.arch.psa - cfg.arch.cib
            if cfg.family in ("yolo11", "yolo12", "yolo26")
            else set()
        )
        if cfg.arch.gamma:
            key = "l"
        elif c3k2 and c3k2 <= cfg.arch.c3k:
            key = "m"
        else:
            key = "custom"
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
    extras) split into the native outputs, or the head's raw dict for ``--postprocess none``. An end-to-end head:
    the candidates its top-k chooses from (what Detect.postprocess receives), and ultralytics' own end-to-end
    output as the ``det_*`` outputs -- a selection that near-tied scores order either way, compared by
    :func:`check_extra`."""
    task, head = model.trtx_task, model.model[-1]
    if task == "cls":
        prob, logits = model(feeds[INPUT])
        return {"logits": logits, "prob": prob}
    received = {}
    if model.trtx_end2end:  # the prediction ultralytics' end-to-end post-processing receives, [B, A, 4 + nc + extra]
        head.postprocess = lambda pred, post=head.postprocess: post(received.setdefault("y", pred))
    try:
        y, preds = model(feeds[INPUT])
    finally:
        head.__dict__.pop("postprocess", None)
    if task == "seg":
        y, proto = y
    if "one2one" in preds:  # an end-to-end head's two branches
        preds = preds["one2one" if model.trtx_end2end else "one2many"]
    if model.trtx_postprocess == "none":
        return {RAW_OUTPUTS[k]: v for k, v in preds.items() if k in RAW_OUTPUTS}
    if not model.trtx_end2end:
        return split_prediction(y, head.nc, task, proto if task == "seg" else None)
    out = split_prediction(received["y"].transpose(1, 2), head.nc, task, proto if task == "seg" else None)
    return {**out, **end2end_rows(y, task)}


def end2end_rows(y, task: str) -> dict[str, Any]:
    """ultralytics' end-to-end output [B, k, 6 + extra] (box, score, class, the task's extras) as the network's
    ``det_*`` outputs, each :class:`trtx.check.Unordered` (``det_index``: ultralytics' has none)."""
    from trtx.check import Unordered

    rows = {"det_boxes": y[..., :4], "det_scores": y[..., 4], "det_classes": y[..., 5], "det_index": None}
    extra = {"seg": "det_masks", "pose": "det_keypoints", "obb": "det_angles"}.get(task)
    if extra:
        rows[extra] = y[..., 6] if task == "obb" else y[..., 6:]
    return {k: Unordered(v) for k, v in rows.items()}


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
    if cfg.end2end:
        return _end2end_extra(cfg, outputs, expected, precision)
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


def _end2end_extra(cfg: Config, outputs: dict, expected: dict, precision: str) -> list[tuple[str, bool, str]]:
    """An end-to-end head's rows: the network's top-k (the rows above conf), and ultralytics' own end-to-end output
    (its model's, through its non_max_suppression(end2end=True)), each held to PyTorch's candidates -- the
    prediction ultralytics' top-k chose from -- by the shared top-k comparison."""
    from netdefs.common import as_numpy
    from netdefs.detection.compare import compare_topk
    from netdefs.ultralytics import app
    from trtx.check import Unordered

    theirs = app.candidates({k: as_numpy(v) for k, v in expected.items() if not isinstance(v, Unordered)}, cfg)
    k = min(cfg.max_det, len(theirs[0]))
    ours = app.detect({name: as_numpy(v) for name, v in outputs.items()}, cfg)
    rows = [("end-to-end detections", *compare_topk(ours, theirs, k, cfg.conf, DETECTION_RTOL[precision]))]
    kept = _ultralytics_end2end(expected, cfg)
    # check's PyTorch run followed the network's top-k picks among near-ties (trtx.check): ultralytics' own rows
    # then keep the network's order, which departs from the scores' by up to check's tolerance
    passed, message = compare_topk(kept, theirs, k, cfg.conf, DETECTION_RTOL[precision])
    message = f"ultralytics detected {sum(map(len, kept))} ({sum(map(len, ours))} here); as a top-k: {message}"
    rows.append(("ultralytics' end-to-end output", passed, message))
    return rows


def _ultralytics_end2end(expected: dict, cfg: Config) -> list:
    """The rows of ultralytics' own end-to-end output (the model's top-k, ``det_*``) that its
    non_max_suppression(end2end=True) keeps -- above conf, the first max_det -- per image, as Detections."""
    import torch

    from netdefs.detection.boxes import Detections
    from netdefs.ultralytics import rotated
    from trtx import sources

    v = {k: expected[k].value.float().cpu() for k in expected if k.startswith("det_") and expected[k].value is not None}
    parts = [v["det_boxes"], v["det_scores"][..., None], v["det_classes"][..., None]]
    parts += [
        v[k] if v[k].dim() == 3 else v[k][..., None] for k in ("det_masks", "det_keypoints", "det_angles") if k in v
    ]
    sources.prepare_environment()
    with sources.quiet():
        from ultralytics.utils.nms import non_max_suppression

        kept = non_max_suppression(torch.cat(parts, -1), cfg.conf, cfg.iou, max_det=cfg.max_det, end2end=True)
    per = []
    for rows in (r.numpy() for r in kept):
        boxes, scores, classes, extra = rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64), rows[:, 6:]
        if cfg.task == "obb":
            xywhr = np.concatenate([boxes, extra[:, :1]], 1)
            per.append(Detections(rotated.aabb(xywhr), scores, classes, {"xywhr": xywhr}))
        else:
            name = {"seg": "masks", "pose": "keypoints"}.get(cfg.task)
            per.append(Detections(boxes, scores, classes, {name: extra} if name else {}))
    return per


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
