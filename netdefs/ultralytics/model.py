"""YOLOv8 and YOLO11 layer by layer, the way ultralytics' yaml files and ``nn/modules`` build them.

One helper per ultralytics module (``Conv``, ``C2f``, ``C3k2``, ``SPPF``, ``C2PSA``, ``Detect``...), every layer
named after the module path it mirrors (``model.22.cv2.0.1.conv``), every module index written out:
``grep -n '"model.13"'`` lands on the line that builds module 13. Widths, blocks per C2f/C3k2 (and whether a
C3k2 holds C3k or Bottleneck blocks), classes, reg_max and keypoints all come from the weights.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from netdefs.common import concat, conv_bn_act, conv_width, flatten, global_avg_pool, max_pool, split
from netdefs.common import upsample_nearest as upsample
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
    Bottlenecks, or C3k where the weights have them (in a C3k2)."""
    y = conv(net, x, f"{path}.cv1", 1)
    c = int(y.shape[1]) // 2
    ys = split(net, y, [c, c], f"{path}.chunk")
    for j in range(_blocks(net, path)):
        block = c3k if f"{path}.m.{j}.cv3.conv.weight" in net.weights else bottleneck
        ys.append(block(net, ys[-1], f"{path}.m.{j}", shortcut))
    return net.alias(conv(net, concat(net, ys, f"{path}.cat"), f"{path}.cv2", 1), path)


def c3k(net: Net, x, path: str, shortcut: bool = True):
    """C3k (a C3 with 3x3 bottlenecks): cv3(cat(m(cv1(x)), cv2(x)))."""
    y = conv(net, x, f"{path}.cv1", 1)
    for j in range(_blocks(net, path)):
        y = bottleneck(net, y, f"{path}.m.{j}", shortcut)
    y = concat(net, [net.alias(y, f"{path}.m"), conv(net, x, f"{path}.cv2", 1)], f"{path}.cat")
    return net.alias(conv(net, y, f"{path}.cv3", 1), path)


def c3k2(net: Net, x, path: str, shortcut: bool = True):
    """C3k2: a C2f whose blocks are C3k (c3k=True: the m/l/x scales, and where the yaml says so) or
    Bottleneck, with shortcuts by default."""
    return c2f(net, x, path, shortcut)


