"""Model sources by spec: the PyTorch models ``gen_wts.py --model`` dumps and ``check --model`` compares with,
built from installed packages so nothing has to be downloaded.

=========================  ==========================================================================
``torchvision:<arch>``     ``torchvision.models.get_model(arch, weights=None)``
``yolov5:<name>``          the yolov5 package's yaml: ``yolov5s``, ``yolov5n6`` (P6), ``yolov5s-seg``,
                           ``yolov5s-cls`` (netdefs/yolov5/source.py)
``ultralytics:<stem>``     an ultralytics model yaml by stem: ``yolov8n``, ``yolo11s-seg``, ``rtdetr-l``
                           (netdefs/ultralytics/source.py)
``retinaface:<mnet|r50>``  biubug6's RetinaFace (batch-face's copy, biubug6 key names), test phase
                           (netdefs/retinaface/source.py)
``netdef:<family>[:arch]`` the netdef's own random-init model (``NETDEF.torch.source(arch)``)
=========================  ==========================================================================

A source is a :class:`Source` in :data:`SOURCES`; a model family with its own package declares it as
``SOURCE`` in the package's ``source.py`` and names that module in :data:`FAMILY_SOURCES`. :func:`build_model`
returns the model in eval mode. With a ``seed`` it is reproducible, and normalization layers get random
statistics and affine parameters (constructors set them to 0/1, which would hide mistakes in how a netdef folds
them). :func:`state_dict_for_wts` is what ``gen_wts.py`` writes: the state_dict plus each source's extra
entries (tensorrtx's yolov5 ``anchor_grid``...); :func:`load_checkpoint` reads a checkpoint with every
source's unpickling aliases. Generic helpers (loading a state back, sample photos) are in :mod:`trtx.sources`.
torch and the model packages are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trtx import sources as trtx_sources
from trtx.sources import SourceError, quiet, randomize_norms, seeded

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Source:
    """One model source: ``build(name)`` -> its random-init torch.nn.Module, and optional hooks."""

    build: Callable[[str], Any]
    #: (model, state, task) -> state with the entries gen_wts.py adds for this source's models (called for every
    #: model written: it returns the state of models that are not its own unchanged)
    wts_extras: Callable[[Any, dict[str, np.ndarray], str | None], dict[str, np.ndarray]] | None = None
    #: (name) -> the task the spec names (gen_wts.py --type's default)
    task: Callable[[str], str | None] | None = None
    #: () -> a context manager in effect while a trusted pickled checkpoint is loaded (module aliases)
    unpickling: Callable[[], contextlib.AbstractContextManager] | None = None
    #: (model, seed) -> None: randomizes the normalization layers of a seeded model (default
    #: :func:`trtx.sources.randomize_norms`)
    randomize: Callable[[Any, int], None] | None = None


def _torchvision(name: str):
    import torchvision

    if name not in torchvision.models.list_models():
        raise SourceError(f"torchvision has no model {name!r}; see torchvision.models.list_models()")
    kwargs = {"weights": None}
    if "weights_backbone" in inspect.signature(torchvision.models.get_model_builder(name)).parameters:
        kwargs["weights_backbone"] = None  # detection/segmentation models would download a backbone
    return torchvision.models.get_model(name, **kwargs)


def _netdef(name: str):
    import netdefs

    family, _, arch = name.partition(":")
    try:
        netdef = netdefs.load(family)
    except KeyError as exc:
        raise SourceError(exc.args[0]) from None
    if netdef.torch is None or netdef.torch.source is None:
        raise SourceError(f"netdef {family} declares no PyTorch source model (NETDEF.torch.source)")
    if arch and netdef.archs and arch not in netdef.archs:  # a netdef without archs names its models itself
        raise SourceError(f"netdef {family} has no arch {arch!r} (archs: {', '.join(netdef.archs)})")
    return netdef.torch.source(arch or None)


#: spec prefix -> the module declaring its ``SOURCE`` (a model family's package), imported when first used
FAMILY_SOURCES = {
    "yolov5": "netdefs.yolov5.source",
    "ultralytics": "netdefs.ultralytics.source",
    "retinaface": "netdefs.retinaface.source",
}
_BUILTIN = {"torchvision": Source(_torchvision), "netdef": Source(_netdef)}
#: every spec prefix, in the order the docs list them
SOURCES = ("torchvision", "yolov5", "ultralytics", "retinaface", "netdef")


def source(prefix: str) -> Source:
    """The :class:`Source` of a spec prefix."""
    if prefix in _BUILTIN:
        return _BUILTIN[prefix]
    return importlib.import_module(FAMILY_SOURCES[prefix]).SOURCE


def parse_spec(spec: str) -> tuple[str, str]:
    prefix, sep, name = spec.partition(":")
    if not sep or not name or prefix not in SOURCES:
        raise SourceError(f"model spec {spec!r} is not SOURCE:NAME with SOURCE one of {', '.join(SOURCES)}")
    return prefix, name


def build_model(spec: str, *, seed: int | None = None) -> torch.nn.Module:
    """Build the PyTorch model named by ``spec`` (see the module doc) in eval mode, float32, on the CPU.

    ``seed`` makes the random initialization reproducible and randomizes normalization statistics.
    """
    prefix, name = parse_spec(spec)
    with quiet(), seeded(seed):
        model = source(prefix).build(name)
    if seed is not None:
        (source(prefix).randomize or randomize_norms)(model, seed)
    return model.float().eval()


def spec_task(spec: str | None) -> str | None:
    """The task a spec names (``detect``/``seg``/``cls`` for yolov5 specs), None where its source has none."""
    if spec is None:
        return None
    prefix, name = parse_spec(spec)
    task = source(prefix).task
    return task(name) if task is not None else None


def state_dict_for_wts(
    model: torch.nn.Module, spec: str | None = None, *, task: str | None = None
) -> dict[str, np.ndarray]:
    """``name -> flat float32 array`` to write: every state_dict entry (integers as float), plus the entries
    each source adds for its models (tensorrtx's ``anchor_grid`` and ``strides`` for yolov5 detect/seg; for
    ultralytics models ``<head>.kpt_shape`` and a checkpoint's class ``names``).

    ``task`` (``detect``, ``seg``, ``cls``) defaults to what ``spec`` names; without either, a model whose last
    layer is a yolov5 Detect/Segment head gets the yolov5 extras.
    """
    task = task or spec_task(spec)
    state = {key: value.detach().cpu().float().reshape(-1).numpy() for key, value in model.state_dict().items()}
    for prefix in SOURCES:
        hook = source(prefix).wts_extras
        if hook is not None:
            state = hook(model, state, task)
    return state


def extra_keys(model: torch.nn.Module) -> list[str]:
    """The entries :func:`state_dict_for_wts` adds to ``model``'s state_dict: ignored when weights written with
    them are loaded back into the model."""
    return sorted(set(state_dict_for_wts(model)) - set(model.state_dict()))


def load_checkpoint(path: str | os.PathLike, *, unsafe_pickle: bool = False) -> dict[str, Any] | torch.nn.Module:
    """:func:`trtx.sources.load_checkpoint` with every source's unpickling aliases in effect (original yolov5
    checkpoints pickle ``models.yolo.*``)."""
    with contextlib.ExitStack() as stack:
        if unsafe_pickle:
            for prefix in SOURCES:
                if source(prefix).unpickling is not None:
                    stack.enter_context(source(prefix).unpickling())
        return trtx_sources.load_checkpoint(path, unsafe_pickle=unsafe_pickle)
