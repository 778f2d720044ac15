"""YOLOv8, YOLO11, YOLOv10, YOLO12 and YOLO26 layer by layer, the way ultralytics' yaml files and ``nn/modules``
build them.

One helper per ultralytics module (``Conv``, ``C2f``, ``C3k2``, ``SPPF``, ``C2PSA``, ``SCDown``, ``C2fCIB``,
``PSA``, ``A2C2f``, ``Detect``...), every layer named after the module path it mirrors (``model.22.cv2.0.1.conv``),
one network function per generation with every module index written out: ``grep -n '"model.13"'`` lands on the
line that builds module 13. Widths, blocks per module (and which blocks: Bottleneck, C3k, CIB, PSABlock, ABlock),
classes, reg_max and keypoints all come from the weights; what the weights cannot say (an SPPF's activation, an
area attention's areas, a C2f's shortcut) is written in the network function, as the yaml writes it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from netdefs.common import (
    activation,
    concat,
    conv_bn_act,
    conv_width,
    count_indices,
    flatten,
    global_avg_pool,
    max_pool,
    split,
)
from netdefs.common import upsample_nearest as upsample
from netdefs.ultralytics.arch import ONE2ONE
from trtx.net import Net, NetdefError

BN_EPS = 1e-3  # DetectionModel's initialize_weights() sets every BatchNorm2d to eps 1e-3
BN_EPS_CLS = 1e-5  # ClassificationModel does not: its BatchNorm2d keep PyTorch's default


# ---- blocks (ultralytics/nn/modules/conv.py, block.py) ------------------------------------------------------
def conv(net: Net, x, path: str, k: int = 1, s: int = 1, g: int = 1, act: bool = True):
    """Conv: Conv2d(k, s, padding k//2, bias=False) -> BatchNorm2d -> SiLU (act=False: none)."""
    names = {"conv": f"{path}.conv", "bn": f"{path}.bn", "act": path if act else None}
    y = conv_bn_act(net, x, **names, kind="silu", kernel=k, stride=s, groups=g, eps=_setting(net, "bn_eps"))
    return y if act else net.alias(y, path)


def dwconv(net: Net, x, path: str, k: int = 1, s: int = 1, act: bool = True):
    """DWConv: Conv with groups = gcd(c1, c2) (c2 from the weights)."""
    c1, c2 = int(x.shape[1]), conv_width(net, path)
    return conv(net, x, path, k, s, g=math.gcd(c1, c2), act=act)


def bottleneck(net: Net, x, path: str, shortcut: bool = True):
    """Bottleneck(k=(3, 3)): x + cv2(cv1(x)), the add when shortcut and the widths agree."""
    y = conv(net, conv(net, x, f"{path}.cv1", 3), f"{path}.cv2", 3)
    if not (shortcut and int(x.shape[1]) == int(y.shape[1])):
        return net.alias(y, path)
    return net.add(x, y, path).get_output(0)


def c2f(net: Net, x, path: str, shortcut: bool = False):
    """C2f: cv2(cat(chunk(cv1(x), 2) + [m_j(...)])), each block on the previous output; the blocks are
    Bottlenecks, or what the weights hold instead: C3k (C3k2), CIB (C2fCIB), Bottleneck + PSABlock (YOLO26's
    C3k2 with attention)."""
    y = conv(net, x, f"{path}.cv1", 1)
    c = int(y.shape[1]) // 2
    ys = split(net, y, [c, c], f"{path}.chunk")
    for j in range(_blocks(net, path)):
        ys.append(_c2f_block(net, ys[-1], f"{path}.m.{j}", shortcut))
    return net.alias(conv(net, concat(net, ys, f"{path}.cat"), f"{path}.cv2", 1), path)


def _c2f_block(net: Net, x, path: str, shortcut: bool):
    """The block at ``path`` (a C2f's m.j), by what its weights are."""
    if f"{path}.cv3.conv.weight" in net.weights:
        return c3k(net, x, path, shortcut)
    if f"{path}.cv1.0.conv.weight" in net.weights:
        return cib(net, x, path, shortcut)
    if f"{path}.1.attn.qkv.conv.weight" in net.weights:
        return bottleneck_psa(net, x, path, shortcut)
    return bottleneck(net, x, path, shortcut)


def c3k(net: Net, x, path: str, shortcut: bool = True):
    """C3k (a C3 with 3x3 bottlenecks): cv3(cat(m(cv1(x)), cv2(x)))."""
    y = conv(net, x, f"{path}.cv1", 1)
    for j in range(_blocks(net, path)):
        y = bottleneck(net, y, f"{path}.m.{j}", shortcut)
    y = concat(net, [net.alias(y, f"{path}.m"), conv(net, x, f"{path}.cv2", 1)], f"{path}.cat")
    return net.alias(conv(net, y, f"{path}.cv3", 1), path)


def c3k2(net: Net, x, path: str, shortcut: bool = True):
    """C3k2: a C2f whose blocks are C3k (c3k=True: the m/l/x scales, and where the yaml says so), Bottleneck, or
    (attn=True, YOLO26's model.22) Bottleneck + PSABlock, with shortcuts by default."""
    return c2f(net, x, path, shortcut)


def bottleneck_psa(net: Net, x, path: str, shortcut: bool = True):
    """C3k2's attention block: Sequential(Bottleneck, PSABlock with max(c // 64, 1) heads)."""
    y = bottleneck(net, x, f"{path}.0", shortcut)
    return net.alias(psa_block(net, y, f"{path}.1", max(int(y.shape[1]) // 64, 1)), path)


def sppf(net: Net, x, path: str, k: int = 5, *, cv1_act: bool = True, shortcut: bool = False):
    """SPPF: cv2(cat(x, m(x), m(m(x)), m(m(m(x))))) after x = cv1(x); m = MaxPool2d(k, 1, k // 2). YOLO26's
    SPPF(c, 5, 3, True): cv1 without activation, and its input added to the result (when the widths agree)."""
    y = conv(net, x, f"{path}.cv1", 1, act=cv1_act)
    y1 = max_pool(net, y, f"{path}.m.y1", k, 1, k // 2)  # one MaxPool2d module, run three times: no module path
    y2 = max_pool(net, y1, f"{path}.m.y2", k, 1, k // 2)
    y3 = max_pool(net, y2, f"{path}.m.y3", k, 1, k // 2)
    out = conv(net, concat(net, [y, y1, y2, y3], f"{path}.cat"), f"{path}.cv2", 1)
    if shortcut and int(x.shape[1]) == int(out.shape[1]):
        return net.add(out, x, path).get_output(0)
    return net.alias(out, path)


def scdown(net: Net, x, path: str, k: int = 3, s: int = 2):
    """SCDown (YOLOv10): a 1x1 Conv to the output width, then a depthwise k x k / s Conv without activation."""
    return net.alias(dwconv(net, conv(net, x, f"{path}.cv1", 1), f"{path}.cv2", k, s, act=False), path)


def cib(net: Net, x, path: str, shortcut: bool = True):
    """CIB (YOLOv10): cv1 = Sequential(DW 3x3, Conv 1x1, RepVGGDW (lk) or DW 3x3, Conv 1x1, DW 3x3); x + cv1(x)
    when shortcut and the widths agree."""
    y = conv(net, dwconv(net, x, f"{path}.cv1.0", 3), f"{path}.cv1.1", 1)
    if f"{path}.cv1.2.conv1.conv.weight" in net.weights:
        y = repvggdw(net, y, f"{path}.cv1.2")
    else:
        y = dwconv(net, y, f"{path}.cv1.2", 3)
    y = dwconv(net, conv(net, y, f"{path}.cv1.3", 1), f"{path}.cv1.4", 3)
    y = net.alias(y, f"{path}.cv1")
    if not (shortcut and int(x.shape[1]) == int(y.shape[1])):
        return net.alias(y, path)
    return net.add(x, y, path).get_output(0)


def c2fcib(net: Net, x, path: str, shortcut: bool = True):
    """C2fCIB (YOLOv10): a C2f whose blocks are CIBs."""
    return c2f(net, x, path, shortcut)


def repvggdw(net: Net, x, path: str):
    """RepVGGDW: SiLU(DW 7x7 Conv + DW 3x3 Conv), both without activation (the training form; its fuse() folds
    the 3x3 into the 7x7)."""
    y = net.add(dwconv(net, x, f"{path}.conv", 7, act=False), dwconv(net, x, f"{path}.conv1", 3, act=False),
                f"{path}.sum").get_output(0)  # fmt: skip
    return activation(net, y, "silu", path)


def attention(net: Net, x, path: str, num_heads: int, attn_ratio: float = 0.5, scale: float | None = None):
    """Attention: q, k, v from one 1x1 conv; softmax((q * scale)^T k) weighs v; plus a depthwise positional
    conv of v; proj. ``scale`` defaults to key_dim ** -0.5."""
    c, h, w = (int(d) for d in x.shape[1:])
    head_dim = c // num_heads
    key_dim = int(head_dim * attn_ratio)
    scale = key_dim**-0.5 if scale is None else scale
    qkv = conv(net, x, f"{path}.qkv", 1, act=False)
    heads = _reshape(net, qkv, (0, num_heads, 2 * key_dim + head_dim, h * w), f"{path}.heads")
    q, k, v = split(net, heads, [key_dim, key_dim, head_dim], f"{path}.split", axis=2)
    y = _reshape(net, attend(net, q, k, v, scale, path), (0, c, h, w), f"{path}.view")
    pe = conv(net, _reshape(net, v, (0, c, h, w), f"{path}.v_view"), f"{path}.pe", 3, g=c, act=False)
    y = net.name(net.network.add_elementwise(y, pe, net.trt.ElementWiseOperation.SUM), f"{path}.add_pe")
    return net.alias(conv(net, y.get_output(0), f"{path}.proj", 1, act=False), path)


def attend(net: Net, q, k, v, scale: float, path: str):
    """softmax((q * scale)^T k) weighing v, on [B, heads, dim, N] tensors -> [B, heads, dim_v, N]: matrix multiplies
    around an fp32 softmax, or with ``--attention trt`` TensorRT's attention layer."""
    nw, trt = net.network, net.trt
    if _setting(net, "attention") == "trt":
        return _attention_layer(net, q, k, v, scale, f"{path}.sdpa")
    factor = net.constant(np.full((1, 1, 1, 1), scale, np.float32), f"{path}.scale")
    qs = net.name(nw.add_elementwise(q, factor, trt.ElementWiseOperation.PROD), f"{path}.q_scaled").get_output(0)
    mm = nw.add_matrix_multiply(qs, trt.MatrixOperation.TRANSPOSE, k, trt.MatrixOperation.NONE)
    logits = net.name(mm, f"{path}.logits").get_output(0)  # [B, heads, N, N]
    soft = nw.add_softmax(net.to_fp32(logits, f"{path}.logits.to_fp32"))
    soft.axes = 1 << 3
    attn = net.to_compute(net.name(soft, f"{path}.softmax").get_output(0), f"{path}.softmax.to_compute")
    mm = nw.add_matrix_multiply(v, trt.MatrixOperation.NONE, attn, trt.MatrixOperation.TRANSPOSE)
    return net.name(mm, f"{path}.weighted").get_output(0)  # [B, heads, dim_v, N]


def _attention_layer(net: Net, q, k, v, scale: float, name: str):
    """TensorRT's IAttention on [B, heads, N, dim] tensors: softmax((q * scale) k^T) v, one fused kernel where the
    builder has one (decomposable: matrix multiplies and a softmax where it has not). IAttention wants keys as
    wide as values; q and k are zero-padded from key_dim to head_dim, which adds nothing to q k^T."""
    nw, trt = net.network, net.trt
    q, k, v = (
        _reshape(net, t, None, f"{name}.{label}_t", transpose=(0, 1, 3, 2)) for label, t in zip("qkv", (q, k, v))
    )
    pad = int(v.shape[3]) - int(k.shape[3])
    factor = net.constant(np.full((1, 1, 1, 1), scale, np.float32), f"{name}.scale")
    q = net.name(nw.add_elementwise(q, factor, trt.ElementWiseOperation.PROD), f"{name}.q_scaled").get_output(0)
    if pad:
        q, k = (net.name(nw.add_padding_nd(t, (0, 0), (0, pad)), f"{name}.{label}_pad").get_output(0)
                for label, t in (("q", q), ("k", k)))  # fmt: skip
    add = getattr(nw, "add_attention_v2", None)
    if add is not None:
        layer = add(q, k, v, trt.AttentionNormalizationOp.SOFTMAX, trt.CausalMaskKind.NONE)
    else:
        layer = nw.add_attention(q, k, v, trt.AttentionNormalizationOp.SOFTMAX, False)
    layer.decomposable = True
    out = net.name(layer, name).get_output(0)  # [B, heads, N, head_dim]
    return _reshape(net, out, None, f"{name}.out_t", transpose=(0, 1, 3, 2))


def psa_block(net: Net, x, path: str, num_heads: int, out: str | None = None):
    """PSABlock: x + attn(x), then x + ffn(x) (ffn: Conv 1x1 to 2c with SiLU, Conv 1x1 back without); the sum
    named ``out`` (default: the block's path)."""
    x = net.add(x, attention(net, x, f"{path}.attn", num_heads), f"{path}.add_attn").get_output(0)
    f = conv(net, conv(net, x, f"{path}.ffn.0", 1), f"{path}.ffn.1", 1, act=False)
    return net.add(x, net.alias(f, f"{path}.ffn"), out or path).get_output(0)


def psa(net: Net, x, path: str):
    """PSA (YOLOv10): cv2(cat(a, b + attn(b) then + ffn)) with a, b = split(cv1(x)): one PSABlock written out,
    max(c // 64, 1) heads."""
    y = conv(net, x, f"{path}.cv1", 1)
    c = int(y.shape[1]) // 2
    a, b = split(net, y, [c, c], f"{path}.split")
    b = psa_block(net, b, path, max(c // 64, 1), out=f"{path}.add_ffn")
    return net.alias(conv(net, concat(net, [a, b], f"{path}.cat"), f"{path}.cv2", 1), path)


def c2psa(net: Net, x, path: str):
    """C2PSA: cv2(cat(a, m(b))) with a, b = split(cv1(x)); m: PSABlocks with max(c // 64, 1) heads."""
    y = conv(net, x, f"{path}.cv1", 1)
    c = int(y.shape[1]) // 2
    a, b = split(net, y, [c, c], f"{path}.split")
    for j in range(_blocks(net, path)):
        b = psa_block(net, b, f"{path}.m.{j}", max(c // 64, 1))
    return net.alias(conv(net, concat(net, [a, net.alias(b, f"{path}.m")], f"{path}.cat"), f"{path}.cv2", 1), path)


def aattn(net: Net, x, path: str, num_heads: int, area: int = 1, scale: float | None = None):
    """AAttn (YOLO12's area attention): q, k, v from one 1x1 conv; the H*W positions cut into ``area`` runs of
    N / area (row-major: horizontal strips), each attending only within itself; plus a depthwise 7x7 positional
    conv of v; proj. ``scale`` defaults to head_dim ** -0.5."""
    c, h, w = (int(d) for d in x.shape[1:])
    head_dim = c // num_heads
    n = h * w
    if n % area:
        raise NetdefError(f"layer {path}: {h}x{w} positions do not split into {area} areas (--imgsz)")
    scale = head_dim**-0.5 if scale is None else scale
    qkv = conv(net, x, f"{path}.qkv", 1, act=False)  # [B, heads * 3 * head_dim, H, W]
    # [B, N, 3C] viewed as [B * area, N / area, heads, 3 * head_dim], channels first: [B * area, heads, 3 hd, N']
    areas = _reshape(net, qkv, (0, num_heads, 3 * head_dim, area, n // area), f"{path}.areas",
                     second=(0, 3, 1, 2, 4))  # fmt: skip
    heads = _reshape(net, areas, (-1, num_heads, 3 * head_dim, n // area), f"{path}.heads")
    q, k, v = split(net, heads, [head_dim, head_dim, head_dim], f"{path}.split", axis=2)
    y = _unarea(net, attend(net, q, k, v, scale, path), (c, h, w, area), f"{path}.view")
    pe = conv(net, _unarea(net, v, (c, h, w, area), f"{path}.v_view"), f"{path}.pe", 7, g=c, act=False)
    y = net.name(net.network.add_elementwise(y, pe, net.trt.ElementWiseOperation.SUM), f"{path}.add_pe")
    return net.alias(conv(net, y.get_output(0), f"{path}.proj", 1, act=False), path)


def _unarea(net: Net, x, chw: tuple[int, int, int, int], name: str):
    """[B * area, heads, head_dim, N / area] -> [B, C, H, W] (the areas back in place)."""
    c, h, w, area = chw
    heads, head_dim, part = (int(d) for d in x.shape[1:])
    y = _reshape(net, x, (-1, area, heads, head_dim, part), f"{name}.areas", second=(0, 2, 3, 1, 4))
    return _reshape(net, y, (0, c, h, w), name)


def ablock(net: Net, x, path: str, num_heads: int, area: int = 1):
    """ABlock: x + attn(x) (area attention), then x + mlp(x) (Conv 1x1 with SiLU, Conv 1x1 back without)."""
    x = net.add(x, aattn(net, x, f"{path}.attn", num_heads, area), f"{path}.add_attn").get_output(0)
    m = conv(net, conv(net, x, f"{path}.mlp.0", 1), f"{path}.mlp.1", 1, act=False)
    return net.add(x, net.alias(m, f"{path}.mlp"), path).get_output(0)


def a2c2f(net: Net, x, path: str, area: int = 1):
    """A2C2f (YOLO12): cv2(cat(y_0, m_0(y_0), m_1(...))) with y_0 = cv1(x) (no chunk); the blocks are pairs of
    ABlocks with c // 32 heads over ``area`` areas (a2=True), or C3k; where the weights have ``gamma`` (the l/x
    scales' residual): x + gamma * that."""
    y = conv(net, x, f"{path}.cv1", 1)
    ys = [y]
    for j in range(_blocks(net, path)):
        block = f"{path}.m.{j}"
        if f"{block}.0.attn.qkv.conv.weight" in net.weights:
            z = ys[-1]
            for i in range(count_indices(net.weights, block + ".{}.attn.qkv.conv.weight")):
                z = ablock(net, z, f"{block}.{i}", int(z.shape[1]) // 32, area)
            ys.append(net.alias(z, block))
        else:
            ys.append(c3k(net, ys[-1], block))
    y = conv(net, concat(net, ys, f"{path}.cat"), f"{path}.cv2", 1)
    if f"{path}.gamma" not in net.weights:
        return net.alias(y, path)
    c2 = int(y.shape[1])
    gamma = net.constant(net.array(f"{path}.gamma", (1, c2, 1, 1), layer=path), f"{path}.gamma")
    scaled = net.name(net.network.add_elementwise(y, gamma, net.trt.ElementWiseOperation.PROD), f"{path}.scaled")
    return net.add(x, scaled.get_output(0), path).get_output(0)


def proto(net: Net, x, path: str):
    """Proto: cv3(cv2(upsample(cv1(x)))), upsample a ConvTranspose2d(2, 2) with bias: the mask prototypes."""
    y = net.deconv(conv(net, x, f"{path}.cv1", 3), f"{path}.upsample", 2, stride=2).get_output(0)
    return net.alias(conv(net, conv(net, y, f"{path}.cv2", 3), f"{path}.cv3", 1), path)


def proto26(net: Net, feats: list, path: str):
    """Proto26 (YOLO26): P4, P5 through a 1x1 Conv each (feat_refine), upsampled (nearest, x2, x4) and added to
    P3, feat_fuse (Conv 3x3), then Proto's layers. Its semseg branch is for training only."""
    y = feats[0]
    for i, f in enumerate(feats[1:]):
        up = upsample(net, conv(net, f, f"{path}.feat_refine.{i}", 1), f"{path}.feat_refine.{i}.up", 2 ** (i + 1))
        y = net.add(y, up, f"{path}.feat_add.{i}").get_output(0)
    return proto(net, conv(net, y, f"{path}.feat_fuse", 3), path)


def dfl(net: Net, x, path: str):
    """DFL: [B, 4 * reg_max, A] -> view [B, 4, reg_max, A] -> transpose -> softmax over the bins -> the 1x1 conv
    with weights 0..reg_max-1 (the expected distance) -> [B, 4, A]. In fp32; the conv as multiply + sum, so
    int8 never quantizes a probability."""
    nw, trt = net.network, net.trt
    reg_max = int(x.shape[1]) // 4
    a = int(x.shape[2])
    bins = nw.add_shuffle(net.to_fp32(x, f"{path}.to_fp32"))
    bins.reshape_dims = (0, 4, reg_max, a)
    bins.second_transpose = (0, 2, 1, 3)
    soft = nw.add_softmax(net.name(bins, f"{path}.bins").get_output(0))
    soft.axes = 1 << 1
    prob = net.name(soft, f"{path}.softmax").get_output(0)
    weight = net.constant(
        net.array(f"{path}.conv.weight", (1, reg_max, 1, 1), layer=f"{path}.conv"), f"{path}.conv.weight", np.float32
    )
    prod = net.name(nw.add_elementwise(prob, weight, trt.ElementWiseOperation.PROD), f"{path}.conv.mul")
    total = nw.add_reduce(prod.get_output(0), trt.ReduceOperation.SUM, 1 << 1, True)
    return _reshape(net, net.name(total, f"{path}.conv").get_output(0), (0, 4, a), path)


# ---- heads (ultralytics/nn/modules/head.py) ---------------------------------------------------------------
def branch(net: Net, x, path: str, depthwise: bool = False):
    """One level of a head branch, Sequential(Conv 3x3, Conv 3x3, Conv2d 1x1); ``depthwise``: YOLO11's class
    branch, Sequential(Sequential(DWConv 3x3, Conv 1x1), Sequential(DWConv 3x3, Conv 1x1), Conv2d 1x1)."""
    if depthwise:
        y = conv(net, dwconv(net, x, f"{path}.0.0", 3), f"{path}.0.1", 1)
        y = conv(net, dwconv(net, net.alias(y, f"{path}.0"), f"{path}.1.0", 3), f"{path}.1.1", 1)
        y = net.alias(y, f"{path}.1")
    else:
        y = conv(net, conv(net, x, f"{path}.0", 3), f"{path}.1", 3)
    return net.alias(net.conv(y, f"{path}.2", 1).get_output(0), path)


def detect(net: Net, feats: list, path: str, *, depthwise_cls: bool, one2one: bool = False) -> dict[str, Any]:
    """Detect.forward_head: per level the box branch cv2 and the class branch cv3, each flattened to
    [B, C, H*W] and concatenated over the levels: {"boxes": [B, 4 * reg_max, A], "scores": [B, nc, A] logits}.
    ``one2one``: an end-to-end head's one-to-one branch (one2one_cv2, one2one_cv3), the one its top-k selects
    from (YOLOv10's v10Detect, YOLO26)."""
    p = f"{path}.{ONE2ONE if one2one else ''}"
    boxes = [branch(net, f, f"{p}cv2.{i}") for i, f in enumerate(feats)]
    scores = [branch(net, f, f"{p}cv3.{i}", depthwise_cls) for i, f in enumerate(feats)]
    return {"boxes": _levels(net, boxes, f"{p}boxes"), "scores": _levels(net, scores, f"{p}scores")}


def segment(net: Net, feats: list, path: str, *, depthwise_cls: bool, one2one: bool = False) -> dict[str, Any]:
    """Segment: Detect + mask coefficients (cv4) + the prototypes (proto, on P3)."""
    return {**_masks(net, feats, path, depthwise_cls, one2one), "proto": proto(net, feats[0], f"{path}.proto")}


def segment26(net: Net, feats: list, path: str, *, depthwise_cls: bool, one2one: bool = False) -> dict[str, Any]:
    """Segment26 (YOLO26): Detect + mask coefficients (cv4) + Proto26's prototypes (from P3, P4 and P5)."""
    return {**_masks(net, feats, path, depthwise_cls, one2one), "proto": proto26(net, feats, f"{path}.proto")}


def _masks(net: Net, feats: list, path: str, depthwise_cls: bool, one2one: bool) -> dict[str, Any]:
    head = detect(net, feats, path, depthwise_cls=depthwise_cls, one2one=one2one)
    p = f"{path}.{ONE2ONE if one2one else ''}"
    coefs = [branch(net, f, f"{p}cv4.{i}") for i, f in enumerate(feats)]
    return {**head, "mask_coefficient": _levels(net, coefs, f"{p}mask_coefficient")}


def pose(net: Net, feats: list, path: str, *, depthwise_cls: bool, one2one: bool = False) -> dict[str, Any]:
    """Pose: Detect + keypoints (cv4: keypoints x (x, y[, visibility]) per anchor, undecoded)."""
    head = detect(net, feats, path, depthwise_cls=depthwise_cls, one2one=one2one)
    p = f"{path}.{ONE2ONE if one2one else ''}"
    kpts = [branch(net, f, f"{p}cv4.{i}") for i, f in enumerate(feats)]
    return {**head, "kpts": _levels(net, kpts, f"{p}kpts")}


def pose26(net: Net, feats: list, path: str, *, depthwise_cls: bool, one2one: bool = False) -> dict[str, Any]:
    """Pose26 (YOLO26): Detect + keypoints: cv4 (Conv 3x3, Conv 3x3) then cv4_kpts (Conv2d 1x1). Its cv4_sigma
    and flow_model (the keypoint loss's RealNVP) are for training only."""
    head = detect(net, feats, path, depthwise_cls=depthwise_cls, one2one=one2one)
    p = f"{path}.{ONE2ONE if one2one else ''}"
    kpts = []
    for i, f in enumerate(feats):
        y = net.alias(conv(net, conv(net, f, f"{p}cv4.{i}.0", 3), f"{p}cv4.{i}.1", 3), f"{p}cv4.{i}")
        kpts.append(net.conv(y, f"{p}cv4_kpts.{i}", 1).get_output(0))
    return {**head, "kpts": _levels(net, kpts, f"{p}kpts")}


def obb(net: Net, feats: list, path: str, *, depthwise_cls: bool, one2one: bool = False) -> dict[str, Any]:
    """OBB: Detect + the angle (cv4 logits -> (sigmoid - 1/4) * pi, in [-pi/4, 3pi/4))."""
    head = obb26(net, feats, path, depthwise_cls=depthwise_cls, one2one=one2one)
    logits = head["angle"]
    nw, trt = net.network, net.trt
    sig = net.name(
        nw.add_activation(net.to_fp32(logits, f"{path}.angle.to_fp32"), trt.ActivationType.SIGMOID),
        f"{path}.angle.sigmoid",
    ).get_output(0)
    shift = net.constant(np.full((1, 1, 1), 0.25, np.float32), f"{path}.angle.quarter", np.float32)
    pi = net.constant(np.full((1, 1, 1), math.pi, np.float32), f"{path}.angle.pi", np.float32)
    centered = net.name(nw.add_elementwise(sig, shift, trt.ElementWiseOperation.SUB), f"{path}.angle.sub")
    angle = nw.add_elementwise(centered.get_output(0), pi, trt.ElementWiseOperation.PROD)
    return {**head, "angle": net.name(angle, f"{path}.angle").get_output(0)}


def obb26(net: Net, feats: list, path: str, *, depthwise_cls: bool, one2one: bool = False) -> dict[str, Any]:
    """OBB26 (YOLO26): Detect + the angle, cv4's raw output (no sigmoid: the decode rotates by it as it is)."""
    head = detect(net, feats, path, depthwise_cls=depthwise_cls, one2one=one2one)
    p = f"{path}.{ONE2ONE if one2one else ''}"
    logits = [branch(net, f, f"{p}cv4.{i}") for i, f in enumerate(feats)]
    return {**head, "angle": _levels(net, logits, f"{p}angle_logits")}


HEADS = {"detect": detect, "seg": segment, "pose": pose, "obb": obb}
HEADS26 = {"detect": detect, "seg": segment26, "pose": pose26, "obb": obb26}


def classify(net: Net, x, path: str):
    """Classify: linear(flatten(pool(conv(x)))) (dropout p=0 is the identity): the logits [B, nc]."""
    y = global_avg_pool(net, conv(net, x, f"{path}.conv", 1), f"{path}.pool")
    return net.linear(flatten(net, y, f"{path}.flatten"), f"{path}.linear").get_output(0)


# ---- the networks (cfg/models/v8, 11, v10, 12 and 26: yolov8*.yaml, yolo11*.yaml ...) --------------------
def yolov8_backbone(net: Net, x) -> dict[int, Any]:
    """Conv stem, then per level P2..P5 a Conv 3x3/2 and a C2f with shortcuts."""
    y = {}
    y[0] = conv(net, x, "model.0", 3, 2)  # P1/2
    y[1] = conv(net, y[0], "model.1", 3, 2)  # P2/4
    y[2] = c2f(net, y[1], "model.2", shortcut=True)
    y[3] = conv(net, y[2], "model.3", 3, 2)  # P3/8
    y[4] = c2f(net, y[3], "model.4", shortcut=True)
    y[5] = conv(net, y[4], "model.5", 3, 2)  # P4/16
    y[6] = c2f(net, y[5], "model.6", shortcut=True)
    y[7] = conv(net, y[6], "model.7", 3, 2)  # P5/32
    y[8] = c2f(net, y[7], "model.8", shortcut=True)
    return y


def yolov8(net: Net, x, task: str):
    """yolov8.yaml (-seg, -pose, -obb: another head; -cls: Classify after the backbone)."""
    y = yolov8_backbone(net, x)
    if task == "cls":
        return classify(net, y[8], "model.9")
    y[9] = sppf(net, y[8], "model.9")
    y[10] = upsample(net, y[9], "model.10")
    y[11] = concat(net, [y[10], y[6]], "model.11")  # cat backbone P4
    y[12] = c2f(net, y[11], "model.12")
    y[13] = upsample(net, y[12], "model.13")
    y[14] = concat(net, [y[13], y[4]], "model.14")  # cat backbone P3
    y[15] = c2f(net, y[14], "model.15")  # P3/8
    y[16] = conv(net, y[15], "model.16", 3, 2)
    y[17] = concat(net, [y[16], y[12]], "model.17")  # cat head P4
    y[18] = c2f(net, y[17], "model.18")  # P4/16
    y[19] = conv(net, y[18], "model.19", 3, 2)
    y[20] = concat(net, [y[19], y[9]], "model.20")  # cat head P5
    y[21] = c2f(net, y[20], "model.21")  # P5/32
    return HEADS[task](net, [y[15], y[18], y[21]], "model.22", depthwise_cls=False)


def yolo11_backbone(net: Net, x) -> dict[int, Any]:
    """Conv stem, then per level P2..P5 a Conv 3x3/2 and a C3k2 (YOLO12: A2C2f at P4 and P5)."""
    y = {}
    y[0] = conv(net, x, "model.0", 3, 2)  # P1/2
    y[1] = conv(net, y[0], "model.1", 3, 2)  # P2/4
    y[2] = c3k2(net, y[1], "model.2")
    y[3] = conv(net, y[2], "model.3", 3, 2)  # P3/8
    y[4] = c3k2(net, y[3], "model.4")
    y[5] = conv(net, y[4], "model.5", 3, 2)  # P4/16
    y[6] = c3k2(net, y[5], "model.6")
    y[7] = conv(net, y[6], "model.7", 3, 2)  # P5/32
    y[8] = c3k2(net, y[7], "model.8")
    return y


def yolo11_neck(net: Net, y: dict[int, Any]) -> None:
    """Modules 11-22 of yolo11.yaml and yolo26.yaml (YOLO26's model.22 holds attention blocks: the weights say)."""
    y[11] = upsample(net, y[10], "model.11")
    y[12] = concat(net, [y[11], y[6]], "model.12")  # cat backbone P4
    y[13] = c3k2(net, y[12], "model.13")
    y[14] = upsample(net, y[13], "model.14")
    y[15] = concat(net, [y[14], y[4]], "model.15")  # cat backbone P3
    y[16] = c3k2(net, y[15], "model.16")  # P3/8
    y[17] = conv(net, y[16], "model.17", 3, 2)
    y[18] = concat(net, [y[17], y[13]], "model.18")  # cat head P4
    y[19] = c3k2(net, y[18], "model.19")  # P4/16
    y[20] = conv(net, y[19], "model.20", 3, 2)
    y[21] = concat(net, [y[20], y[10]], "model.21")  # cat head P5
    y[22] = c3k2(net, y[21], "model.22")  # P5/32; YOLO26: C3k2(attn=True), Bottleneck + PSABlock


def yolo11(net: Net, x, task: str):
    """yolo11.yaml (-seg, -pose, -obb: another head; -cls: C2PSA and Classify after the backbone)."""
    y = yolo11_backbone(net, x)
    if task == "cls":
        y[9] = c2psa(net, y[8], "model.9")
        return classify(net, y[9], "model.10")
    y[9] = sppf(net, y[8], "model.9")
    y[10] = c2psa(net, y[9], "model.10")
    yolo11_neck(net, y)
    return HEADS[task](net, [y[16], y[19], y[22]], "model.23", depthwise_cls=True)


def yolo26(net: Net, x, task: str, *, one2one: bool = True):
    """yolo26.yaml: YOLO11's layout with SPPF(1024, 5, 3, True) (no activation in cv1, a shortcut), attention in
    model.22's C3k2, reg_max 1 (no DFL) and an end-to-end head (``one2one``: its one-to-one branch, else the
    one-to-many one); Segment26, Pose26, OBB26. -cls: yolo11-cls.yaml's rows, the same network."""
    y = yolo11_backbone(net, x)
    if task == "cls":
        y[9] = c2psa(net, y[8], "model.9")
        return classify(net, y[9], "model.10")
    y[9] = sppf(net, y[8], "model.9", cv1_act=False, shortcut=True)
    y[10] = c2psa(net, y[9], "model.10")
    yolo11_neck(net, y)
    return HEADS26[task](net, [y[16], y[19], y[22]], "model.23", depthwise_cls=True, one2one=one2one)


def yolov10(net: Net, x, task: str, *, one2one: bool = True):
    """yolov10{n,s,m,b,l,x}.yaml: YOLOv8's layout with SCDown to P4 and P5, PSA after SPPF, C2fCIB where the
    scale's yaml has it (the weights say which) and v10Detect (``one2one``: its one-to-one branch)."""
    if task != "detect":
        raise NetdefError(f"YOLOv10 is a detector (cfg/models/v10 has no {task} yaml)")
    y = {}
    y[0] = conv(net, x, "model.0", 3, 2)  # P1/2
    y[1] = conv(net, y[0], "model.1", 3, 2)  # P2/4
    y[2] = c2f(net, y[1], "model.2", shortcut=True)
    y[3] = conv(net, y[2], "model.3", 3, 2)  # P3/8
    y[4] = c2f(net, y[3], "model.4", shortcut=True)
    y[5] = scdown(net, y[4], "model.5", 3, 2)  # P4/16
    y[6] = c2f(net, y[5], "model.6", shortcut=True)  # x: C2fCIB
    y[7] = scdown(net, y[6], "model.7", 3, 2)  # P5/32
    y[8] = c2f(net, y[7], "model.8", shortcut=True)  # s..x: C2fCIB
    y[9] = sppf(net, y[8], "model.9")
    y[10] = psa(net, y[9], "model.10")
    y[11] = upsample(net, y[10], "model.11")
    y[12] = concat(net, [y[11], y[6]], "model.12")  # cat backbone P4
    y[13] = c2fcib(net, y[12], "model.13") if _holds_cib(net, "model.13") else c2f(net, y[12], "model.13")  # b..x
    y[14] = upsample(net, y[13], "model.14")
    y[15] = concat(net, [y[14], y[4]], "model.15")  # cat backbone P3
    y[16] = c2f(net, y[15], "model.16")  # P3/8
    y[17] = conv(net, y[16], "model.17", 3, 2)
    y[18] = concat(net, [y[17], y[13]], "model.18")  # cat head P4
    y[19] = c2fcib(net, y[18], "model.19") if _holds_cib(net, "model.19") else c2f(net, y[18], "model.19")  # m..x
    y[20] = scdown(net, y[19], "model.20", 3, 2)
    y[21] = concat(net, [y[20], y[10]], "model.21")  # cat head P5
    y[22] = c2fcib(net, y[21], "model.22")  # P5/32
    return detect(net, [y[16], y[19], y[22]], "model.23", depthwise_cls=True, one2one=one2one)


def yolo12(net: Net, x, task: str):
    """yolo12.yaml: YOLO11's backbone with A2C2f (area attention: 4 areas at P4, 1 at P5) instead of the last two
    C3k2 and no SPPF/C2PSA; A2C2f with C3k blocks in the neck (-cls: Classify after the backbone)."""
    y = {}
    y[0] = conv(net, x, "model.0", 3, 2)  # P1/2
    y[1] = conv(net, y[0], "model.1", 3, 2)  # P2/4
    y[2] = c3k2(net, y[1], "model.2")
    y[3] = conv(net, y[2], "model.3", 3, 2)  # P3/8
    y[4] = c3k2(net, y[3], "model.4")
    y[5] = conv(net, y[4], "model.5", 3, 2)  # P4/16
    y[6] = a2c2f(net, y[5], "model.6", area=4)
    y[7] = conv(net, y[6], "model.7", 3, 2)  # P5/32
    y[8] = a2c2f(net, y[7], "model.8", area=1)
    if task == "cls":
        return classify(net, y[8], "model.9")
    y[9] = upsample(net, y[8], "model.9")
    y[10] = concat(net, [y[9], y[6]], "model.10")  # cat backbone P4
    y[11] = a2c2f(net, y[10], "model.11")
    y[12] = upsample(net, y[11], "model.12")
    y[13] = concat(net, [y[12], y[4]], "model.13")  # cat backbone P3
    y[14] = a2c2f(net, y[13], "model.14")  # P3/8
    y[15] = conv(net, y[14], "model.15", 3, 2)
    y[16] = concat(net, [y[15], y[11]], "model.16")  # cat head P4
    y[17] = a2c2f(net, y[16], "model.17")  # P4/16
    y[18] = conv(net, y[17], "model.18", 3, 2)
    y[19] = concat(net, [y[18], y[8]], "model.19")  # cat head P5
    y[20] = c3k2(net, y[19], "model.20")  # P5/32
    return HEADS[task](net, [y[14], y[17], y[20]], "model.21", depthwise_cls=True)


NETWORKS = {"yolov8": yolov8, "yolo11": yolo11, "yolov10": yolov10, "yolo12": yolo12, "yolo26": yolo26}


# ---- small helpers ----------------------------------------------------------------------------------------
def _setting(net: Net, key: str):
    """A model-wide setting (BatchNorm eps, attention layer) from the metadata define() records first."""
    return net.meta["ultralytics"][key]


def _blocks(net: Net, path: str) -> int:
    """Blocks in ``path``.m (m.0, m.1, ...), from the weights."""
    prefix = f"{path}.m."
    found = {k[len(prefix) :].split(".", 1)[0] for k in net.weights if k.startswith(prefix)}
    j = 0
    while str(j) in found:
        j += 1
    if j == 0:
        raise NetdefError(f"layer {path}: the weights have no {path}.m.0 block")
    return j


def _holds_cib(net: Net, path: str) -> bool:
    """Whether the C2f at ``path`` is a C2fCIB (its blocks CIBs), as YOLOv10's larger scales have it."""
    return f"{path}.m.0.cv1.0.conv.weight" in net.weights


def _levels(net: Net, maps: list, name: str):
    """[B, C, H_i, W_i] per level -> [B, C, sum H_i W_i] (``.view(bs, C, -1)`` and ``torch.cat(..., 2)``)."""
    flat = [_reshape(net, m, (0, int(m.shape[1]), -1), f"{name}.{i}") for i, m in enumerate(maps)]
    return concat(net, flat, name, axis=2)


def _reshape(net: Net, x, dims, name: str, transpose=None, second=None):
    layer = net.network.add_shuffle(x)
    if transpose is not None:
        layer.first_transpose = transpose
    if dims is not None:
        layer.reshape_dims = dims
    if second is not None:
        layer.second_transpose = second
    return net.name(layer, name).get_output(0)
