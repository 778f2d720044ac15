"""Resize and GridSample.

Resize follows docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Resize.html: output size from
``shape``, ``scales`` (floor(input · scale)) or input 1 (a shape tensor, or float scales); each resized axis maps
an output coordinate back with the coordinate transformation, using the length ratio input/output. The
interpolation is separable, one axis at a time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trtx import layers as L
from trtx.reference.core import LayerCall, implements


def output_size(call: LayerCall, x: torch.Tensor) -> list[int]:
    how, value = call.memo("size", lambda: L.resize_size(call.layer))
    if how == "input":
        t = call.input(1)
        if t.dtype.is_floating_point:
            how, value = "scales", call.floats(t)
        else:
            how, value = "shape", call.ints(t)
    return call.memo(("output_size", x.shape, how, tuple(value or ())), lambda: _output_size(call, x, how, value))


def _output_size(call: LayerCall, x: torch.Tensor, how: str, value) -> list[int]:
    if how == "unset":
        raise call.error("neither shape nor scales is set")
    if len(value) != x.dim():
        raise call.error(f"{how} {tuple(value)} must have one entry per input dim ({x.dim()})")
    if how == "scales":
        return [int(math.floor(n * float(s))) for n, s in zip(x.shape, value)]
    return [int(v) for v in value]


def _source_coords(call: LayerCall, n: int, m: int, device) -> torch.Tensor:
    """Input coordinate (float32) for each of the ``m`` output positions of an axis of length ``n``."""
    layer = call.layer
    o = torch.arange(m, dtype=torch.float32, device=device)
    if m == 1 and layer.selector_for_single_pixel.name == "UPPER":
        return torch.zeros(1, dtype=torch.float32, device=device)
    if layer.selector_for_single_pixel.name not in ("UPPER", "FORMULA"):
        raise call.unsupported("selector_for_single_pixel", layer.selector_for_single_pixel)
    transform = layer.coordinate_transformation.name
    if transform == "ALIGN_CORNERS":
        if m == 1:
            return torch.zeros(1, dtype=torch.float32, device=device)
        return o * (float(n - 1) / float(m - 1))
    ratio = torch.tensor(n, dtype=torch.float32) / torch.tensor(m, dtype=torch.float32)
    if transform == "ASYMMETRIC":
        return o * ratio.to(device)
    if transform == "HALF_PIXEL":
        return (o + 0.5) * ratio.to(device) - 0.5
    raise call.unsupported("coordinate_transformation", layer.coordinate_transformation)


def _nearest(call: LayerCall, c: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    rounding = call.layer.nearest_rounding.name
    if rounding == "HALF_UP":
        i = torch.floor(c + 0.5)
    elif rounding == "HALF_DOWN":
        i = torch.ceil(c - 0.5)
    elif rounding == "FLOOR":
        i = torch.floor(c)
    elif rounding == "CEIL":
        i = torch.ceil(c)
    else:
        raise call.unsupported("nearest_rounding", call.layer.nearest_rounding)
    i = i.clamp(0, n - 1).to(torch.int64)
    return i[:, None], torch.ones_like(c)[:, None]


def _linear(c: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = c.clamp(0, n - 1)
    lo = torch.floor(c)
    frac = c - lo
    lo = lo.to(torch.int64)
    hi = (lo + 1).clamp(max=n - 1)
    return torch.stack([lo, hi], 1), torch.stack([1 - frac, frac], 1)


def _cubic(c: torch.Tensor, n: int, a: float, exclude_outside: bool) -> tuple[torch.Tensor, torch.Tensor]:
    base = torch.floor(c)
    t = c - base
    taps = torch.stack([t + 1, t, 1 - t, 2 - t], 1).abs()  # distances to base-1, base, base+1, base+2
    near = ((a + 2) * taps - (a + 3)) * taps * taps + 1
    far = ((a * taps - 5 * a) * taps + 8 * a) * taps - 4 * a
    w = torch.where(taps <= 1, near, torch.where(taps < 2, far, torch.zeros_like(taps)))
    idx = base.to(torch.int64)[:, None] + torch.arange(-1, 3, device=c.device)[None, :]
    if exclude_outside:
        w = torch.where((idx >= 0) & (idx < n), w, torch.zeros_like(w))
        w = w / w.sum(1, keepdim=True)
    return idx.clamp(0, n - 1), w


def _axis_taps(call: LayerCall, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices [m, taps], weights [m, taps]) resizing an axis of length ``n`` to ``m``."""
    layer = call.layer
    c = _source_coords(call, n, m, call.device)
    mode = layer.resize_mode.name
    if mode == "NEAREST":
        return _nearest(call, c, n)
    if mode == "LINEAR":
        return _linear(c, n)
    if mode == "CUBIC":
        return _cubic(c, n, float(layer.cubic_coeff), bool(layer.exclude_outside))
    raise call.unsupported("resize_mode", layer.resize_mode)


