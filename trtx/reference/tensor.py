"""Layers that move data without arithmetic: Constant, Concatenation, Shuffle, Slice, Shape, Gather,
Squeeze/Unsqueeze, Fill, OneHot.

Semantics: docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/{Constant,Concatenation,Shuffle,Slice,
Shape,Gather,Squeeze,Unsqueeze,Fill,OneHot}.html.
"""

from __future__ import annotations

import math

import torch

from trtx import layers as L
from trtx.reference.core import LayerCall, compute, implements


@implements("CONSTANT")
def constant(call: LayerCall) -> list[torch.Tensor]:
    shape = L.dims(call.layer.shape)
    declared = L.enum_name(call.layer.get_output(0).dtype)
    if declared in ("INT4", "FP4", "FP8", "E8M0"):  # packed/narrow weights numpy cannot hold faithfully
        raise call.unsupported(f"constant weights of type {declared}")
    w = call.weights(call.layer.weights)
    if w is None:
        if math.prod(shape) == 0:
            return [torch.zeros(shape, dtype=call.out_dtypes[0], device=call.device)]
        raise call.error("has no weights")
    if w.numel() != math.prod(shape):
        raise call.error(f"weights have {w.numel()} values, shape {shape} needs {math.prod(shape)}")
    return [w.reshape(shape)]


