"""Blocks shared by several netdef families.

Each block mirrors a PyTorch module (or a small composition of them) and names its layers with that
module's path, so ``check`` compares every block against a forward hook. A block used by one family only
lives in that family's file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trtx.net import Net, NetdefError

ACTIVATIONS = ("relu", "relu6", "silu", "sigmoid", "tanh", "leaky_relu", "hardswish", "hardsigmoid", "gelu", "none")


def peek(weights, key: str) -> np.ndarray:
    """Weight ``key`` as a flat float32 array, without marking it read (``configure`` only looks at the weights;
    the network reads them)."""
    fn = getattr(weights, "peek", None)
    return np.asarray(fn(key) if fn is not None else weights[key], dtype=np.float32).reshape(-1)


def count_indices(weights, template: str) -> int:
    """How many consecutive ``i`` from 0 have ``template.format(i)`` in the weights."""
    n = 0
    while template.format(n) in weights:
        n += 1
    return n


def activation(net: Net, x, kind: str, name: str, *, alpha: float = 0.01):
    """nn.ReLU / ReLU6 / SiLU / Sigmoid / Tanh / LeakyReLU(alpha) / Hardswish / Hardsigmoid / GELU at ``name``."""
    trt = net.trt
    A = trt.ActivationType
    nw = net.network
    if kind == "none":
        return x
    simple = {
        "relu": (A.RELU, None, None),
        "sigmoid": (A.SIGMOID, None, None),
        "tanh": (A.TANH, None, None),
        "leaky_relu": (A.LEAKY_RELU, alpha, None),
        "relu6": (A.CLIP, 0.0, 6.0),
        "hardsigmoid": (A.HARD_SIGMOID, 1 / 6, 0.5),
        "gelu": (A.GELU_ERF, None, None),
    }
    if kind in simple:
        act_type, a, b = simple[kind]
        layer = nw.add_activation(x, act_type)
        if a is not None:
            layer.alpha = a
        if b is not None:
            layer.beta = b
        return net.name(layer, name).get_output(0)
    if kind in ("silu", "hardswish"):  # x · gate(x); TensorRT has no single activation for these
        gate = nw.add_activation(x, A.SIGMOID if kind == "silu" else A.HARD_SIGMOID)
        if kind == "hardswish":
            gate.alpha, gate.beta = 1 / 6, 0.5
        net.name(gate, f"{name}.gate")
        prod = nw.add_elementwise(x, gate.get_output(0), trt.ElementWiseOperation.PROD)
        return net.name(prod, name).get_output(0)
    raise NetdefError(f"layer {name}: unknown activation {kind!r} (one of {', '.join(ACTIVATIONS)})")


def conv_bn_act(
    net: Net,
    x,
    *,
    conv: str,
    bn: str | None,
    act: str | None,
    kind: str = "relu",
    kernel: int | Sequence[int] = 3,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | None = None,
    groups: int = 1,
    dilation: int = 1,
    eps: float = 1e-5,
    alpha: float = 0.01,
):
    """Conv2d → BatchNorm2d → activation, each layer named after its module path.

    ``padding=None`` means "same" for odd kernels (k // 2 · dilation), as torchvision and YOLOv5 use.
    ``bn=None`` skips the batch norm (conv with bias); ``act=None`` or ``kind="none"`` skips the activation.
    """
    if padding is None:
        k = kernel if isinstance(kernel, int) else kernel[0]
        padding = (k // 2) * dilation
    y = net.conv(x, conv, kernel, stride=stride, padding=padding, groups=groups, dilation=dilation).get_output(0)
    if bn is not None:
        y = net.batchnorm(y, bn, eps).get_output(0)
    if act is not None and kind != "none":
        y = activation(net, y, kind, act, alpha=alpha)
    return y


def max_pool(net: Net, x, name: str, kernel: int, stride: int | None = None, padding: int = 0, ceil_mode: bool = False):
    """nn.MaxPool2d."""
    layer = net.network.add_pooling_nd(x, net.trt.PoolingType.MAX, (kernel, kernel))
    _pool_geometry(net, layer, kernel, stride, padding, ceil_mode)
    return net.name(layer, name).get_output(0)


def avg_pool(
    net: Net,
    x,
    name: str,
    kernel: int,
    stride: int | None = None,
    padding: int = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
):
    """nn.AvgPool2d."""
    layer = net.network.add_pooling_nd(x, net.trt.PoolingType.AVERAGE, (kernel, kernel))
    _pool_geometry(net, layer, kernel, stride, padding, ceil_mode)
    layer.average_count_excludes_padding = not count_include_pad
    return net.name(layer, name).get_output(0)


def _pool_geometry(net: Net, layer, kernel: int, stride: int | None, padding: int, ceil_mode: bool) -> None:
    s = stride or kernel
    layer.stride_nd = (s, s)
    layer.padding_nd = (padding, padding)
    if ceil_mode:
        layer.padding_mode = net.trt.PaddingMode.EXPLICIT_ROUND_UP


def global_avg_pool(net: Net, x, name: str):
    """nn.AdaptiveAvgPool2d(1): mean over H and W, keeping [B, C, 1, 1]."""
    layer = net.network.add_reduce(x, net.trt.ReduceOperation.AVG, (1 << 2) | (1 << 3), True)
    return net.name(layer, name).get_output(0)


def flatten(net: Net, x, name: str):
    """torch.flatten(x, 1)."""
    layer = net.network.add_shuffle(x)
    layer.reshape_dims = (0, -1)
    return net.name(layer, name).get_output(0)


def add(net: Net, a, b, name: str):
    """``a + b``, a residual connection (``net.add``: in int8 its residual input shares the block's Q/DQ)."""
    return net.add(a, b, name).get_output(0)


def concat(net: Net, tensors: Sequence, name: str, axis: int = 1):
    """torch.cat(tensors, axis)."""
    layer = net.network.add_concatenation(list(tensors))
    layer.axis = axis
    return net.name(layer, name).get_output(0)


def constant(net: Net, value, name: str, dtype=np.float32):
    """A constant tensor holding ``value`` (anything np.asarray takes) as ``dtype`` (float32 unless told: the
    post-processing constants of detectors are fp32 whatever the network computes in)."""
    return net.constant(np.asarray(value, dtype), name, dtype)


def elementwise(net: Net, a, b, op: str, name: str):
    """``a <op> b`` with broadcasting; ``op`` names TensorRT's ElementWiseOperation: SUM, SUB, PROD, DIV, MAX,
    MIN, POW."""
    return net.name(net.network.add_elementwise(a, b, getattr(net.trt.ElementWiseOperation, op)), name).get_output(0)


def gather(net: Net, x, indices, name: str, *, axis: int):
    """``x.index_select(axis, indices)``: the entries ``indices`` (constants) along ``axis``."""
    idx = net.constant(np.asarray(indices, np.int32), f"{name}.indices", np.int32)
    return net.name(net.network.add_gather(x, idx, axis), name).get_output(0)


def reshape(net: Net, x, dims: Sequence[int], name: str):
    """``x.reshape(dims)`` in TensorRT's notation: 0 copies that input dimension (the dynamic batch), -1 is
    inferred."""
    layer = net.network.add_shuffle(x)
    layer.reshape_dims = tuple(dims)
    return net.name(layer, name).get_output(0)


def permute(net: Net, x, order: Sequence[int], name: str):
    """``x.permute(order)``."""
    layer = net.network.add_shuffle(x)
    layer.first_transpose = tuple(order)
    return net.name(layer, name).get_output(0)


def read_image(path) -> np.ndarray:
    """A BGR uint8 image from a file (OpenCV); one line naming the file when it is not a readable image."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise NetdefError(f"{path}: not a readable image")
    return image


def as_numpy(x) -> np.ndarray:
    """A torch tensor (any device; floats as float32) or array-like as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        return x.float().numpy() if x.is_floating_point() else x.numpy()
    return np.asarray(x)


def split(net: Net, x, sizes: Sequence[int], name: str, axis: int = 1) -> list:
    """``torch.split(x, sizes, dim=axis)`` (``x.chunk(n, axis)`` for equal sizes) as slices ``name.0``,
    ``name.1``...; with a dynamic dimension (the batch) each slice's shape comes from shape(x) at run time."""
    trt, nw = net.trt, net.network
    shape = [int(d) for d in x.shape]
    axis %= len(shape)
    if sum(sizes) != shape[axis]:
        raise NetdefError(f"layer {name}: {shape[axis]} values along axis {axis} do not split into {list(sizes)}")
    dynamic = any(d < 0 for d in shape)
    if dynamic:
        full = net.name(nw.add_shape(x), f"{name}.shape").get_output(0)
        keep = np.ones(len(shape), np.int64)
        keep[axis] = 0
        kept = nw.add_elementwise(full, _shape_constant(net, keep, full, f"{name}.keep"), trt.ElementWiseOperation.PROD)
        kept = net.name(kept, f"{name}.kept_shape").get_output(0)
    outs, start = [], 0
    for i, n in enumerate(sizes):
        begin = [0] * len(shape)
        begin[axis] = start
        part = [max(d, 1) for d in shape]
        part[axis] = n
        layer = nw.add_slice(x, begin, part, [1] * len(shape))
        if dynamic:
            size = np.zeros(len(shape), np.int64)
            size[axis] = n
            added = nw.add_elementwise(kept, _shape_constant(net, size, full, f"{name}.{i}.size"),
                                       trt.ElementWiseOperation.SUM)  # fmt: skip
            layer.set_input(2, net.name(added, f"{name}.{i}.shape").get_output(0))
        outs.append(net.name(layer, f"{name}.{i}").get_output(0))
        start += n
    return outs


def _shape_constant(net: Net, values: np.ndarray, like, name: str):
    """An int64 constant in the dtype of the shape tensor ``like`` (int64, or int32 on older TensorRT)."""
    t = net.constant(values, name, np.int64)
    return t if t.dtype == like.dtype else net.cast(t, like.dtype, f"{name}.cast")


def upsample_nearest(net: Net, x, name: str, scale: float = 2.0):
    """nn.Upsample(scale_factor=scale, mode='nearest') (PyTorch's 'nearest' = asymmetric, floor)."""
    trt = net.trt
    layer = net.network.add_resize(x)
    layer.resize_mode = trt.InterpolationMode.NEAREST
    layer.scales = [1.0, 1.0, float(scale), float(scale)]
    layer.coordinate_transformation = trt.ResizeCoordinateTransformation.ASYMMETRIC
    layer.nearest_rounding = trt.ResizeRoundMode.FLOOR
    return net.name(layer, name).get_output(0)


def squeeze_excitation(net: Net, x, path: str, *, act: str = "relu", scale_act: str = "sigmoid"):
    """torchvision.ops.SqueezeExcitation at ``path``: x · scale_act(fc2(act(fc1(avgpool(x)))))."""
    s = global_avg_pool(net, x, f"{path}.avgpool")
    s = net.conv(s, f"{path}.fc1", 1).get_output(0)
    s = activation(net, s, act, f"{path}.activation")
    s = net.conv(s, f"{path}.fc2", 1).get_output(0)
    s = activation(net, s, scale_act, f"{path}.scale_activation")
    prod = net.network.add_elementwise(x, s, net.trt.ElementWiseOperation.PROD)
    return net.name(prod, path).get_output(0)


def conv_norm_activation(
    net: Net,
    x,
    path: str,
    kernel: int | Sequence[int] = 3,
    *,
    stride: int = 1,
    groups: int = 1,
    kind: str = "relu",
    eps: float = 1e-5,
):
    """torchvision.ops.Conv2dNormActivation at ``path`` (Conv2d ``.0`` → BatchNorm2d ``.1`` → activation ``.2``).

    ``kind="none"`` for the blocks built with ``activation_layer=None``. The block's output tensor carries
    ``path`` (it equals the Sequential's output), its last layer keeps the inner module's name.
    """
    names = {"conv": f"{path}.0", "bn": f"{path}.1", "act": f"{path}.2"}
    y = conv_bn_act(net, x, **names, kind=kind, kernel=kernel, stride=stride, groups=groups, eps=eps)
    return net.alias(y, path)


def stochastic_depth(net: Net, x, path: str):
    """torchvision.ops.StochasticDepth at ``path``: the identity at inference (its output tensor gets ``path``)."""
    return net.alias(x, path)


def layer_norm(net: Net, x, path: str, *, axis: int = -1, eps: float = 1e-5):
    """nn.LayerNorm(C) at ``path`` over one ``axis`` of ``x`` (-1: channels last; 1: channels of NCHW, as
    torchvision's LayerNorm2d). Statistics are computed in fp32 (INormalizationLayer), the result is cast back
    to the compute dtype."""
    rank = len(x.shape)
    axis %= rank
    c = int(x.shape[axis])
    shape = [1] * rank
    shape[axis] = c
    gamma = net.array(f"{path}.weight", (c,), layer=path).reshape(shape)
    beta = net.array(f"{path}.bias", (c,), layer=path).reshape(shape)
    x32 = net.to_fp32(x, f"{path}.to_fp32")
    nw = net.network
    add = getattr(nw, "add_normalization_v2", None) or nw.add_normalization
    scale = net.constant(gamma, f"{path}.weight", np.float32)
    bias = net.constant(beta, f"{path}.bias", np.float32)
    layer = add(x32, scale, bias, 1 << axis)
    layer.epsilon = eps
    if x.dtype == x32.dtype:  # fp32 in: no cast back
        return net.name(layer, path).get_output(0)
    net.name(layer, f"{path}.norm")
    return net.cast(layer.get_output(0), x.dtype, path)


def basic_conv2d(net: Net, x, path: str, kernel: int | Sequence[int], *, stride: int = 1, padding=0):
    """torchvision's BasicConv2d (GoogLeNet, Inception v3): Conv2d without bias → BatchNorm2d(eps=0.001) →
    F.relu. The ReLU is functional, so its layer carries the block's path."""
    names = {"conv": f"{path}.conv", "bn": f"{path}.bn", "act": path}
    return conv_bn_act(net, x, **names, kernel=kernel, stride=stride, padding=padding, eps=1e-3)


def transform_input(net: Net, x, name: str = "transform_input"):
    """GoogLeNet's / Inception3's ``_transform_input``: an ImageNet-normalized input re-scaled to the [-1, 1]
    normalization of the ported Google weights, per channel x · std/0.5 + (mean - 0.5)/0.5."""
    mean, std = np.array((0.485, 0.456, 0.406), np.float32), np.array((0.229, 0.224, 0.225), np.float32)
    scale, shift, power = std / 0.5, (mean - 0.5) / 0.5, np.ones(3, np.float32)
    w = [net.trt_weights(a) for a in (shift, scale, power)]
    layer = net.network.add_scale_nd(x, net.trt.ScaleMode.CHANNEL, *w, 1)
    return net.name(layer, name).get_output(0)


def adaptive_avg_pool(net: Net, x, name: str, output_size: int):
    """nn.AdaptiveAvgPool2d(output_size) on a static H x W: the identity when H x W already is the output size,
    AvgPool(H/out) when it divides evenly (the windows of adaptive pooling are then equal and disjoint)."""
    h, w = int(x.shape[2]), int(x.shape[3])
    if (h, w) == (output_size, output_size):
        return net.name(net.network.add_identity(x), name).get_output(0)
    if h < 0 or w < 0 or h % output_size or w % output_size:
        raise NetdefError(
            f"layer {name}: AdaptiveAvgPool2d({output_size}) of a {h}x{w} input has unequal windows; "
            f"use an input size whose feature map is a multiple of {output_size}"
        )
    layer = net.network.add_pooling_nd(x, net.trt.PoolingType.AVERAGE, (h // output_size, w // output_size))
    layer.stride_nd = (h // output_size, w // output_size)
    return net.name(layer, name).get_output(0)
