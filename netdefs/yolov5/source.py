"""Where YOLOv5 weights come from: the ``yolov5==7.0.14`` package's models built from its yaml files (random
weights; ``gen_wts.py --model yolov5:yolov5s``), its pickled checkpoints, and the two entries tensorrtx's
gen_wts.py writes beside the state_dict: ``anchor_grid`` (anchors x stride, per level) and ``strides`` on the
Detect/Segment layer (``model.24.`` for P5 models)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from netdefs.detection.names import class_names_of, encode_names
from netdefs.sources import Source
from trtx.sources import SourceError, package_dir, prepare_environment

#: what tensorrtx's gen_wts.py adds to the Detect/Segment layer, after its ``anchors``
WTS_EXTRAS = ("anchor_grid", "strides")


def yaml_path(name: str) -> Path:
    """The yaml the yolov5 package ships for ``name`` (``yolov5s``, ``yolov5s6``, ``yolov5s-seg``)."""
    folder = package_dir("yolov5")
    if folder is None:
        raise SourceError("the yolov5 package is not installed (pip install --no-deps yolov5==7.0.14)")
    models = folder / "models"
    for folder in (models, models / "segment", models / "hub"):
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    known = sorted(p.stem for d in (models, models / "segment", models / "hub") for p in d.glob("yolov5*.yaml"))
    raise SourceError(f"yolov5 has no model {name!r}; known: {', '.join(known)} (and <detect name>-cls)")


def task_of(name: str) -> str:
    """``detect``, ``seg`` or ``cls`` for a model name (``yolov5s-seg``)."""
    return "cls" if name.endswith("-cls") else "seg" if name.endswith("-seg") else "detect"


def build(name: str):
    """``yolov5:<name>``: DetectionModel / SegmentationModel from the yaml; ``-cls``: the ClassificationModel
    yolov5 v7.0's classify/train.py builds from the detect model."""
    prepare_environment()
    from yolov5.models.yolo import ClassificationModel, DetectionModel, SegmentationModel

    task = task_of(name)
    if task == "cls":
        detect = DetectionModel(str(yaml_path(name[: -len("-cls")])))
        return ClassificationModel(model=detect, nc=1000, cutoff=len(detect.yaml["backbone"]))
    return (SegmentationModel if task == "seg" else DetectionModel)(str(yaml_path(name)))


def detect_layer(model: Any) -> tuple[str, Any] | None:
    """(state_dict prefix, module) of a yolov5 Detect/Segment head: the last layer, with anchors."""
    layers = getattr(model, "model", None)
    if layers is None or not hasattr(layers, "__getitem__"):
        return None
    try:
        head = layers[-1]
    except (IndexError, TypeError):
        return None
    if not all(hasattr(head, attr) for attr in ("anchors", "stride", "na", "nl")):
        return None
    return next((name + ".", head) for name, module in model.named_modules() if module is head)


def wts_extras(model: Any, state: dict[str, np.ndarray], task: str | None) -> dict[str, np.ndarray]:
    """``state`` with tensorrtx's ``anchor_grid`` and ``strides`` right after the head's ``anchors``, for a yolov5
    detect/seg model (``task`` None: any model with a yolov5 Detect/Segment head); other models unchanged."""
    import torch

    detect = detect_layer(model)
    if task in ("detect", "seg") and detect is None:
        raise SourceError(f"--type {task} needs a yolov5 model with a Detect/Segment head; {type(model).__name__} "
                          "has none")  # fmt: skip
    if detect is None or task == "cls":
        return state
    prefix, head = detect
    with torch.no_grad():
        stride = head.stride.detach().float().cpu()
        anchor_grid = head.anchors.detach().float().cpu() * stride[..., None, None]
    extras = {prefix + "anchor_grid": anchor_grid.reshape(-1).numpy(), prefix + "strides": stride.numpy()}
    names = class_names_of(model)
    if names is not None:  # a trained checkpoint's classes: configure, the engine's metadata and infer's labels
        extras[prefix + "names"] = encode_names(names)
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        out[key] = value
        if key == prefix + "anchors":  # tensorrtx registers them as buffers of the head, right after anchors
            out.update(extras)
    return out if prefix + "anchors" in state else {**out, **extras}


@contextlib.contextmanager
def unpickling() -> Iterator[None]:
    """Original yolov5 checkpoints pickle ``models.yolo.*`` and ``utils.*``: map them to the yolov5 package."""
    if importlib.util.find_spec("yolov5") is None:
        yield
        return
    added = []
    for alias in ("models", "utils", "models.yolo", "models.common", "models.experimental"):
        if alias not in sys.modules:
            sys.modules[alias] = importlib.import_module(f"yolov5.{alias}")
            added.append(alias)
    try:
        yield
    finally:
        for alias in added:
            sys.modules.pop(alias, None)


def source_model(arch: str | None = None):
    """Random-init yolov5 model (``gen_wts.py --model netdef:yolov5:yolov5s``); same as ``yolov5:<arch>``."""
    from netdefs.sources import build_model

    return build_model(f"yolov5:{arch or 'yolov5s'}", seed=0)


#: ``yolov5:<name>`` in netdefs/sources.py
SOURCE = Source(build, wts_extras=wts_extras, task=task_of, unpickling=unpickling)
