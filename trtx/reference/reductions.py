"""Contractions and reductions: MatrixMultiply, Einsum, SoftMax, Reduce, TopK, Normalization, Cumulative,
RaggedSoftMax.

Semantics: docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/{MatrixMultiply,Einsum,SoftMax,Reduce,
TopK,Normalization,Cumulative,RaggedSoftMax}.html.
"""

from __future__ import annotations

import torch

from trtx import layers as L
from trtx.reference.core import LayerCall, implements


@implements("MATRIX_MULTIPLY")
def matrix_multiply(call: LayerCall) -> list[torch.Tensor]:
    """NONE: [..., M, K]; TRANSPOSE: the last two dims swapped; VECTOR: [..., K] taken as a vector."""
    layer = call.layer
    a, b = call.x(0), call.x(1)
    if not (a.dtype.is_floating_point and b.dtype.is_floating_point):
        raise call.unsupported(f"integer matrix multiply ({a.dtype} x {b.dtype})")
    ops = (layer.op0.name, layer.op1.name)
    for op, name in zip(ops, ("op0", "op1")):
        if op not in ("NONE", "TRANSPOSE", "VECTOR"):
            raise call.unsupported(name, op)
    if ops[0] == "TRANSPOSE":
        a = a.transpose(-1, -2)
    if ops[1] == "TRANSPOSE":
        b = b.transpose(-1, -2)
    if ops[0] == "VECTOR":
        a = a.unsqueeze(-2)
    if ops[1] == "VECTOR":
        b = b.unsqueeze(-1)
    y = torch.matmul(a, b)
    if ops[1] == "VECTOR":
        y = y.squeeze(-1)
    if ops[0] == "VECTOR":
        y = y.squeeze(-1 if ops[1] == "VECTOR" else -2)
    return [y]


@implements("EINSUM")
def einsum(call: LayerCall) -> list[torch.Tensor]:
    xs = [call.x(i) for i in range(len(call.inputs))]
    return [torch.einsum(str(call.layer.equation), *xs)]


def _axes(call: LayerCall, rank: int) -> list[int]:
    axes = L.axes_list(int(call.layer.axes), 32)
    if any(a >= rank for a in axes):
        raise call.error(f"axes bitmask {int(call.layer.axes):#b} names an axis beyond rank {rank}")
    return axes


@implements("SOFTMAX")
def softmax(call: LayerCall) -> list[torch.Tensor]:
    x = call.x(0)
    axes = _axes(call, x.dim())
    if len(axes) != 1:
        raise call.error(f"softmax axes bitmask must name exactly one axis, got {axes}")
    return [torch.softmax(x, dim=axes[0])]


@implements("REDUCE")
def reduce(call: LayerCall) -> list[torch.Tensor]:
    layer = call.layer
    x = call.x(0)
    axes = _axes(call, x.dim())
    keep = bool(layer.keep_dims)
    op = layer.op.name
    if not axes:
        return [x]
    if op == "SUM":
        y = x.sum(dim=axes, keepdim=keep)
    elif op == "AVG":
        y = x.mean(dim=axes, keepdim=keep) if x.dtype.is_floating_point else None
        if y is None:
            raise call.unsupported(f"op=AVG on {x.dtype}")
    elif op == "MAX":
        y = x.amax(dim=axes, keepdim=keep)
    elif op == "MIN":
        y = x.amin(dim=axes, keepdim=keep)
    elif op == "PROD":
        y = x
        for a in sorted(axes, reverse=True):
            y = y.prod(dim=a, keepdim=keep)
    else:
        raise call.unsupported("op", layer.op)
    return [y]


