"""The netdef declaration: the one typed object a netdef module exports as ``NETDEF``.

``trtx.cli.main(NETDEF)`` gives it ``build check inspect infer bench`` (and its own extra commands);
``python -m netdefs`` lists its models and runs them by name. Both read the fields below and nothing else: a
netdef is what it declares here, never what a module happens to define.

The smallest complete example is ``netdefs/lenet.py`` (docs/netdefs.md walks through it)::

    NETDEF = Netdef(
        name="lenet",
        description="LeNet-5 (tensorrtx's first example)",
        archs=("lenet5",),
        configure=configure,          # (args, weights, meta) -> cfg
        define=define,                # (net, cfg) -> None: adds the layers, marks the outputs
        torch=TorchSide(model=torch_model, forward=torch_forward, source=source_model),
        app=App(preprocess=preprocess, postprocess=postprocess),
    )
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: (name, passed, detail): one extra verdict row of ``check`` (e.g. "detections after NMS")
CheckRow = tuple[str, bool, str]


def default_forward(model: Any, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """The PyTorch model's forward on the feeds in network-input order; its result is the output ``output``."""
    return {"output": model(*feeds.values())}


@dataclass(frozen=True)
class TorchSide:
    """The PyTorch model a netdef mirrors: what ``check`` compares against and ``gen_wts.py`` dumps."""

    #: (cfg, weights) -> the torch.nn.Module in eval mode with these weights loaded
    model: Callable[[Any, Any], Any]
    #: (module, feeds) -> {network output name: tensor}; the network's outputs as PyTorch computes them
    forward: Callable[[Any, Mapping[str, Any]], dict[str, Any]] = default_forward
    #: (cfg, image path or None, batch, seed) -> {input name: array}: an image through the netdef's preprocessing,
    #: or a seeded random input; None: seeded standard-normal inputs of the network's input shapes
    feeds: Callable[[Any, str | None, int, int], dict[str, np.ndarray]] | None = None
    #: (cfg, network outputs, PyTorch outputs, precision) -> extra verdict rows (post-NMS detections, top-k)
    extra: Callable[[Any, Mapping[str, Any], Mapping[str, Any], str], list[CheckRow]] | None = None
    #: arch (None: the default) -> a random-init torch.nn.Module, for ``gen_wts.py --model netdef:<name>[:arch]``
    source: Callable[[str | None], Any] | None = None


