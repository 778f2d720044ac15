"""Class names: the datasets' (COCO's 80, the default of an 80-class detector), and a trained checkpoint's own,
carried in the weights -- ``model.names`` written by gen_wts.py as one more entry on the detector's head
(``<head>.names``), read back by the netdef's configure and recorded in the engine metadata, so a model trained on 3
classes labels its detections "cat", "dog", "bird", not class0..2.

The entry is the UTF-8 bytes of the names' JSON list, one value per byte (a float32 holds a byte exactly): a .wts
or .safetensors carries it, and C++ loaders that read a weight map by name ignore it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from trtx.net import NetdefError

#: COCO's 80 detection classes, in the order of their 0-based ids (yolov5's and ultralytics' ``names``)
COCO_NAMES = tuple(n.replace("_", " ") for n in (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign parking_meter "
    "bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee "
    "skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle "
    "wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake "
    "chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave oven "
    "toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush"
).split())  # fmt: skip


def class_names(num_classes: int) -> list[str]:
    """COCO's names for an 80-class detector, else ``class0``, ``class1``..."""
    return list(COCO_NAMES) if num_classes == len(COCO_NAMES) else [f"class{i}" for i in range(num_classes)]


def class_names_of(model: Any) -> list[str] | None:
    """A trained checkpoint's class names (``model.names``: a list or {id: name}); None for a model that has none
    or only the numbers a fresh model gets ("0", "1", ...)."""
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names or [str(n) for n in names] == [str(i) for i in range(len(names))]:
        return None
    return [str(n) for n in names]


def encode_names(names: list[str]) -> np.ndarray:
    """The names as a weight entry (see the module doc)."""
    return np.frombuffer(json.dumps(names, ensure_ascii=False).encode(), np.uint8).astype(np.float32)


def decode_names(values: np.ndarray, key: str) -> list[str]:
    """The names an :func:`encode_names` entry holds; a one-line error naming ``key`` for anything else."""
    values = np.asarray(values).reshape(-1)
    if values.size and (np.any(values != np.round(values)) or values.min() < 0 or values.max() > 255):
        raise NetdefError(f"{key}: not the UTF-8 bytes of a JSON list of class names")
    try:
        names = json.loads(values.astype(np.uint8).tobytes().decode())
    except ValueError:  # not UTF-8, not JSON
        raise NetdefError(f"{key}: not the UTF-8 bytes of a JSON list of class names") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise NetdefError(f"{key}: not a JSON list of class names")
    return names
