"""Quantize and Dequantize, simulated exactly as TensorRT defines them.

docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/Quantize.html and Dequantize.html:

* quantize:   q = clamp(round_half_to_even(x / scale) + zero_point, qmin, qmax)   (INT8: -128..127, INT4: -8..7)
              FP8: x / scale saturated to ±448 and rounded to nearest-even E4M3
* dequantize: y = (q - zero_point) · scale

``scale`` is per tensor (a scalar or one element), per channel (1-D, along ``axis``), or blocked (same rank as
the input; each scale covers input_dim / scale_dim consecutive elements of a dim). The division and product are
computed in float32.
"""

from __future__ import annotations

import torch

from trtx.reference.core import LayerCall, compute, implements

_INT_RANGES = {"INT8": (-128, 127), "INT4": (-8, 7), "UINT8": (0, 255)}


def broadcast_scale(call: LayerCall, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scale (or zero point) shaped to broadcast against ``x``: per-tensor, per-channel or blocked."""
    if scale.dim() == 0 or (scale.dim() == 1 and scale.numel() == 1 and x.dim() != 1):
        return scale.reshape(())
    axis = int(call.layer.axis)
    if scale.dim() == 1:
        axis = axis % x.dim()
        if scale.numel() != x.shape[axis]:
            raise call.error(f"per-channel scale has {scale.numel()} values but dim {axis} has {x.shape[axis]}")
        view = [1] * x.dim()
        view[axis] = scale.numel()
        return scale.reshape(view)
    if scale.dim() == x.dim():
        for d, (n, s) in enumerate(zip(x.shape, scale.shape)):
            if s == n:
                continue
            if s == 0 or n % s:
                raise call.error(f"block scale dim {d} ({s}) does not divide input dim ({n})")
            scale = scale.repeat_interleave(n // s, dim=d)
        return scale
    raise call.unsupported(f"scale of shape {tuple(scale.shape)} for input {tuple(x.shape)}")


@implements("QUANTIZE")
def quantize(call: LayerCall) -> list[torch.Tensor]:
    x = call.x(0).float()
    scale = broadcast_scale(call, compute(call.input(1)).float(), x)
    target = call.layer.to_type.name if hasattr(call.layer, "to_type") else "INT8"
    q = x / scale
    if target == "FP8":
        return [q.clamp(-448.0, 448.0).to(torch.float8_e4m3fn)]
    if target not in _INT_RANGES:
        raise call.unsupported("to_type", call.layer.to_type)
    q = torch.round(q)  # round half to even
    zero = call.optional(2)
    if zero is not None:
        q = q + broadcast_scale(call, zero.float(), x)
    lo, hi = _INT_RANGES[target]
    return [q.clamp(lo, hi)]


@implements("DEQUANTIZE")
def dequantize(call: LayerCall) -> list[torch.Tensor]:
    q = call.input(0).float()
    scale = broadcast_scale(call, compute(call.input(1)).float(), q)
    zero = call.optional(2)
    if zero is not None:
        q = q - broadcast_scale(call, zero.float(), q)
    return [q * scale]