def sppf(net: Net, x, path: str, k: int = 5):
    """SPPF: cv2(cat(x, m(x), m(m(x)), m(m(m(x))))) after x = cv1(x); m = MaxPool2d(k, 1, k // 2)."""
    x = conv(net, x, f"{path}.cv1", 1)
    y1 = max_pool(net, x, f"{path}.m.y1", k, 1, k // 2)  # one MaxPool2d module, run three times: no module path
    y2 = max_pool(net, y1, f"{path}.m.y2", k, 1, k // 2)
    y3 = max_pool(net, y2, f"{path}.m.y3", k, 1, k // 2)
    return net.alias(conv(net, concat(net, [x, y1, y2, y3], f"{path}.cat"), f"{path}.cv2", 1), path)


def attention(net: Net, x, path: str, num_heads: int, attn_ratio: float = 0.5, scale: float | None = None):
    """Attention: q, k, v from one 1x1 conv; softmax((q * scale)^T k) weighs v; plus a depthwise positional
    conv of v; proj. ``scale`` defaults to key_dim ** -0.5. With ``--attention trt`` TensorRT's attention layer
    computes the middle part."""
    nw, trt = net.network, net.trt
    c, h, w = (int(d) for d in x.shape[1:])
    head_dim = c // num_heads
    key_dim = int(head_dim * attn_ratio)
    n = h * w
    scale = key_dim**-0.5 if scale is None else scale
    qkv = conv(net, x, f"{path}.qkv", 1, act=False)
    heads = nw.add_shuffle(qkv)
    heads.reshape_dims = (0, num_heads, 2 * key_dim + head_dim, n)
    q, k, v = split(
        net, net.name(heads, f"{path}.heads").get_output(0), [key_dim, key_dim, head_dim], f"{path}.split", axis=2
    )
    if _setting(net, "attention") == "trt":
        y = _attention_layer(net, q, k, v, scale, f"{path}.sdpa")
    else:
        factor = net.constant(np.full((1, 1, 1, 1), scale, np.float32), f"{path}.scale")
        qs = net.name(nw.add_elementwise(q, factor, trt.ElementWiseOperation.PROD), f"{path}.q_scaled").get_output(0)
        mm = nw.add_matrix_multiply(qs, trt.MatrixOperation.TRANSPOSE, k, trt.MatrixOperation.NONE)
        logits = net.name(mm, f"{path}.logits").get_output(0)  # [B, heads, N, N]
        soft = nw.add_softmax(net.to_fp32(logits, f"{path}.logits.to_fp32"))
        soft.axes = 1 << 3
        attn = net.to_compute(net.name(soft, f"{path}.softmax").get_output(0), f"{path}.softmax.to_compute")
        mm = nw.add_matrix_multiply(v, trt.MatrixOperation.NONE, attn, trt.MatrixOperation.TRANSPOSE)
        y = net.name(mm, f"{path}.weighted").get_output(0)  # [B, heads, head_dim, N]
    y = _reshape(net, y, (0, c, h, w), f"{path}.view")
    pe = conv(net, _reshape(net, v, (0, c, h, w), f"{path}.v_view"), f"{path}.pe", 3, g=c, act=False)
    y = net.name(nw.add_elementwise(y, pe, trt.ElementWiseOperation.SUM), f"{path}.add_pe").get_output(0)
    return net.alias(conv(net, y, f"{path}.proj", 1, act=False), path)


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


def psa_block(net: Net, x, path: str, num_heads: int):
    """PSABlock: x + attn(x), then x + ffn(x) (ffn: Conv 1x1 to 2c with SiLU, Conv 1x1 back without)."""
    x = net.add(x, attention(net, x, f"{path}.attn", num_heads), f"{path}.add_attn").get_output(0)
    f = conv(net, conv(net, x, f"{path}.ffn.0", 1), f"{path}.ffn.1", 1, act=False)
    return net.add(x, net.alias(f, f"{path}.ffn"), path).get_output(0)


def c2psa(net: Net, x, path: str):
    """C2PSA: cv2(cat(a, m(b))) with a, b = split(cv1(x)); m: PSABlocks with max(c // 64, 1) heads."""
    y = conv(net, x, f"{path}.cv1", 1)
    c = int(y.shape[1]) // 2
    a, b = split(net, y, [c, c], f"{path}.split")
    for j in range(_blocks(net, path)):
        b = psa_block(net, b, f"{path}.m.{j}", max(c // 64, 1))
    return net.alias(conv(net, concat(net, [a, net.alias(b, f"{path}.m")], f"{path}.cat"), f"{path}.cv2", 1), path)


def proto(net: Net, x, path: str):
    """Proto: cv3(cv2(upsample(cv1(x)))), upsample a ConvTranspose2d(2, 2) with bias: the mask prototypes."""
    y = net.deconv(conv(net, x, f"{path}.cv1", 3), f"{path}.upsample", 2, stride=2).get_output(0)
    return net.alias(conv(net, conv(net, y, f"{path}.cv2", 3), f"{path}.cv3", 1), path)


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


def detect(net: Net, feats: list, path: str, *, depthwise_cls: bool) -> dict[str, Any]:
    """Detect.forward_head: per level the box branch cv2 and the class branch cv3, each flattened to
    [B, C, H*W] and concatenated over the levels: {"boxes": [B, 4 * reg_max, A], "scores": [B, nc, A] logits}."""
    boxes = [branch(net, f, f"{path}.cv2.{i}") for i, f in enumerate(feats)]
    scores = [branch(net, f, f"{path}.cv3.{i}", depthwise_cls) for i, f in enumerate(feats)]
    return {"boxes": _levels(net, boxes, f"{path}.boxes"), "scores": _levels(net, scores, f"{path}.scores")}


def segment(net: Net, feats: list, path: str, *, depthwise_cls: bool) -> dict[str, Any]:
    """Segment: Detect + mask coefficients (cv4) + the prototypes (proto, on P3)."""
    head = detect(net, feats, path, depthwise_cls=depthwise_cls)
    coefs = [branch(net, f, f"{path}.cv4.{i}") for i, f in enumerate(feats)]
    return {
        **head,
        "mask_coefficient": _levels(net, coefs, f"{path}.mask_coefficient"),
        "proto": proto(net, feats[0], f"{path}.proto"),
    }


def pose(net: Net, feats: list, path: str, *, depthwise_cls: bool) -> dict[str, Any]:
    """Pose: Detect + keypoints (cv4: keypoints x (x, y[, visibility]) per anchor, undecoded)."""
    head = detect(net, feats, path, depthwise_cls=depthwise_cls)
    kpts = [branch(net, f, f"{path}.cv4.{i}") for i, f in enumerate(feats)]
    return {**head, "kpts": _levels(net, kpts, f"{path}.kpts")}


def obb(net: Net, feats: list, path: str, *, depthwise_cls: bool) -> dict[str, Any]:
    """OBB: Detect + the angle (cv4 logits -> (sigmoid - 1/4) * pi, in [-pi/4, 3pi/4))."""
    head = detect(net, feats, path, depthwise_cls=depthwise_cls)
    logits = _levels(net, [branch(net, f, f"{path}.cv4.{i}") for i, f in enumerate(feats)], f"{path}.angle_logits")
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


HEADS = {"detect": detect, "seg": segment, "pose": pose, "obb": obb}


def classify(net: Net, x, path: str):
    """Classify: linear(flatten(pool(conv(x)))) (dropout p=0 is the identity): the logits [B, nc]."""
    y = global_avg_pool(net, conv(net, x, f"{path}.conv", 1), f"{path}.pool")
    return net.linear(flatten(net, y, f"{path}.flatten"), f"{path}.linear").get_output(0)


# ---- the networks (cfg/models/v8/yolov8*.yaml, cfg/models/11/yolo11*.yaml) ---------------------------------
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
    """Conv stem, then per level P2..P5 a Conv 3x3/2 and a C3k2."""
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


def yolo11(net: Net, x, task: str):
    """yolo11.yaml (-seg, -pose, -obb: another head; -cls: C2PSA and Classify after the backbone)."""
    y = yolo11_backbone(net, x)
    if task == "cls":
        y[9] = c2psa(net, y[8], "model.9")
        return classify(net, y[9], "model.10")
    y[9] = sppf(net, y[8], "model.9")
    y[10] = c2psa(net, y[9], "model.10")
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
    y[22] = c3k2(net, y[21], "model.22")  # P5/32
    return HEADS[task](net, [y[16], y[19], y[22]], "model.23", depthwise_cls=True)


NETWORKS = {"yolov8": yolov8, "yolo11": yolo11}


# ---- small helpers ----------------------------------------------------------------------------------------
def _setting(net: Net, key: str):
    """A model-wide setting (BatchNorm eps, attention layer) from the metadata define() records first."""
    return net.meta["ultralytics"][key]


def _blocks(net: Net, path: str) -> int:
    """Blocks in ``path``.m, from the weights (Bottleneck/C3k: m.j.cv1; PSABlock: m.j.attn)."""
    j = 0
    while f"{path}.m.{j}.cv1.conv.weight" in net.weights or f"{path}.m.{j}.attn.qkv.conv.weight" in net.weights:
        j += 1
    if j == 0:
        raise NetdefError(f"layer {path}: the weights have no {path}.m.0 block")
    return j


def _levels(net: Net, maps: list, name: str):
    """[B, C, H_i, W_i] per level -> [B, C, sum H_i W_i] (``.view(bs, C, -1)`` and ``torch.cat(..., 2)``)."""
    flat = [_reshape(net, m, (0, int(m.shape[1]), -1), f"{name}.{i}") for i, m in enumerate(maps)]
    return concat(net, flat, name, axis=2)


def _reshape(net: Net, x, dims, name: str, transpose=None):
    layer = net.network.add_shuffle(x)
    if dims is not None:
        layer.reshape_dims = dims
    if transpose is not None:
        layer.first_transpose = transpose
    return net.name(layer, name).get_output(0)
