"""Where ultralytics weights come from: a model built from its yaml (random weights), or a checkpoint; and what
gen_wts.py writes beside the state_dict so the weights carry what the keys cannot say.

Two extra entries on the head module (``model.23.`` for YOLO11 detect), in the spirit of tensorrtx's
``anchor_grid``/``strides`` for YOLOv5 (C++ loaders that read a weight map by name ignore them):

* ``<head>.kpt_shape``: Pose's (keypoints, dims), two values; 51 keypoint values could be 17 x 3 or not;
* ``<head>.names``: the class names of a trained checkpoint (netdefs/detection/names.py). Random-init models have
  none (their names are "0", "1", ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netdefs.detection.names import class_names_of, encode_names
from netdefs.sources import Source
from trtx.sources import SourceError, prepare_environment


def is_ultralytics(model: Any) -> bool:
    return type(model).__module__.startswith("ultralytics.")


def build(name: str):
    """``ultralytics:<stem>``: the model of an ultralytics yaml (``yolo11n``, ``yolov8s-seg``, ``rtdetr-l``)."""
    prepare_environment()
    from ultralytics import RTDETR, YOLO

    stem = name.removesuffix(".yaml")
    try:
        wrapper = (RTDETR if stem.startswith("rtdetr") else YOLO)(f"{stem}.yaml")
    except FileNotFoundError as exc:
        raise SourceError(f"ultralytics has no model yaml {stem!r}: {exc}") from None
    return wrapper.model


def source_model(name: str | None = None):
    """A random-init model of ``name`` (``yolo11n``, ``yolov8s-seg``...; default yolo11n), built from the yaml."""
    from netdefs.sources import build_model

    return build_model(f"ultralytics:{name or 'yolo11n'}", seed=0)


def wts_extras(model: Any) -> dict[str, np.ndarray]:
    """``<head>.kpt_shape`` (Pose) and ``<head>.names`` (a checkpoint's own class names) for gen_wts.py."""
    layers = getattr(model, "model", None)
    if not is_ultralytics(model) or layers is None:
        return {}
    prefix = f"model.{len(layers) - 1}"
    extras = {}
    kpt_shape = getattr(layers[-1], "kpt_shape", None)
    if kpt_shape is not None:
        extras[f"{prefix}.kpt_shape"] = np.asarray(kpt_shape, np.float32)
    names = class_names_of(model)
    if names is not None:
        extras[f"{prefix}.names"] = encode_names(names)
    return extras


#: ``ultralytics:<stem>`` in netdefs/sources.py: gen_wts.py writes ``wts_extras`` beside the state_dict
SOURCE = Source(build, wts_extras=lambda model, state, task: {**state, **wts_extras(model)})