@implements("TOPK")
def topk(call: LayerCall) -> list[torch.Tensor]:
    layer = call.layer
    x = call.x(0)
    axes = _axes(call, x.dim())
    if len(axes) != 1:
        raise call.error(f"TopK axes bitmask must name exactly one axis, got {axes}")
    k_input = call.optional(1)
    k = call.ints(k_input)[0] if k_input is not None else int(layer.k)
    if not 0 <= k <= x.shape[axes[0]]:
        raise call.error(f"k={k} exceeds dimension {axes[0]} of size {x.shape[axes[0]]}")
    largest = layer.op.name == "MAX"
    if layer.op.name not in ("MAX", "MIN"):
        raise call.unsupported("op", layer.op)
    if k == 1:  # one pass, and equal values resolve to the first index (topk leaves that open)
        values, indices = (torch.max if largest else torch.min)(x, dim=axes[0], keepdim=True)
        return [values, indices]
    values, indices = torch.topk(x, k, dim=axes[0], largest=largest, sorted=True)
    return [values, indices]


@implements("NORMALIZATION")
def normalization(call: LayerCall) -> list[torch.Tensor]:
    """Y = (X - Mean(X, axes)) / sqrt(Var(X, axes) + epsilon) · S + B; num_groups splits the channels (dim 1)."""
    layer = call.layer
    x, s, b = call.x(0), call.x(1), call.x(2)
    axes = _axes(call, x.dim())
    eps = float(layer.epsilon)
    groups = int(layer.num_groups)
    if groups == 1:
        mean = x.mean(dim=axes, keepdim=True)
        var = x.var(dim=axes, keepdim=True, unbiased=False)
        y = (x - mean) / torch.sqrt(var + eps)
    else:
        n, c = x.shape[0], x.shape[1]
        if x.dim() < 3 or c % groups:
            raise call.error(f"{c} channels are not divisible into {groups} groups")
        if 0 in axes or 1 in axes:
            raise call.unsupported(f"group normalization over axes {axes} (expected spatial axes only)")
        xg = x.reshape((n, groups, c // groups) + tuple(x.shape[2:]))
        dims = [2] + [a + 1 for a in axes]
        mean = xg.mean(dim=dims, keepdim=True)
        var = xg.var(dim=dims, keepdim=True, unbiased=False)
        y = ((xg - mean) / torch.sqrt(var + eps)).reshape(x.shape)
        if s.dim() >= 2 and s.shape[1] == groups and groups != c:  # add_normalization: per-group S and B
            s = s.repeat_interleave(c // groups, dim=1)
            b = b.repeat_interleave(c // groups, dim=1)
    return [y * s + b]


@implements("CUMULATIVE")
def cumulative(call: LayerCall) -> list[torch.Tensor]:
    layer = call.layer
    x = call.x(0)
    axis = call.ints(call.input(1))[0]
    if not -x.dim() <= axis < x.dim():
        raise call.error(f"axis {axis} is out of range for rank {x.dim()}")
    if layer.op.name != "SUM":
        raise call.unsupported("op", layer.op)
    if layer.reverse:
        x = x.flip(axis)
    y = torch.cumsum(x, dim=axis)
    if layer.exclusive:
        y = y - x
    if layer.reverse:
        y = y.flip(axis)
    return [y]


@implements("RAGGED_SOFTMAX")
def ragged_softmax(call: LayerCall) -> list[torch.Tensor]:
    """Softmax over the first ``bounds`` elements of the last axis; the elements past the bound are 0
    (RaggedSoftMax.html: input [..., n], bounds [..., 1] int32)."""
    x, bounds = call.x(0), call.input(1)
    if bounds.shape != x.shape[:-1] + (1,):
        raise call.error(f"bounds {tuple(bounds.shape)} must be the input's shape {tuple(x.shape)} with a last dim 1")
    inside = torch.arange(x.shape[-1], device=x.device) < bounds.to(torch.int64)
    y = torch.softmax(x.masked_fill(~inside, float("-inf")), dim=-1)
    return [torch.where(inside, y, torch.zeros_like(y))]  # a bound of 0 gives a row of zeros, not NaN
