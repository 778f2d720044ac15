"""Convolution, deconvolution, pooling, padding and LRN.

Padding-mode formulas (I input, B pre, A post, S stride, DK = 1 + D·(F-1)) follow
docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Convolution.html, Deconvolution.html and
Pooling.html.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from trtx import layers as L
from trtx.reference.core import LayerCall, implements

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def _pad_last(x: torch.Tensor, pads: list[tuple[int, int]], value: float = 0.0) -> torch.Tensor:
    """Pad (negative = crop) the last ``len(pads)`` dims by (pre, post) each."""
    flat: list[int] = []
    for pre, post in reversed(pads):
        flat += [pre, post]
    if not any(flat):
        return x
    return F.pad(x, flat, value=value)


def forward_padding(call: LayerCall, spatial, window, stride, dilation) -> list[tuple[int, int, int]]:
    """(pre, post, extra post for EXPLICIT_ROUND_UP) per spatial dim of a convolution or pooling."""
    trt = call.trt
    layer = call.layer
    mode = layer.padding_mode
    pre, post = L.dims(layer.pre_padding), L.dims(layer.post_padding)
    out = []
    for i, size in enumerate(spatial):
        dk = 1 + dilation[i] * (window[i] - 1)
        s = stride[i]
        if mode == trt.PaddingMode.EXPLICIT_ROUND_DOWN:
            out.append((pre[i], post[i], 0))
        elif mode == trt.PaddingMode.EXPLICIT_ROUND_UP:
            m = size + pre[i] + post[i]
            o = -(-(m - dk) // s) + 1
            out.append((pre[i], post[i], max((o - 1) * s + dk - m, 0)))
        elif mode in (trt.PaddingMode.SAME_UPPER, trt.PaddingMode.SAME_LOWER):
            p = max((size - 1) // s * s + dk - size, 0)
            small = p // 2
            b, a = (small, p - small) if mode == trt.PaddingMode.SAME_UPPER else (p - small, small)
            out.append((b, a, 0))
        else:
            raise call.unsupported("padding_mode", mode)
    return out


def _static_weights(call: LayerCall, c: int, transposed: bool, static: bool = False):
    """(kernel shape, kernel, bias) from the layer's weights (None where they come from inputs 1/2), checked.
    ``static``: the layer's own weights whatever the call's other inputs are (a fused node's)."""
    layer = call.layer
    kernel = L.dims(layer.kernel_size_nd)
    groups = int(layer.num_groups)
    k = int(layer.num_output_maps)
    shape = (c, k // groups, *kernel) if transposed else (k, c // groups, *kernel)
    kernel_input = not static and call.optional(1) is not None
    w = None if kernel_input else call.weights(layer.kernel)
    if not kernel_input and w is None:
        raise call.error("has no kernel weights")
    b = None if not static and call.optional(2) is not None else call.weights(layer.bias)
    if w is not None:
        w = _checked_kernel(call, w, shape, c, groups)
    if b is not None:
        b = _checked_bias(call, b, k)
    return shape, w, b


def _checked_kernel(call: LayerCall, w: torch.Tensor, shape, c: int, groups: int) -> torch.Tensor:
    if w.numel() != math.prod(shape):
        raise call.error(f"kernel has {w.numel()} values, expected {shape} for input channels {c}, groups {groups}")
    return w.reshape(shape).contiguous()


def _checked_bias(call: LayerCall, b: torch.Tensor, k: int) -> torch.Tensor:
    if b.numel() != k:
        raise call.error(f"bias has {b.numel()} values, expected {k}")
    return b.reshape(k)


def _conv_weights(call: LayerCall, x: torch.Tensor, shape, w, b):
    """This run's kernel and bias: the layer's own (converted once) or inputs 1/2 (Q/DQ weights)."""
    c = x.shape[1]
    groups = int(call.layer.num_groups)
    if w is None:
        w = _checked_kernel(call, call.input(1).float(), shape, c, groups)
    if b is None and call.optional(2) is not None:
        b = _checked_bias(call, call.input(2).float(), int(call.layer.num_output_maps))
    return w, b


def _check_rank(call: LayerCall, x: torch.Tensor, nd: int) -> None:
    if x.dim() != nd + 2:
        raise call.unsupported(f"input rank {x.dim()} with a {nd}-D kernel (expected rank {nd + 2})")


class ConvSetup(NamedTuple):
    """What a convolution needs for one input shape: kernel/bias (None: from inputs 1/2), the padding as the
    convolution's own (symmetric) or as an explicit pad first, and the CPU layout."""

    shape: tuple[int, ...]
    w: torch.Tensor | None
    b: torch.Tensor | None
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    pads: list[tuple[int, int]] | None  # explicit (pre, post) per spatial dim; None: ``padding`` does it
    padding: tuple[int, ...] | int
    nd: int
    layout: torch.memory_format | None


def conv_setup(call: LayerCall, x: torch.Tensor, static: bool = False) -> ConvSetup:
    """The convolution of ``call`` for inputs shaped like ``x`` (``static``: weights from the layer only)."""
    layer = call.layer
    kernel = L.dims(layer.kernel_size_nd)
    nd = len(kernel)
    _check_rank(call, x, nd)
    shape, w, b = _static_weights(call, x.shape[1], transposed=False, static=static)
    stride, dilation = L.dims(layer.stride_nd), L.dims(layer.dilation_nd)
    pads = [(pre, post + extra) for pre, post, extra in forward_padding(call, x.shape[2:], kernel, stride, dilation)]
    symmetric = all(pre == post for pre, post in pads)  # the convolution pads itself: no padded copy of x
    padding = tuple(pre for pre, _ in pads) if symmetric else 0
    layout = _CHANNELS_LAST.get(nd) if call.device.type == "cpu" else None
    if layout is not None and w is not None:
        w = w.contiguous(memory_format=layout)
    return ConvSetup(shape, w, b, stride, dilation, int(layer.num_groups), None if symmetric else pads, padding, nd,
                     layout)  # fmt: skip


def convolve(call: LayerCall, x: torch.Tensor, setup: ConvSetup) -> torch.Tensor:
    """The convolution ``setup`` describes, applied to ``x``."""
    w, b = _conv_weights(call, x, setup.shape, setup.w, setup.b)
    if setup.pads is not None:
        x = _pad_last(x, setup.pads)
    if setup.layout is not None:  # oneDNN's convolutions run fastest on channels-last tensors on the CPU
        x = x.contiguous(memory_format=setup.layout)
    s = setup
    return _CONV[s.nd](x, w, b, stride=s.stride, padding=s.padding, dilation=s.dilation, groups=s.groups)


@implements("CONVOLUTION")
def convolution(call: LayerCall) -> list[torch.Tensor]:
    x = call.x(0)
    return [convolve(call, x, call.memo(("conv", x.shape), lambda: conv_setup(call, x)))]


def _deconv_setup(call: LayerCall, x: torch.Tensor):
    trt = call.trt
    layer = call.layer
    kernel = L.dims(layer.kernel_size_nd)
    nd = len(kernel)
    _check_rank(call, x, nd)
    shape, w, b = _static_weights(call, x.shape[1], transposed=True)
    stride, dilation = L.dims(layer.stride_nd), L.dims(layer.dilation_nd)
    mode = layer.padding_mode
    if mode in (trt.PaddingMode.EXPLICIT_ROUND_DOWN, trt.PaddingMode.EXPLICIT_ROUND_UP):
        crops = list(zip(L.dims(layer.pre_padding), L.dims(layer.post_padding)))
    elif mode in (trt.PaddingMode.SAME_UPPER, trt.PaddingMode.SAME_LOWER):
        crops = []
        for i in range(nd):
            p = max(1 + dilation[i] * (kernel[i] - 1) - stride[i], 0)
            small = p // 2
            crops.append((small, p - small) if mode == trt.PaddingMode.SAME_UPPER else (p - small, small))
    else:
        raise call.unsupported("padding_mode", mode)
    if any(c < 0 for pair in crops for c in pair):
        raise call.unsupported(f"negative deconvolution padding {crops}")
    return shape, w, b, stride, dilation, int(layer.num_groups), crops, nd


@implements("DECONVOLUTION")
def deconvolution(call: LayerCall) -> list[torch.Tensor]:
    x = call.x(0)
    shape, w, b, stride, dilation, groups, crops, nd = call.memo(("deconv", x.shape), lambda: _deconv_setup(call, x))
    w, b = _conv_weights(call, x, shape, w, b)
    y = _CONV_T[nd](x, w, None, stride=stride, dilation=dilation, groups=groups)
    y = _pad_last(y, [(-pre, -post) for pre, post in crops])
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return [y]


def _pool_setup(call: LayerCall, x: torch.Tensor):
    trt = call.trt
    layer = call.layer
    kind = layer.type  # IPoolingLayer.type is the PoolingType
    if kind not in (trt.PoolingType.MAX, trt.PoolingType.AVERAGE, trt.PoolingType.MAX_AVERAGE_BLEND):
        raise call.unsupported("type", kind)
    window = L.dims(layer.window_size_nd)
    nd = len(window)
    if x.dim() < nd + 1:
        raise call.unsupported(f"input rank {x.dim()} with a {nd}-D window")
    stride = L.dims(layer.stride_nd)
    spatial = tuple(x.shape[-nd:])
    pads = forward_padding(call, spatial, window, stride, (1,) * nd)
    padded = [(pre, post + extra) for pre, post, extra in pads]
    divisor = None
    if kind != trt.PoolingType.MAX:
        ones = torch.ones((1, 1) + spatial, dtype=torch.float32, device=call.device)
        if layer.average_count_excludes_padding:
            mask = _pad_last(ones, padded)
        else:  # the window's overlap with the padded input; EXPLICIT_ROUND_UP's extra cells are not input
            mask = _pad_last(
                _pad_last(ones, [(pre, post) for pre, post, _ in pads], value=1.0), [(0, e) for *_, e in pads]
            )
        divisor = _window_sum(mask, window, stride)
    # max pooling pads with -inf itself when the padding is symmetric and at most half the window
    own = all(pre == post and 2 * pre <= w for (pre, post), w in zip(padded, window))
    max_padding = tuple(pre for pre, _ in padded) if own else None
    return kind.name, window, stride, padded, max_padding, divisor, float(layer.blend_factor), nd


@implements("POOLING")
def pooling(call: LayerCall) -> list[torch.Tensor]:
    x = call.x(0)
    kind, window, stride, padded, max_padding, divisor, blend, nd = call.memo(
        ("pool", x.shape), lambda: _pool_setup(call, x)
    )
    if kind == "MAX" and x.dim() == nd + 2:  # [N, C, spatial] as it is (channels-last stays channels-last)
        if max_padding is not None:
            return [_MAX_POOL[nd](x, window, stride, padding=max_padding)]
        return [_MAX_POOL[nd](_pad_last(x, padded, value=-math.inf), window, stride)]
    lead = x.shape[:-nd]
    x = x.reshape((-1, 1) + tuple(x.shape[-nd:]))  # pool every leading dim independently
    if kind != "AVERAGE":
        if max_padding is not None:
            y = _MAX_POOL[nd](x, window, stride, padding=max_padding)
        else:
            y = _MAX_POOL[nd](_pad_last(x, padded, value=-math.inf), window, stride)
    if kind != "MAX":
        avg = _window_sum(_pad_last(x, padded), window, stride) / divisor.to(x.dtype)
        y = avg if kind == "AVERAGE" else (1 - blend) * y + blend * avg
    return [y.reshape(tuple(lead) + tuple(y.shape[-nd:]))]


def _window_sum(x: torch.Tensor, window, stride) -> torch.Tensor:
    """Sum over each pooling window (a depthwise convolution with a ones kernel: exact sums, any rank)."""
    nd = len(window)
    ones = torch.ones((1, 1) + tuple(window), dtype=x.dtype, device=x.device)
    return _CONV[nd](x, ones, stride=stride)


@implements("PADDING")
def padding(call: LayerCall) -> list[torch.Tensor]:
    pre, post = L.dims(call.layer.pre_padding_nd), L.dims(call.layer.post_padding_nd)
    x = call.x(0)
    if len(pre) > x.dim():
        raise call.error(f"pads {len(pre)} dims of a rank-{x.dim()} input")
    return [_pad_last(x, list(zip(pre, post)))]


@implements("LRN")
def lrn(call: LayerCall) -> list[torch.Tensor]:
    layer = call.layer
    x = call.x(0)
    if x.dim() < 3:
        raise call.unsupported(f"input rank {x.dim()}")
    window = int(layer.window_size)
    return [F.local_response_norm(x, window, alpha=float(layer.alpha), beta=float(layer.beta), k=float(layer.k))]
