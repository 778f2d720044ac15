"""One deliberate mistake in a netdef, made while it defines its network: what ``check`` must find.

A :class:`Mutation` changes exactly one layer the way a hand-written netdef gets it wrong: a stride, a padding, the
groups of a convolution, a batch norm's eps, an activation, a dropped bias, a dropped residual add, a concatenation
in the wrong order, a weight off by 1%. It hooks the :class:`trtx.net.Net` helpers the netdefs call (``conv``,
``batchnorm``, ``array``) and ``Net.name``, which every netdef calls on every layer it makes, so the mistake is
in place before the netdef reads the shapes after it -- exactly as if the netdef's source said so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from trtx import layers as layer_api
from trtx.net import Net
from trtx_base.dtypes import np_dtype


@dataclass(frozen=True)
class Mutation:
    #: stride | padding | groups | eps | activation | bias | drop_add | swap_concat | scale_weight
    kind: str
    #: the layer (or, for scale_weight, the weight key) changed
    target: str
    #: the layer ``check`` must name first divergent (default: ``target``; a weight's layer for scale_weight)
    expect: str | None = None

    @property
    def expected(self) -> str:
        return self.expect or (self.target.rsplit(".", 1)[0] if self.kind == "scale_weight" else self.target)

    def __str__(self) -> str:
        return f"{self.kind}@{self.target}"


@contextlib.contextmanager
def applied(m: Mutation) -> Iterator[list[str]]:
    """Apply ``m`` to every network defined inside; yields the list of layers it changed (to assert it hit)."""
    hits: list[str] = []
    conv, batchnorm, linear, array, name = Net.conv, Net.batchnorm, Net.linear, Net.array, Net.name

    def mutated_conv(self, x, path, kernel, **kw):
        if path == m.target and m.kind in ("stride", "padding", "groups", "bias"):
            hits.append(path)
            if m.kind == "stride":
                kw["stride"] = _bumped(kw.get("stride", 1))
            elif m.kind == "padding":
                kw["padding"] = _bumped(kw.get("padding", 0))
            elif m.kind == "groups":
                kw["groups"] = kw.get("groups", 1) * 2
            else:
                kw["bias"] = False
        return conv(self, x, path, kernel, **kw)

    def mutated_linear(self, x, path, **kw):
        if path == m.target and m.kind == "bias":
            hits.append(path)
            kw["bias"] = False
        return linear(self, x, path, **kw)

    def mutated_batchnorm(self, x, path, eps=1e-5):
        if path == m.target and m.kind == "eps":
            hits.append(path)
            eps = 1e-3 if eps != 1e-3 else 1e-5
        return batchnorm(self, x, path, eps)

    def mutated_array(self, key, shape=None, *, layer=None):
        value = array(self, key, shape, layer=layer)
        if key == m.target and m.kind == "scale_weight":
            hits.append(key)
            value = value * np.float32(1.01)
        return value

    def mutated_name(self, layer, layer_name):
        if m.kind in ("activation", "drop_add", "swap_concat", "stride", "padding") and layer_name in (
            m.target,
            f"{m.target}.gate",
        ):
            _mutate_layer(self, layer, m, hits)
        return name(self, layer, layer_name)

    Net.conv, Net.batchnorm, Net.linear, Net.array, Net.name = (
        mutated_conv,
        mutated_batchnorm,
        mutated_linear,
        mutated_array,
        mutated_name,
    )
    try:
        yield hits
    finally:
        Net.conv, Net.batchnorm, Net.linear, Net.array, Net.name = conv, batchnorm, linear, array, name


def _bumped(value):
    if isinstance(value, int):
        return value + 1
    return tuple(v + 1 for v in value)


def _mutate_layer(net: Net, layer, m: Mutation, hits: list[str]) -> None:
    """The layer-level mistakes: pooling geometry, activation type, a dropped add, concatenation order."""
    trt = net.trt
    kind = layer_api.enum_name(layer_api.layer_type(layer))
    typed = layer_api.typed(layer)
    if m.kind in ("stride", "padding") and kind == "POOLING":
        attr = "stride_nd" if m.kind == "stride" else "padding_nd"
        setattr(typed, attr, tuple(int(v) + 1 for v in getattr(typed, attr)))
    elif m.kind == "activation" and kind == "ACTIVATION":
        A = trt.ActivationType  # noqa: N806
        new = {A.RELU: A.LEAKY_RELU, A.SIGMOID: A.HARD_SIGMOID}.get(typed.type, A.RELU)
        typed.type = new
        typed.alpha, typed.beta = (0.1, 0.0) if new == trt.ActivationType.LEAKY_RELU else (1 / 6, 0.5)
    elif m.kind == "drop_add" and kind == "ELEMENTWISE" and typed.op == trt.ElementWiseOperation.SUM:
        rank = len(layer.get_input(0).shape)
        zeros = np.zeros((1,) * rank, np_dtype(layer.get_input(0).dtype))
        layer.set_input(1, net.network.add_constant(zeros.shape, net.trt_weights(zeros, zeros.dtype)).get_output(0))
    elif m.kind == "swap_concat" and kind == "CONCATENATION" and layer.num_inputs >= 2:
        a, b = layer.get_input(0), layer.get_input(1)
        layer.set_input(0, b)
        layer.set_input(1, a)
    else:
        return
    hits.append(m.target)