#: run(feeds) -> outputs as numpy: one network, on the reference executor or a TensorRT engine
Runner = Callable[[Mapping[str, Any]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class App:
    """What ``infer`` and ``bench`` do around the network: images in, results out.

    A single network: ``preprocess`` -> the network -> ``postprocess``. A multi-network netdef (``networks``)
    declares ``pipeline`` instead: it calls its networks itself, as many times as it needs (an image pyramid,
    one call per stage)."""

    #: (BGR uint8 images, cfg) -> ({input name: array}, context for postprocess)
    preprocess: Callable[[list[np.ndarray], Any], tuple[dict[str, Any], Any]] | None = None
    #: (outputs, context, cfg) -> one result per image
    postprocess: Callable[[dict[str, Any], Any, Any], list[Any]] | None = None
    #: ({network name: Runner}, BGR uint8 images, cfg) -> one result per image (multi-network netdefs)
    pipeline: Callable[[Mapping[str, Runner], list[np.ndarray], Any], list[Any]] | None = None
    #: (BGR image, result, cfg) -> annotated copy; None: no picture is written
    render: Callable[[np.ndarray, Any, Any], np.ndarray] | None = None
    #: (result, cfg) -> a JSON-able dict written next to the picture; None: no JSON
    result_json: Callable[[Any, Any], dict[str, Any]] | None = None
    #: (result, cfg) -> the one line ``infer`` prints per image; None: the result's repr
    summary: Callable[[Any, Any], str] | None = None
    #: (result, cfg) -> the result as a list of JSON-able records, what ``infer --json`` prints per image;
    #: None: ``result_json``'s dict
    records: Callable[[Any, Any], list[dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        if (self.pipeline is None) == (self.preprocess is None or self.postprocess is None):
            raise ValueError("App: give preprocess and postprocess (one network) or pipeline (several)")


@dataclass(frozen=True)
class Network:
    """One network of a multi-network netdef (MTCNN's P-Net, R-Net and O-Net): its own engine, its own check.

    Its layers are named by module path in the netdef's PyTorch model (``TorchSide.model``, a container of the
    pipeline's modules: ``pnet.conv1``), and it reads its weights under the same prefix from the one weights
    file of the pipeline."""

    #: the network's name: ``--network`` choice, engine file ``<stem>.<name>.engine``
    name: str
    #: (net, cfg) -> None: adds the layers and marks the outputs
    define: Callable[[Any, Any], None]
    #: (container module, feeds) -> {output name: tensor}: this network's outputs as PyTorch computes them
    forward: Callable[[Any, Mapping[str, Any]], dict[str, Any]] = default_forward
    #: (cfg, image path or None, batch, seed) -> {input name: array}; None: seeded standard-normal inputs
    feeds: Callable[[Any, str | None, int, int], dict[str, np.ndarray]] | None = None
    #: one line for ``python -m netdefs list`` and ``--help``
    description: str = ""


@dataclass(frozen=True)
class Command:
    """A netdef-specific subcommand (e.g. retinaface's ``import-onnx``)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Model:
    """One model name ``python -m netdefs`` knows, and the netdef options that select it."""

    name: str
    #: netdef CLI options filled in for this model (``("--arch", "resnet50")``); empty: the netdef's only model
    options: tuple[str, ...] = ()
    default: bool = False


@dataclass(frozen=True)
class Netdef:
    """Everything the shared CLI and ``python -m netdefs`` know about a netdef."""

    #: family name: ``python -m netdefs <name>``, engine metadata's ``netdef``, default engine file name
    name: str
    #: one line for ``--help``
    description: str
    #: (args, weights or None, engine metadata or None) -> cfg; from the weights for build/check/inspect and
    #: ``--backend reference``, from an engine's metadata for ``--backend trt`` (then weights is None)
    configure: Callable[[argparse.Namespace, Any, dict[str, Any] | None], Any]
    #: (net, cfg) -> None: adds the layers (named after PyTorch module paths) and marks the outputs; None for a
    #: multi-network netdef, whose ``networks`` each define their own
    define: Callable[[Any, Any], None] | None = None
    #: the networks of a multi-network netdef (one engine each); empty: the netdef is one network (``define``)
    networks: tuple[Network, ...] = ()
    #: ``--arch`` choices (empty: no ``--arch`` option) and its default (None: read from the weights by configure)
    archs: tuple[str, ...] = ()
    default_arch: str | None = None
    #: model names for ``python -m netdefs`` when they are not simply the archs (yolov5s-seg -> --variant s
    #: --task seg); empty: one model per arch, or the netdef's name when it has no archs
    models: tuple[Model, ...] = ()
    torch: TorchSide | None = None
    app: App | None = None
    #: (parser, command) -> None: the netdef's own options for each shared command
    add_arguments: Callable[[argparse.ArgumentParser, str], None] | None = None
    commands: Mapping[str, Command] = field(default_factory=dict)
    #: (cfg, weight key) -> why the network leaves it unread by design (a training-only head), or None
    unused_reason: Callable[[Any, str], str | None] | None = None
    #: how users run it, shown as the program name in ``--help``
    script: str | None = None

    def __post_init__(self) -> None:
        if self.define is not None and self.networks:
            raise ValueError(f"netdef {self.name}: give define (one network) or networks (several), not both")
        if len({n.name for n in self.networks}) != len(self.networks):
            raise ValueError(f"netdef {self.name}: network names repeat")
        if self.archs and self.default_arch is not None and self.default_arch not in self.archs:
            raise ValueError(f"netdef {self.name}: default_arch {self.default_arch!r} is not one of its archs")
        defaults = [m.name for m in self.models if m.default]
        if len(defaults) > 1:
            raise ValueError(f"netdef {self.name}: several default models {defaults}")

    def network(self, name: str | None) -> Network:
        """The network called ``name`` (None: the netdef's only network, ``define``, as a :class:`Network`)."""
        if not self.networks:
            forward = self.torch.forward if self.torch is not None else default_forward
            feeds = self.torch.feeds if self.torch is not None else None
            return Network(self.name, self.define, forward, feeds)
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(name)

    def model_names(self) -> tuple[Model, ...]:
        """Every model this netdef serves, with the options that select it."""
        if self.models:
            return self.models
        if self.archs:
            return tuple(Model(a, ("--arch", a), a == self.default_arch) for a in self.archs)
        return (Model(self.name, (), True),)


def seeded_normal_feeds(shapes: Mapping[str, Sequence[int]], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal float32 inputs of ``shapes`` (-1: the batch axis), reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal([batch if d == -1 else d for d in shape]).astype(np.float32)
        for name, shape in shapes.items()
    }