def _resize_setup(call: LayerCall, x: torch.Tensor, sizes: list[int]):
    """Per resized axis (axis, indices, weights); for NEAREST over adjacent axes, one index for a single gather."""
    if not x.dtype.is_floating_point and call.layer.resize_mode.name != "NEAREST":
        raise call.unsupported(f"resize_mode={call.layer.resize_mode.name} on {x.dtype} input")
    axes = [(axis, *_axis_taps(call, x.shape[axis], m)) for axis, m in enumerate(sizes) if m != x.shape[axis]]
    gather = None
    if (
        axes
        and call.layer.resize_mode.name == "NEAREST"
        and [a for a, *_ in axes] == list(range(axes[0][0], axes[-1][0] + 1))
    ):  # x[..., i0[:, None], i1] copies every output element once
        rank = len(axes)
        index = [idx[:, 0].reshape((-1,) + (1,) * (rank - 1 - j)) for j, (_, idx, _) in enumerate(axes)]
        gather = (slice(None),) * axes[0][0] + tuple(index)
        if _interpolate_copies(x, sizes, gather):
            gather = tuple(sizes[2:])
    return axes, gather


def _interpolate_copies(x: torch.Tensor, sizes: list[int], gather: tuple) -> bool:
    """Whether torch's nearest interpolation picks exactly the elements ``x[gather]`` does (its own kernel, one
    pass): checked on a probe whose values are the element indices."""
    spatial = x.shape[2:]
    if not x.dtype.is_floating_point or x.dim() not in (3, 4, 5) or list(x.shape[:2]) != sizes[:2]:
        return False
    count = math.prod(spatial)
    if count >= 1 << 24 or 0 in sizes or count == 0:  # float32 holds the indices exactly below 2^24
        return False
    probe = torch.arange(count, dtype=torch.float32, device=x.device).reshape((1, 1) + tuple(spatial))
    picked = F.interpolate(probe, size=tuple(sizes[2:]), mode="nearest")
    return torch.equal(picked, probe[gather])


def _resize_axis(x: torch.Tensor, axis: int, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    view = [1] * x.dim()
    view[axis] = idx.shape[0]
    y = None
    for k in range(idx.shape[1]):
        term = x.index_select(axis, idx[:, k])
        if x.dtype.is_floating_point:
            term = term * w[:, k].reshape(view).to(x.dtype)
        y = term if y is None else y + term
    return y


@implements("RESIZE")
def resize(call: LayerCall) -> list[torch.Tensor]:
    x = call.x(0)
    sizes = output_size(call, x)
    axes, gather = call.memo(("resize", x.shape, x.dtype, tuple(sizes)), lambda: _resize_setup(call, x, sizes))
    if gather is not None:
        if isinstance(gather[0], int):  # torch's nearest interpolation copies the same elements
            return [F.interpolate(x, size=gather, mode="nearest")]
        return [x[gather]]
    for axis, idx, w in axes:
        x = _resize_axis(x, axis, idx, w)
    return [x]


_GRID_MODE = {"NEAREST": "nearest", "LINEAR": "bilinear", "CUBIC": "bicubic"}
_GRID_PADDING = {"FILL": "zeros", "CLAMP": "border", "REFLECT": "reflection"}


@implements("GRID_SAMPLE")
def grid_sample(call: LayerCall) -> list[torch.Tensor]:
    layer = call.layer
    x, grid = call.x(0), call.x(1)
    mode = _GRID_MODE.get(layer.interpolation_mode.name)
    if mode is None:
        raise call.unsupported("interpolation_mode", layer.interpolation_mode)
    padding = _GRID_PADDING.get(layer.sample_mode.name)
    if padding is None:
        raise call.unsupported("sample_mode", layer.sample_mode)
    if x.dim() != 4:
        raise call.unsupported(f"input rank {x.dim()}")
    return [F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=bool(layer.align_corners))]