def _axis(call: LayerCall, axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise call.error(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


@implements("CONCATENATION")
def concatenation(call: LayerCall) -> list[torch.Tensor]:
    xs = [call.x(i) for i in range(len(call.inputs))]
    return [torch.cat(xs, dim=_axis(call, int(call.layer.axis), xs[0].dim()))]


def reshape_dims(call: LayerCall, source: tuple[int, ...], spec: list[int], zero_copies: bool) -> tuple[int, ...]:
    """Resolve a TensorRT reshape spec: 0 copies the source dim (when ``zero_copies``), one -1 is inferred."""
    dims = list(spec)
    for i, d in enumerate(dims):
        if d == 0 and zero_copies:
            if i >= len(source):
                raise call.error(f"reshape {spec}: placeholder 0 at index {i} but the input has rank {len(source)}")
            dims[i] = source[i]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise call.error(f"reshape {spec} is invalid (at most one -1, no other negative values)")
    total = math.prod(source)
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or total % known:
            raise call.error(f"cannot reshape {source} to {spec}")
        dims[dims.index(-1)] = total // known
    if math.prod(dims) != total:
        raise call.error(f"cannot reshape {source} ({total} values) to {spec}")
    return tuple(dims)


def _shuffle_setup(call: LayerCall, shape: tuple[int, ...], spec: tuple[int, ...] | None):
    layer = call.layer
    first = tuple(int(v) for v in layer.first_transpose)[: len(shape)]
    moved = tuple(shape[i] for i in first)
    reshaped = None
    if spec is not None:
        reshaped = reshape_dims(call, moved, list(spec), bool(layer.zero_is_placeholder))
    rank = len(reshaped) if reshaped is not None else len(moved)
    second = tuple(int(v) for v in layer.second_transpose)[:rank]
    identity = lambda p: p == tuple(range(len(p)))  # noqa: E731
    return (None if identity(first) else first), reshaped, (None if identity(second) else second)


@implements("SHUFFLE")
def shuffle(call: LayerCall) -> list[torch.Tensor]:
    """transpose(first) -> reshape -> transpose(second)."""
    x = call.input(0)
    dynamic = call.optional(1)
    if dynamic is not None:
        spec: tuple[int, ...] | None = tuple(call.ints(dynamic))
    else:
        spec = call.memo("spec", lambda: None if call.layer.reshape_dims is None else L.dims(call.layer.reshape_dims))
    first, reshaped, second = call.memo(("shuffle", x.shape, spec), lambda: _shuffle_setup(call, tuple(x.shape), spec))
    if first is not None:
        x = x.permute(first)
    if reshaped is not None:
        x = x.reshape(reshaped)
    if second is not None:
        x = x.permute(second)
    return [x]


def _slice_params(call: LayerCall, x: torch.Tensor):
    layer = call.layer
    rank = x.dim()

    def read(index: int, attr: str) -> list[int] | None:
        t = call.optional(index)
        if t is not None:
            return call.ints(t)
        value = getattr(layer, attr)
        return None if value is None else list(L.dims(value))

    start, size, stride = read(1, "start"), read(2, "shape"), read(3, "stride")
    axes_t = call.optional(5)
    axes = call.ints(axes_t) if axes_t is not None else (None if layer.axes is None else list(L.dims(layer.axes)))
    if start is None or size is None or stride is None:
        raise call.error("start, size and stride must all be set")
    if axes is None:
        if not len(start) == len(size) == len(stride) == rank:
            raise call.error(f"start {start}, size {size}, stride {stride} must have rank {rank}")
        return start, size, stride
    axes = [_axis(call, a, rank, "slice axis") for a in axes]
    if not len(start) == len(size) == len(stride) == len(axes):
        raise call.error(f"start {start}, size {size}, stride {stride} must match axes {axes}")
    full_start, full_size, full_stride = [0] * rank, list(x.shape), [1] * rank
    for a, b, s, t in zip(axes, start, size, stride):
        full_start[a], full_size[a], full_stride[a] = b, s, t
    return full_start, full_size, full_stride


def _slice_setup(call: LayerCall, x: torch.Tensor, start, size, stride):
    """(index per dim or None where the dim is taken whole, validity mask for FILL or None) for these parameters."""
    mode = call.layer.mode.name
    if any(s < 0 for s in size):
        raise call.error(f"negative slice size {size}")
    if x.numel() == 0 and math.prod(size) and mode != "FILL":
        raise call.error(f"slices {size} out of an empty input")
    index, valid = [], []
    for d, (b, s, t) in enumerate(zip(start, size, stride)):
        n = x.shape[d]
        coord = b + t * torch.arange(s, device=call.device, dtype=torch.int64)
        inside = (coord >= 0) & (coord < n)
        if mode == "STRICT_BOUNDS":
            if not bool(inside.all()):
                raise call.error(f"STRICT_BOUNDS slice reads outside dim {d} (size {n}): start {b}, stride {t}")
        elif mode == "WRAP":
            coord = torch.remainder(coord, n) if n else coord
        elif mode == "CLAMP":
            coord = coord.clamp(0, max(n - 1, 0))
        elif mode == "FILL":
            coord = torch.where(inside, coord, torch.zeros_like(coord))
        elif mode == "REFLECT":
            if n == 1:
                coord = torch.zeros_like(coord)
            elif n > 1:
                c = torch.remainder(coord.abs(), 2 * n - 2)
                coord = torch.where(c >= n, 2 * n - 2 - c, c)
        else:
            raise call.unsupported("mode", call.layer.mode)
        shape = [1] * x.dim()
        shape[d] = s
        index.append(coord.reshape(shape))
        valid.append(inside.reshape(shape))
    mask = None
    if mode == "FILL":
        mask = torch.ones(size, dtype=torch.bool, device=call.device)
        for v in valid:
            mask = mask & v
    # a plain strided view where every dim is read in bounds with a positive stride
    plain = None
    if mode != "FILL" and all(t > 0 and b >= 0 and (s == 0 or b + t * (s - 1) < n)
                              for b, s, t, n in zip(start, size, stride, x.shape)):  # fmt: skip
        plain = tuple(slice(b, b + t * (s - 1) + 1 if s else b, t) for b, s, t in zip(start, size, stride))
    return tuple(index), mask, plain


@implements("SLICE")
def slice_(call: LayerCall) -> list[torch.Tensor]:
    """output[y] = input[x], x_i = y_i·stride_i + start_i; out-of-bounds x_i per the sample mode."""
    x = call.x(0)
    start, size, stride = _slice_params(call, x)
    index, mask, plain = call.memo(
        ("slice", x.shape, tuple(start), tuple(size), tuple(stride)), lambda: _slice_setup(call, x, start, size, stride)
    )
    if x.numel() == 0 or math.prod(size) == 0:
        y = torch.zeros(size, dtype=x.dtype, device=call.device)
    elif plain is not None:
        y = x[plain]
    else:
        y = x[index]
    if mask is not None:
        fill = call.optional(4)
        fill_value = compute(fill).reshape(()) if fill is not None else torch.zeros((), dtype=x.dtype)
        y = torch.where(mask, y, fill_value.to(device=call.device, dtype=y.dtype))
    return [y]


@implements("SHAPE")
def shape(call: LayerCall) -> list[torch.Tensor]:
    return [torch.tensor(list(call.input(0).shape), dtype=torch.int64, device=call.device)]


def _wrap(call: LayerCall, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Gather indices must obey 0 <= i < n (Gather.html); anything else is an error, never a guess."""
    known = call.known(idx)  # the plan's folded indices are checked on the host, without a device round trip
    if known is not None:
        if known and (min(known) < 0 or max(known) >= n):
            raise call.error(f"gather index out of range [0, {n - 1}]: {min(known)}..{max(known)}")
        return idx.to(torch.int64)
    idx = idx.to(torch.int64)
    if idx.numel() and (bool((idx < 0).any()) or bool((idx >= n).any())):
        raise call.error(f"gather index out of range [0, {n - 1}]: {idx.min().item()}..{idx.max().item()}")
    return idx


def _arithmetic(call: LayerCall, idx: torch.Tensor) -> tuple[int, int, int] | None:
    """(start, stride >= 1, count) when ``idx`` is one of the plan's folded index tensors and evenly rising."""
    known = call.known(idx)
    if not known:
        return None
    stride = known[1] - known[0] if len(known) > 1 else 1
    if stride < 1 or any(b - a != stride for a, b in zip(known, known[1:])):
        return None
    return known[0], stride, len(known)


@implements("GATHER")
def gather(call: LayerCall) -> list[torch.Tensor]:
    layer = call.layer
    data, idx = call.x(0), call.input(1)
    mode = layer.mode.name
    batch = int(layer.num_elementwise_dims)
    if mode == "DEFAULT":
        axis = _axis(call, int(layer.axis), data.dim())
        if batch == 0:
            step = _arithmetic(call, idx)
            if step is not None:  # evenly spaced constant indices: a strided view reads the same elements
                _wrap(call, idx, data.shape[axis])
                start, stride, count = step
                view = data.narrow(axis, start, (count - 1) * stride + 1) if count else data.narrow(axis, 0, 0)
                view = view[(slice(None),) * axis + (slice(None, None, stride),)] if stride > 1 else view
                return [view.reshape(data.shape[:axis] + idx.shape + data.shape[axis + 1 :])]
            idx = _wrap(call, idx, data.shape[axis])
            out_shape = data.shape[:axis] + idx.shape + data.shape[axis + 1 :]
            return [data.index_select(axis, idx.reshape(-1)).reshape(out_shape)]
        idx = _wrap(call, idx, data.shape[axis])
        if batch == 1 and axis >= 1 and idx.shape[0] == data.shape[0]:
            rows = [data[b].index_select(axis - 1, idx[b].reshape(-1)) for b in range(data.shape[0])]
            out = [r.reshape(data.shape[1:axis] + idx.shape[1:] + data.shape[axis + 1 :]) for r in rows]
            return [torch.stack(out)]
        raise call.unsupported(f"num_elementwise_dims={batch} with axis {axis}")
    if mode == "ELEMENT":
        axis = _axis(call, int(layer.axis), data.dim())
        if idx.dim() != data.dim():
            raise call.error(f"ELEMENT gather needs indices of rank {data.dim()}, got {idx.dim()}")
        return [torch.gather(data, axis, _wrap(call, idx, data.shape[axis]))]
    if mode == "ND":
        depth = idx.shape[-1]
        if batch + depth > data.dim():
            raise call.error(f"ND gather: {batch} batch dims + index depth {depth} exceed data rank {data.dim()}")
        lead = data.shape[:batch]
        rest = data.shape[batch + depth :]
        flat_data = data.reshape((math.prod(lead),) + tuple(data.shape[batch:]))
        flat_idx = idx.reshape((math.prod(lead), -1, depth)).to(torch.int64)
        out = []
        for b in range(flat_data.shape[0]):
            cols = [_wrap(call, flat_idx[b, :, j], data.shape[batch + j]) for j in range(depth)]
            out.append(flat_data[b][tuple(cols)])
        y = torch.stack(out)
        return [y.reshape(tuple(lead) + tuple(idx.shape[batch:-1]) + tuple(rest))]
    raise call.unsupported("mode", layer.mode)


@implements("SQUEEZE")
def squeeze(call: LayerCall) -> list[torch.Tensor]:
    x = call.input(0)
    axes = sorted({_axis(call, a, x.dim()) for a in call.ints(call.input(1))})
    for a in axes:
        if x.shape[a] != 1:
            raise call.error(f"cannot squeeze axis {a} of size {x.shape[a]}")
    return [x.reshape([d for i, d in enumerate(x.shape) if i not in axes])]


@implements("UNSQUEEZE")
def unsqueeze(call: LayerCall) -> list[torch.Tensor]:
    x = call.input(0)
    raw = call.ints(call.input(1))
    rank = x.dim() + len(raw)
    axes = sorted({_axis(call, a, rank) for a in raw})
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [x.reshape(shape)]


@implements("FILL")
def fill(call: LayerCall) -> list[torch.Tensor]:
    """LINSPACE: output[i_0, ..., i_n] = alpha + Σ_k beta[k]·i_k."""
    layer = call.layer
    op = layer.operation.name
    if op != "LINSPACE":
        raise call.unsupported("operation", layer.operation)  # random fills cannot match TensorRT's generator
    shape_t = call.optional(0)
    shape = call.ints(shape_t) if shape_t is not None else list(L.dims(layer.shape))
    alpha_t, beta_t = call.optional(1), call.optional(2)
    alpha = compute(alpha_t).reshape(()).double() if alpha_t is not None else torch.tensor(float(layer.alpha))
    if beta_t is not None:
        beta = compute(beta_t).reshape(-1).double().tolist()
    elif len(shape) == 1:
        beta = [float(layer.beta)]
    else:
        raise call.unsupported(f"scalar beta attribute for a rank-{len(shape)} LINSPACE (give beta as input 2)")
    if len(beta) != len(shape):
        raise call.error(f"beta has {len(beta)} values for a rank-{len(shape)} output")
    y = torch.zeros(shape, dtype=torch.float64, device=call.device) + alpha.to(call.device)
    for k, (n, b) in enumerate(zip(shape, beta)):
        view = [1] * len(shape)
        view[k] = n
        y = y + b * torch.arange(n, dtype=torch.float64, device=call.device).reshape(view)
    target = call.out_dtypes[0]
    return [y.to(target) if not target.is_floating_point else y.float()]


@implements("ONE_HOT")
def one_hot(call: LayerCall) -> list[torch.Tensor]:
    idx, values, depth_t = call.input(0), call.x(1), call.input(2)
    depth = call.ints(depth_t)[0]
    if values.numel() != 2:
        raise call.error(f"values must hold [off, on], got {values.numel()} values")
    off, on = values.reshape(-1)[0], values.reshape(-1)[1]
    idx = idx.to(torch.int64)
    idx = torch.where(idx < 0, idx + depth, idx)
    classes = torch.arange(depth, device=call.device)
    hot = idx.unsqueeze(-1) == classes  # out-of-range indices match nothing: all off
    y = torch.where(hot, on, off)
    axis = _axis(call, int(call.layer.axis), idx.dim() + 1)
    return [y.movedim(-1, axis)]


@implements("SCATTER")
def scatter(call: LayerCall) -> list[torch.Tensor]:
    """ELEMENT: ONNX ScatterElements along ``axis``; ND: ONNX ScatterND (Scatter.html)."""
    layer = call.layer
    data, idx, updates = call.x(0), call.input(1).to(torch.int64), call.x(2)
    mode = layer.mode.name
    out = data.clone()
    if mode == "ELEMENT":
        axis = _axis(call, int(layer.axis), data.dim())
        return [out.scatter(axis, _wrap(call, idx, data.shape[axis]), updates)]
    if mode == "ND":
        depth = idx.shape[-1]
        flat_idx = idx.reshape(-1, depth)
        cols = tuple(_wrap(call, flat_idx[:, j], data.shape[j]) for j in range(depth))
        out[cols] = updates.reshape((flat_idx.shape[0],) + tuple(data.shape[depth:]))
        return [out]
    raise call.unsupported("mode", layer.mode)


@implements("NON_ZERO")
def non_zero(call: LayerCall) -> list[torch.Tensor]:
    """[rank, count] coordinates of the non-zero elements, in row-major order (NonZero.html)."""
    return [torch.nonzero(call.input(0)).T.contiguous()]


@implements("REVERSE_SEQUENCE")
def reverse_sequence(call: LayerCall) -> list[torch.Tensor]:
    """Reverse the first lengths[b] elements along ``sequence_axis`` of every batch item (ReverseSequence.html)."""
    layer = call.layer
    x = call.x(0)
    lengths = call.ints(call.input(1))
    batch_axis, seq_axis = int(layer.batch_axis), int(layer.sequence_axis)
    out = x.clone()
    for b, n in enumerate(lengths):
        if not 0 <= n <= x.shape[seq_axis]:
            raise call.error(f"sequence length {n} of batch item {b} exceeds {x.shape[seq_axis]}")
        item = x.select(batch_axis, b)
        axis = seq_axis - (seq_axis > batch_axis)
        head = item.narrow(axis, 0, n).flip(axis)
        out.select(batch_axis, b).narrow(axis, 0, n).copy_(head)
    return [out]


@implements("ASSERTION")
def assertion(call: LayerCall) -> list[torch.Tensor]:
    """Fails the run, as TensorRT does, when any element of the condition is false."""
    condition = call.input(0)
    if not bool(condition.all()):
        raise call.error(f"assertion failed: {call.layer.message}")
    return []
