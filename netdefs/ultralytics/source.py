"""Where ultralytics weights come from: a model built from its yaml (random weights), or a checkpoint; and what
gen_wts.py writes beside the state_dict so the weights carry what the keys cannot say.

Two extra entries on the head module (``model.23.`` for YOLO11 detect), in the spirit of tensorrtx's
``anchor_grid``/``strides`` for YOLOv5 (C++ loaders that read a weight map by name ignore them):

* ``<head>.kpt_shape``: Pose's (keypoints, dims), two values; 51 keypoint values could be 17 x 3 or not;
* ``<head>.names``: the class names of a trained checkpoint, the UTF-8 bytes of their JSON list, one value per
  byte (a float holds a byte exactly). Random-init models have none (their names are "0", "1", ...).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from trtx.net import NetdefError


def is_ultralytics(model: Any) -> bool:
    return type(model).__module__.startswith("ultralytics.")


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
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if names and [str(n) for n in names] != [str(i) for i in range(len(names))]:
        extras[f"{prefix}.names"] = encode_names([str(n) for n in names])
    return extras


def encode_names(names: list[str]) -> np.ndarray:
    return np.frombuffer(json.dumps(names, ensure_ascii=False).encode(), np.uint8).astype(np.float32)


def decode_names(values: np.ndarray, key: str) -> list[str]:
    """The names an ``encode_names`` entry holds; a one-line error for anything else."""
    values = np.asarray(values).reshape(-1)
    if values.size and (np.any(values != np.round(values)) or values.min() < 0 or values.max() > 255):
        raise NetdefError(f"{key}: not the UTF-8 bytes of a JSON list of class names")
    try:
        names = json.loads(values.astype(np.uint8).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise NetdefError(f"{key}: not the UTF-8 bytes of a JSON list of class names") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise NetdefError(f"{key}: not a JSON list of class names")
    return names
