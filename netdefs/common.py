"""Blocks shared by several netdef families.

Each block mirrors a PyTorch module (or a small composition of them) and names its layers with that
module's path, so ``check`` compares every block against a forward hook. A block used by one family only
lives in that family's file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trtx.net import Net, NetdefError
from trtx_base.dtypes import np_dtype

ACTIVATIONS = ("relu", "relu6", "silu", "sigmoid", "tanh", "leaky_relu", "hardswish", "hardsigmoid", "gelu", "none")


def peek(weights, key: str) -> np.ndarray:
    """Weight ``key`` as a flat float32 array, without marking it read (``configure`` only looks at the weights;
    the network reads them)."""
    fn = getattr(weights, "peek", None)
    return np.asarray(fn(key) if fn is not None else weights[key], dtype=np.float32).reshape(-1)


def conv_width(net: Net, path: str) -> int:
    """Output channels of the Conv (+ BatchNorm ``bn``) block at ``path``, from its batch norm's size: what a
    block needs before it builds the conv (DWConv's groups = gcd(c1, c2)). The weight is not marked read."""
    key = f"{path}.bn.weight"
    if key not in net.weights:
        raise NetdefError(f"weights have no tensor {key!r} (layer {path})")
    return int(peek(net.weights, key).size)


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


def reshape(net: Net, x, dims: Sequence[int], name: str, *, transpose: Sequence[int] | None = None):
    """``x.reshape(dims)`` in TensorRT's notation: 0 copies that input dimension (the dynamic batch), -1 is
    inferred; then, if given, ``.permute(transpose)``."""
    layer = net.network.add_shuffle(x)
    layer.reshape_dims = tuple(dims)
    if transpose is not None:
        layer.second_transpose = tuple(transpose)
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


def mlp(net: Net, x, path: str, act: str = "gelu"):
    """torchvision.ops.MLP(in, [hidden, out]): Linear ``.0`` → activation ``.1`` → Linear ``.3`` (the dropouts
    ``.2`` and ``.4`` do nothing at inference); the result carries ``path``."""
    y = net.linear(x, f"{path}.0").get_output(0)
    y = activation(net, y, act, f"{path}.1")
    return net.alias(net.linear(y, f"{path}.3").get_output(0), path)


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


# ---- tensors with a dynamic batch ------------------------------------------------------------------------
def slice_nd(net: Net, x, name: str, start: Sequence[int], size: Sequence[int | None], *, stride=None, mode=None,
             like=None):  # fmt: skip
    """``x[start : start + size : stride]`` on every axis (ISliceLayer); ``mode`` is a ``trt.SampleMode`` (FILL
    pads with zeros, WRAP rolls). A ``None`` size is the size of ``like`` (default ``x``) on that axis, taken at
    run time where it is dynamic (the batch): the one shape tensor TensorRT needs. With ``stride`` 0 on an axis
    of size 1 this is ``expand``: ``slice_nd(net, token, name, (0, 0, 0), (None, 1, c), stride=(0, 1, 1),
    like=x)`` repeats a [1, 1, c] token over x's batch."""
    like = x if like is None else like
    rank = len(start)
    stride = tuple(stride or (1,) * rank)
    dims = [int(d) for d in like.shape]
    static = [dims[i] if s is None else int(s) for i, s in enumerate(size)]
    layer = net.network.add_slice(x, tuple(start), tuple(max(s, 1) for s in static), stride)
    if mode is not None:
        layer.mode = mode
    dynamic = [i for i, s in enumerate(static) if s < 0]
    if dynamic:
        keep = np.array([1 if i in dynamic else 0 for i in range(rank)], np.int64)
        known = np.array([0 if i in dynamic else s for i, s in enumerate(static)], np.int64)
        full = net.name(net.network.add_shape(like), f"{name}.shape").get_output(0)
        trt = net.trt
        kept = net.network.add_elementwise(full, _shape_constant(net, keep, full, f"{name}.keep"),
                                           trt.ElementWiseOperation.PROD)  # fmt: skip
        kept = net.name(kept, f"{name}.dynamic_size").get_output(0)
        sized = net.network.add_elementwise(kept, _shape_constant(net, known, full, f"{name}.static_size"),
                                            trt.ElementWiseOperation.SUM)  # fmt: skip
        layer.set_input(2, net.name(sized, f"{name}.size").get_output(0))
    return net.name(layer, name).get_output(0)


def _shape_constant(net: Net, values: np.ndarray, like, name: str):
    """An int64 constant in the dtype of the shape tensor ``like`` (int64, or int32 on older TensorRT)."""
    t = net.constant(values, name, np.int64)
    return t if t.dtype == like.dtype else net.cast(t, like.dtype, f"{name}.cast")


def select(net: Net, x, axis: int, index: int, name: str):
    """``x.select(axis, index)`` (``qkv[0]``): a gather of one index, which drops the axis."""
    layer = net.network.add_gather(x, net.constant(np.array(index, np.int64), f"{name}.index"), axis)
    return net.name(layer, name).get_output(0)


def scalar(net: Net, value: float, like, name: str):
    """A constant ``value`` of ``like``'s rank (all dims 1) and float dtype, to broadcast against ``like``."""
    return net.constant(np.full((1,) * len(like.shape), value, np.float32), name, np_dtype(like.dtype))


def matmul(net: Net, a, b, name: str, *, transpose_b: bool = False):
    """``a @ b`` (``a @ b.transpose(-2, -1)`` with ``transpose_b``), batched over the leading dims."""
    M = net.trt.MatrixOperation
    layer = net.network.add_matrix_multiply(a, M.NONE, b, M.TRANSPOSE if transpose_b else M.NONE)
    return net.name(layer, name).get_output(0)


# ---- attention ------------------------------------------------------------------------------------------
#: how scaled dot-product attention is written: matrix multiplies + softmax layers, or TensorRT's attention layer
ATTENTION_FORMS = ("matmul", "trt")


def add_attention_argument(parser) -> None:
    """``--attention matmul|trt`` of the transformer netdefs."""
    parser.add_argument(
        "--attention",
        choices=ATTENTION_FORMS,
        default="matmul",
        help="how attention is written: matmul (matrix multiplies + fp32 softmax) or trt (TensorRT's attention "
        "layer, where the backend has one) (default: %(default)s)",
    )


def has_attention_layer(net: Net) -> bool:
    """Whether the backend's network has TensorRT's attention layer (TensorRT >= 10.14, TensorRT-RTX >= 1.2)."""
    return hasattr(net.network, "add_attention_v2") or hasattr(net.network, "add_attention")


def scaled_dot_product_attention(net: Net, q, k, v, name: str, *, scale=None, mask=None, form: str = "matmul"):
    """``F.scaled_dot_product_attention``: softmax(q·kᵀ·scale + mask)·v on [B, heads, S, head_dim] tensors.

    ``scale`` (a float, or a tensor broadcasting against q: Swin V2's per-head logit scale) multiplies q, as
    TensorRT wants it done before the first matrix multiply; None: q comes scaled. ``mask`` is added to the
    scores ([.., .., Sq, Skv], broadcast over batch and heads). ``form="matmul"``: matrix multiply, softmax in
    fp32 (the fp32 policy), matrix multiply; ``form="trt"``: TensorRT's attention layer (IAttention), allowed to
    decompose where the builder has no fused kernel. Both name their result ``name``.
    """
    if scale is not None:
        factor = scalar(net, scale, q, f"{name}.scale") if isinstance(scale, (int, float)) else scale
        q = elementwise(net, q, factor, "PROD", f"{name}.q_scaled")
    if form == "trt":
        return _attention_layer(net, q, k, v, name, mask)
    if form != "matmul":
        raise NetdefError(f"layer {name}: attention form {form!r} is not one of {', '.join(ATTENTION_FORMS)}")
    scores = matmul(net, q, k, f"{name}.scores", transpose_b=True)
    if mask is not None:
        scores = net.name(net.network.add_elementwise(scores, mask, net.trt.ElementWiseOperation.SUM),
                          f"{name}.masked").get_output(0)  # fmt: skip
    soft = net.network.add_softmax(net.to_fp32(scores, f"{name}.scores.to_fp32"))
    soft.axes = 1 << (len(scores.shape) - 1)
    attn = net.to_compute(net.name(soft, f"{name}.softmax").get_output(0), f"{name}.softmax.to_compute")
    return matmul(net, attn, v, name)


def _attention_layer(net: Net, q, k, v, name: str, mask=None):
    nw, trt = net.network, net.trt
    if not has_attention_layer(net):
        raise NetdefError(
            f"layer {name}: {net.backend.name} {net.backend.version} has no attention layer; use the matmul form"
        )
    if hasattr(nw, "add_attention_v2"):
        layer = nw.add_attention_v2(q, k, v, trt.AttentionNormalizationOp.SOFTMAX, trt.CausalMaskKind.NONE)
    else:
        layer = nw.add_attention(q, k, v, trt.AttentionNormalizationOp.SOFTMAX, False)
    if mask is not None:
        layer.mask = net.cast(mask, q.dtype, f"{name}.mask")
    layer.decomposable = True
    return net.name(layer, name).get_output(0)


def split_heads(net: Net, qkv, heads: int, name: str):
    """A packed [B, S, 3·C] projection -> q, k, v, each [B, heads, S, C / heads]: ``qkv.reshape(B, S, 3, heads,
    -1).permute(2, 0, 3, 1, 4)`` and ``qkv[0], qkv[1], qkv[2]`` (torchvision's Swin, nn.MultiheadAttention)."""
    c = int(qkv.shape[-1]) // 3
    if c % heads:
        raise NetdefError(f"layer {name}: {c} channels do not split into {heads} heads")
    parts = reshape(net, qkv, (0, 0, 3, heads, c // heads), f"{name}.heads", transpose=(2, 0, 3, 1, 4))
    return [select(net, parts, 0, i, f"{name}.{label}") for i, label in enumerate("qkv")]


def merge_heads(net: Net, x, name: str):
    """[B, heads, S, head_dim] -> [B, S, heads · head_dim]: ``x.transpose(1, 2).reshape(B, S, C)``."""
    heads, d = int(x.shape[1]), int(x.shape[3])
    layer = net.network.add_shuffle(x)
    layer.first_transpose = (0, 2, 1, 3)
    layer.reshape_dims = (0, 0, heads * d)
    return net.name(layer, name).get_output(0)


def multihead_attention(net: Net, query, path: str, heads: int, *, key=None, value=None, mask=None,
                        form: str = "matmul"):  # fmt: skip
    """nn.MultiheadAttention(batch_first=True) at ``path``: in-projection of query, key and value from
    ``in_proj_weight`` / ``in_proj_bias`` (one packed matrix multiply for self-attention, as PyTorch does; three
    parts of it when the inputs differ), scaled dot-product attention per head (scale head_dim^-0.5), the
    output projection ``out_proj``. ``key``/``value`` default to ``query``; ``mask`` is an additive attention
    mask. The result is named ``<path>:0``, the module's ``attn_output`` (``check`` compares it with element 0
    of the module's tuple)."""
    key = query if key is None else key
    value = key if value is None else value
    c = int(query.shape[-1])
    w, b = f"{path}.in_proj_weight", f"{path}.in_proj_bias"
    if query is key is value:
        qkv = net.linear(query, f"{path}.in_proj", weight_key=w, bias_key=b).get_output(0)
        q, k, v = split_heads(net, qkv, heads, path)
    else:
        q, k, v = (
            _heads(net, net.linear(x, f"{path}.{label}_proj", weight_key=w, bias_key=b, rows=(i * c, (i + 1) * c))
                   .get_output(0), heads, f"{path}.{label}")
            for i, (label, x) in enumerate((("q", query), ("k", key), ("v", value)))
        )  # fmt: skip
    y = scaled_dot_product_attention(net, q, k, v, f"{path}.attention", scale=(c // heads) ** -0.5, mask=mask,
                                     form=form)  # fmt: skip
    y = merge_heads(net, y, f"{path}.merge_heads")
    # F.multi_head_attention_forward reads out_proj's weights without calling the submodule; the module returns
    # (attn_output, weights or None): the layer's name says it is element 0 of the module's output
    out = net.linear(y, f"{path}:0", weight_key=f"{path}.out_proj.weight", bias_key=f"{path}.out_proj.bias")
    return out.get_output(0)


def _heads(net: Net, x, heads: int, name: str):
    """[B, S, C] -> [B, heads, S, C / heads]."""
    c = int(x.shape[-1])
    return reshape(net, x, (0, 0, heads, c // heads), name, transpose=(0, 2, 1, 3))
