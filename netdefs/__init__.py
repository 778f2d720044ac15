"""Netdefs: one module (or small package) per model family, each declaring ``NETDEF`` (a trtx.netdef.Netdef).

:data:`FAMILIES` is the registry: ``python -m netdefs list`` shows their models in this order and
``gen_wts.py --model netdef:<family>`` finds them here. A new family is one more name in it
(tests/test_netdefs_list.py fails for a netdef module that is missing).
"""

from __future__ import annotations

import importlib

from trtx.netdef import Netdef

#: every netdef family, by module name under netdefs/
FAMILIES = (
    "lenet",
    "alexnet",
    "vgg",
    "resnet",
    "squeezenet",
    "googlenet",
    "inception",
    "densenet",
    "mobilenet",
    "shufflenet",
    "mnasnet",
    "efficientnet",
    "regnet",
    "convnext",
    "vit",
    "swin",
    "yolov5",
    "retinaface",
    "mtcnn",
    "ocr",
    "ultralytics",
    "rtdetr",
)


def load(family: str) -> Netdef:
    """The declaration of netdef ``family`` (imports ``netdefs.<family>``)."""
    if family not in FAMILIES:
        raise KeyError(f"no netdef family {family!r}; known: {', '.join(FAMILIES)}")
    return importlib.import_module(f"{__name__}.{family}").NETDEF
