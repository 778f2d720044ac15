"""RT-DETR layer by layer, as ultralytics' ``cfg/models/rt-detr/*.yaml`` and ``nn/modules`` build it.

One helper per ultralytics module (``HGStem``, ``HGBlock``, ``ResNetLayer``, ``RepC3``, ``AIFI``,
``RTDETRDecoder`` with its ``DeformableTransformerDecoderLayer`` and ``MSDeformAttn``), every layer named after
the module path it mirrors (``model.28.decoder.layers.5.cross_attn``), every module index written out:
``grep -n '"model.16"'`` lands on the line that builds module 16. Widths and block counts come from the weights.

The decoder's multi-scale deformable attention samples each level with TensorRT's grid-sample layer (bilinear,
zeros outside, unaligned corners: ``F.grid_sample``'s defaults, which ultralytics uses). Query selection is a
top-k over the encoder's best class scores and gathers; the final top-k over queries x classes is
``RTDETRDecoder.postprocess``. Boxes and scores are refined and decoded in fp32 whatever the precision.
"""

from __future__ import annotations

import math

import numpy as np

from netdefs.common import (
    activation,
    add,
    concat,
    conv_bn_act,
    conv_width,
    count_indices,
    elementwise,
    layer_norm,
    max_pool,
    multihead_attention,
    permute,
    reshape,
    slice_nd,
)
from netdefs.common import upsample_nearest as upsample
from trtx.net import Net, NetdefError

BN_EPS = 1e-3  # DetectionModel's initialize_weights() sets every BatchNorm2d to eps 1e-3
LN_EPS = 1e-5
AIFI_HEADS = 8  # the yamls' AIFI [cm, 8]
DECODER_HEADS = 8  # RTDETRDecoder's defaults: nh=8, ndp=4, nq=300
DECODER_POINTS = 4
NUM_QUERIES = 300


# ---- ultralytics/nn/modules/conv.py, block.py ----------------------------------------------------------------
def conv(net: Net, x, path: str, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, act: str = "silu"):
    """Conv: Conv2d(k, s, padding p (None: k // 2), bias=False) → BatchNorm2d → act (SiLU; "relu"; "none")."""
    names = {"conv": f"{path}.conv", "bn": f"{path}.bn", "act": None if act == "none" else path}
    y = conv_bn_act(net, x, **names, kind=act, kernel=k, stride=s, padding=p, groups=g, eps=BN_EPS)
    return net.alias(y, path) if act == "none" else y


def dwconv(net: Net, x, path: str, k: int = 1, s: int = 1, act: str = "silu"):
    """DWConv: Conv with groups = gcd(c1, c2) (c2 from the weights)."""
    c1, c2 = int(x.shape[1]), conv_width(net, path)
    return conv(net, x, path, k, s, g=math.gcd(c1, c2), act=act)


def light_conv(net: Net, x, path: str, k: int, act: str = "relu"):
    """LightConv: Conv 1x1 (no activation) → DWConv k."""
    y = conv(net, x, f"{path}.conv1", 1, act="none")
    return net.alias(dwconv(net, y, f"{path}.conv2", k, act=act), path)


def pad_right_bottom(net: Net, x, name: str):
    """``F.pad(x, [0, 1, 0, 1])``: one zero column on the right, one zero row at the bottom."""
    return net.name(net.network.add_padding_nd(x, (0, 0), (1, 1)), name).get_output(0)


def hg_stem(net: Net, x, path: str):
    """HGStem: stem1 (3x3/2) → [maxpool 2x2/1 (ceil) | stem2a 2x2 → stem2b 2x2], each after a bottom-right pad of
    one → concat → stem3 (3x3/2) → stem4 (1x1); ReLU throughout."""
    x = conv(net, x, f"{path}.stem1", 3, 2, act="relu")
    x = pad_right_bottom(net, x, f"{path}.pad1")
    x2 = conv(net, x, f"{path}.stem2a", 2, 1, 0, act="relu")
    x2 = pad_right_bottom(net, x2, f"{path}.pad2")
    x2 = conv(net, x2, f"{path}.stem2b", 2, 1, 0, act="relu")
    x1 = max_pool(net, x, f"{path}.pool", 2, stride=1, padding=0, ceil_mode=True)
    x = concat(net, [x1, x2], f"{path}.cat")
    x = conv(net, x, f"{path}.stem3", 3, 2, act="relu")
    return net.alias(conv(net, x, f"{path}.stem4", 1, act="relu"), path)


def hg_block(net: Net, x, path: str, k: int, lightconv: bool = False, shortcut: bool = False):
    """HGBlock: y = [x, m0(x), m1(m0(x)), ...] (Conv or LightConv k, ReLU) → cat → sc 1x1 → ec 1x1 (+ x)."""
    ys = [x]
    for j in range(_count(net, f"{path}.m.{{}}", "conv.weight" if not lightconv else "conv1.conv.weight")):
        block = light_conv if lightconv else conv
        ys.append(block(net, ys[-1], f"{path}.m.{j}", k, act="relu"))
    y = concat(net, ys, f"{path}.cat")
    y = conv(net, conv(net, y, f"{path}.sc", 1, act="relu"), f"{path}.ec", 1, act="relu")
    if shortcut and int(x.shape[1]) == int(y.shape[1]):
        return add(net, y, x, path)
    return net.alias(y, path)


def rep_conv(net: Net, x, path: str):
    """RepConv (not fused, as ultralytics runs it before ``fuse()``): SiLU(conv1 3x3 + conv2 1x1), both with
    BatchNorm and no activation of their own."""
    y = add(net, conv(net, x, f"{path}.conv1", 3, act="none"), conv(net, x, f"{path}.conv2", 1, act="none"),
            f"{path}.add")  # fmt: skip
    return activation(net, y, "silu", path)


def rep_c3(net: Net, x, path: str):
    """RepC3: cv3(m(cv1(x)) + cv2(x)), cv3 the identity when the hidden width is the output width."""
    y = conv(net, x, f"{path}.cv1", 1)
    for j in range(_count(net, f"{path}.m.{{}}", "conv1.conv.weight")):
        y = rep_conv(net, y, f"{path}.m.{j}")
    y = add(net, net.alias(y, f"{path}.m"), conv(net, x, f"{path}.cv2", 1), f"{path}.add")
    if f"{path}.cv3.conv.weight" in net.weights:
        return net.alias(conv(net, y, f"{path}.cv3", 1), path)
    return net.alias(y, path)


def resnet_block(net: Net, x, path: str, s: int):
    """ResNetBlock: relu(cv3(cv2(cv1(x))) + shortcut(x)); cv1 1x1, cv2 3x3/s (SiLU), cv3 1x1 (none); the shortcut
    a Conv 1x1/s (none) where the weights have one."""
    y = conv(net, x, f"{path}.cv1", 1)
    y = conv(net, y, f"{path}.cv2", 3, s, 1)
    y = conv(net, y, f"{path}.cv3", 1, act="none")
    if f"{path}.shortcut.0.conv.weight" in net.weights:
        x = net.alias(conv(net, x, f"{path}.shortcut.0", 1, s, act="none"), f"{path}.shortcut")
    return activation(net, add(net, y, x, f"{path}.add"), "relu", path)


def resnet_layer(net: Net, x, path: str, s: int = 1, is_first: bool = False):
    """ResNetLayer: the stem (Conv 7x7/2 + max-pool 3x3/2) when first, else ResNetBlocks (stride s on the first)."""
    if is_first:
        y = conv(net, x, f"{path}.layer.0", 7, 2, 3)
        y = max_pool(net, y, f"{path}.layer.1", 3, stride=2, padding=1)
        return net.alias(net.alias(y, f"{path}.layer"), path)
    for j in range(_count(net, f"{path}.layer.{{}}", "cv1.conv.weight")):
        x = resnet_block(net, x, f"{path}.layer.{j}", s if j == 0 else 1)
    return net.alias(net.alias(x, f"{path}.layer"), path)


# ---- ultralytics/nn/modules/transformer.py --------------------------------------------------------------------
def sincos_position_embedding(w: int, h: int, dim: int, temperature: float = 10000.0) -> np.ndarray:
    """AIFI.build_2d_sincos_position_embedding: [1, h·w, dim] = [sin(y·ω), cos(y·ω), sin(x·ω), cos(x·ω)],
    computed in float32 as ultralytics does."""
    if dim % 4:
        raise NetdefError(f"AIFI: the embedding width {dim} is not divisible by 4")
    f32 = np.float32
    grid_h, grid_w = np.meshgrid(np.arange(h, dtype=f32), np.arange(w, dtype=f32), indexing="ij")
    pos_dim = dim // 4
    omega = f32(1.0) / (f32(temperature) ** (np.arange(pos_dim, dtype=f32) / f32(pos_dim)))
    out_w = grid_w.reshape(-1, 1) @ omega[None]
    out_h = grid_h.reshape(-1, 1) @ omega[None]
    return np.concatenate([np.sin(out_h), np.cos(out_h), np.sin(out_w), np.cos(out_w)], 1)[None].astype(f32)


def aifi(net: Net, x, path: str, form: str = "matmul"):
    """AIFI (TransformerEncoderLayer, post-norm) on [B, C, H, W] flattened to [B, H·W, C]: q = k = src + pos,
    src = norm1(src + ma(q, k, src)), src = norm2(src + fc2(GELU(fc1(src)))); back to [B, C, H, W]."""
    c, h, w = (int(d) for d in x.shape[1:])
    src = permute(net, reshape(net, x, (0, c, h * w), f"{path}.flatten"), (0, 2, 1), f"{path}.permute")
    pos = net.constant(sincos_position_embedding(w, h, c), f"{path}.pos_embed")
    q = add(net, src, pos, f"{path}.with_pos_embed")
    y = multihead_attention(net, q, f"{path}.ma", AIFI_HEADS, key=q, value=src, form=form)
    src = layer_norm(net, add(net, src, y, f"{path}.add1"), f"{path}.norm1", eps=LN_EPS)
    y = net.linear(src, f"{path}.fc1").get_output(0)
    y = net.linear(activation(net, y, "gelu", f"{path}.act"), f"{path}.fc2").get_output(0)
    src = layer_norm(net, add(net, src, y, f"{path}.add2"), f"{path}.norm2", eps=LN_EPS)
    return net.alias(_channels_first(net, src, (c, h, w), f"{path}.unflatten"), path)


def _channels_first(net: Net, x, chw: tuple[int, int, int], name: str):
    """[B, H·W, C] -> [B, C, H, W]: ``x.permute(0, 2, 1).view(-1, c, h, w)``."""
    layer = net.network.add_shuffle(x)
    layer.first_transpose = (0, 2, 1)
    layer.reshape_dims = (0, *chw)
    return net.name(layer, name).get_output(0)


def mlp(net: Net, x, path: str, name: str | None = None):
    """ultralytics MLP: Linear ``layers.i`` with ReLU between them. ``name`` prefixes the layers of a call other
    than the module's own (query_pos_head runs once per decoder layer)."""
    name = name or path
    n = _count(net, f"{path}.layers.{{}}", "weight")
    for i in range(n):
        key = f"{path}.layers.{i}"
        x = net.linear(x, f"{name}.layers.{i}", weight_key=f"{key}.weight", bias_key=f"{key}.bias").get_output(0)
        if i < n - 1:
            x = activation(net, x, "relu", f"{name}.act.{i}")
    return net.alias(x, name)


def inverse_sigmoid(net: Net, x, name: str, eps: float = 1e-5):
    """log(x / (1 - x)) with x clamped to [0, 1] and both parts to at least eps (ultralytics' inverse_sigmoid)."""
    rank = len(x.shape)
    x = elementwise(net, x, _const(net, 0.0, rank, f"{name}.zero"), "MAX", f"{name}.clamp_min")
    x = elementwise(net, x, _const(net, 1.0, rank, f"{name}.one"), "MIN", f"{name}.clamp")
    x1 = elementwise(net, x, _const(net, eps, rank, f"{name}.eps"), "MAX", f"{name}.x1")
    x2 = elementwise(net, _const(net, 1.0, rank, f"{name}.one_"), x, "SUB", f"{name}.one_minus")
    x2 = elementwise(net, x2, _const(net, eps, rank, f"{name}.eps_"), "MAX", f"{name}.x2")
    ratio = elementwise(net, x1, x2, "DIV", f"{name}.ratio")
    return net.name(net.network.add_unary(ratio, net.trt.UnaryOperation.LOG), name).get_output(0)


def ms_deform_attn(net: Net, query, refer_bbox, value, shapes: list[tuple[int, int]], path: str):
    """MSDeformAttn at ``path`` with 4-value reference boxes: per head, level and point an offset and a weight from
    the query (the weights a softmax over levels x points), sampling locations refer_xy + offset / n_points ·
    refer_wh · 0.5, then :func:`multi_scale_deformable_attn` of the projected value, ``output_proj``. Offsets,
    weights and locations in fp32."""
    heads, points, levels = DECODER_HEADS, DECODER_POINTS, len(shapes)
    nq, lp = int(query.shape[1]), levels * points
    length = sum(h * w for h, w in shapes)
    if int(value.shape[1]) != length:
        raise NetdefError(f"layer {path}: {int(value.shape[1])} value tokens for feature maps {shapes}")
    v = net.linear(value, f"{path}.value_proj").get_output(0)  # [B, L, C]
    offsets = net.to_fp32(net.linear(query, f"{path}.sampling_offsets").get_output(0), f"{path}.offsets.to_fp32")
    offsets = reshape(net, offsets, (0, nq, heads, lp, 2), f"{path}.sampling_offsets.view")
    weights = net.to_fp32(net.linear(query, f"{path}.attention_weights").get_output(0), f"{path}.weights.to_fp32")
    soft = net.network.add_softmax(reshape(net, weights, (0, nq, heads, lp), f"{path}.attention_weights.view"))
    soft.axes = 1 << 3
    weights = net.to_compute(net.name(soft, f"{path}.attention_weights.softmax").get_output(0))
    ref = reshape(net, refer_bbox, (0, nq, 1, 1, 4), f"{path}.refer_bbox")  # refer_bbox[:, :, None, None, :]
    xy = slice_nd(net, ref, f"{path}.refer_xy", (0, 0, 0, 0, 0), (None, nq, 1, 1, 2))
    wh = slice_nd(net, ref, f"{path}.refer_wh", (0, 0, 0, 0, 2), (None, nq, 1, 1, 2))
    step = _times(net, offsets, 1.0 / points, f"{path}.offsets_per_point")
    step = _times(net, elementwise(net, step, wh, "PROD", f"{path}.offsets_wh"), 0.5, f"{path}.offsets_half")
    locations = add(net, xy, step, f"{path}.sampling_locations")  # [B, Q, heads, levels·points, 2]
    out = multi_scale_deformable_attn(net, v, shapes, locations, weights, f"{path}.sample")
    return net.alias(net.linear(out, f"{path}.output_proj").get_output(0), path)


def multi_scale_deformable_attn(net: Net, value, shapes: list[tuple[int, int]], locations, weights, name: str):
    """ultralytics' multi_scale_deformable_attn_pytorch: ``value`` [B, L, C] split per head and level into
    [B·heads, head_dim, H, W] maps, each sampled at its ``n_points`` locations (in [0, 1], as grid_sample's
    [-1, 1]) by TensorRT's grid-sample layer (bilinear, zeros outside, unaligned corners), the samples of all
    levels weighted by ``weights`` [B, Q, heads, levels·points] and summed -> [B, Q, C]."""
    heads, points = DECODER_HEADS, DECODER_POINTS
    c, nq, lp = int(value.shape[2]), int(locations.shape[1]), int(locations.shape[3])
    d, length = c // heads, int(value.shape[1])
    value = reshape(net, value, (0, length, heads, d), f"{name}.value.view", transpose=(0, 2, 3, 1))  # [B, h, d, L]
    value = reshape(net, value, (-1, d, length), f"{name}.value.heads")  # [B·heads, d, L]
    grids = _times(net, locations, 2.0, f"{name}.grids.double")  # 2 · location - 1
    grids = add(net, grids, _const(net, -1.0, 5, f"{name}.minus_one"), f"{name}.grids")
    grids = reshape(net, permute(net, grids, (0, 2, 1, 3, 4), f"{name}.grids.permute"), (-1, nq, lp, 2),
                    f"{name}.grids.heads")  # fmt: skip  # [B·heads, Q, levels·points, 2]
    grids = net.to_compute(grids, f"{name}.grids.to_compute")
    sampled, start = [], 0
    for level, (h, w) in enumerate(shapes):
        v_l = slice_nd(net, value, f"{name}.value.{level}", (0, 0, start), (None, d, h * w))
        v_l = reshape(net, v_l, (-1, d, h, w), f"{name}.value.{level}.map")
        g_l = slice_nd(net, grids, f"{name}.grids.{level}", (0, 0, level * points, 0), (None, nq, points, 2))
        layer = net.network.add_grid_sample(v_l, g_l)
        layer.interpolation_mode = net.trt.InterpolationMode.LINEAR
        layer.sample_mode = net.trt.SampleMode.FILL
        layer.align_corners = False
        sampled.append(net.name(layer, f"{name}.grid_sample.{level}").get_output(0))  # [B·heads, d, Q, points]
        start += h * w
    samples = concat(net, sampled, f"{name}.samples", axis=3)  # [B·heads, d, Q, levels·points]
    weights = reshape(net, permute(net, weights, (0, 2, 1, 3), f"{name}.weights.permute"), (-1, 1, nq, lp),
                      f"{name}.weights.heads")  # fmt: skip
    out = net.network.add_reduce(elementwise(net, samples, weights, "PROD", f"{name}.weighted"),
                                 net.trt.ReduceOperation.SUM, 1 << 3, False)  # fmt: skip
    out = net.name(out, f"{name}.sum").get_output(0)  # [B·heads, d, Q]
    return reshape(net, out, (-1, c, nq), f"{name}.view", transpose=(0, 2, 1))  # [B, Q, C]


def decoder_layer(net: Net, embed, refer_bbox, feats, shapes, query_pos, path: str, form: str = "matmul"):
    """DeformableTransformerDecoderLayer: self-attention (q = k = embed + pos), norm1; deformable cross-attention
    on the image features, norm2; FFN (linear1, ReLU, linear2), norm3."""
    q = add(net, embed, query_pos, f"{path}.with_pos_embed")
    y = multihead_attention(net, q, f"{path}.self_attn", DECODER_HEADS, key=q, value=embed, form=form)
    embed = layer_norm(net, add(net, embed, y, f"{path}.add1"), f"{path}.norm1", eps=LN_EPS)
    q = add(net, embed, query_pos, f"{path}.with_pos_embed2")
    y = ms_deform_attn(net, q, refer_bbox, feats, shapes, f"{path}.cross_attn")
    embed = layer_norm(net, add(net, embed, y, f"{path}.add2"), f"{path}.norm2", eps=LN_EPS)
    y = net.linear(embed, f"{path}.linear1").get_output(0)
    y = net.linear(activation(net, y, "relu", f"{path}.act"), f"{path}.linear2").get_output(0)
    return net.alias(layer_norm(net, add(net, embed, y, f"{path}.add3"), f"{path}.norm3", eps=LN_EPS), path)


def generate_anchors(shapes: list[tuple[int, int]], grid_size: float = 0.05, eps: float = 1e-2):
    """RTDETRDecoder._generate_anchors: per level cells (x + 0.5) / w, (y + 0.5) / h with size grid_size · 2^level,
    in logit space; (anchors [1, L, 4] with +inf where invalid, valid_mask [1, L, 1] as 0/1), float32."""
    f32 = np.float32
    anchors = []
    for i, (h, w) in enumerate(shapes):
        gy, gx = np.meshgrid(np.arange(h, dtype=f32), np.arange(w, dtype=f32), indexing="ij")
        xy = np.stack([(gx + f32(0.5)) / f32(w), (gy + f32(0.5)) / f32(h)], -1)
        wh = np.full_like(xy, f32(grid_size) * f32(2.0**i))
        anchors.append(np.concatenate([xy, wh], -1).reshape(-1, 4))
    anchors = np.concatenate(anchors)[None].astype(f32)
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        logits = np.log(anchors / (f32(1) - anchors)).astype(f32)
    return np.where(valid, logits, f32(np.inf)).astype(f32), valid.astype(f32)


def batch_gather(net: Net, x, index, name: str):
    """``x[batch_ind, index]``: rows ``index`` [B, K] of ``x`` [B, N, C] -> [B, K, C] (one gather per image)."""
    layer = net.network.add_gather(x, index, 1)
    layer.num_elementwise_dims = 1
    return net.name(layer, name).get_output(0)


def rtdetr_decoder(net: Net, maps: list, path: str, imgsz: tuple[int, int], form: str = "matmul"):
    """RTDETRDecoder (inference): input projections → flattened features; query selection (encoder output,
    scores, top-k, box head + anchors); the deformable decoder; postprocess (top-k over queries x classes).
    Returns boxes [B, K, 4] (cx, cy, w, h in input pixels), scores [B, K] and classes [B, K] (int32), fp32."""
    trt, nw = net.trt, net.network
    projected, shapes = [], []
    for i, m in enumerate(maps):
        y = net.conv(m, f"{path}.input_proj.{i}.0", 1).get_output(0)
        y = net.alias(net.batchnorm(y, f"{path}.input_proj.{i}.1", BN_EPS).get_output(0), f"{path}.input_proj.{i}")
        c, h, w = (int(d) for d in y.shape[1:])
        shapes.append((h, w))
        projected.append(permute(net, reshape(net, y, (0, c, h * w), f"{path}.feats.{i}.flatten"), (0, 2, 1),
                                 f"{path}.feats.{i}"))  # fmt: skip
    feats = concat(net, projected, f"{path}.feats", axis=1)  # [B, L, hd]
    length = int(feats.shape[1])

    # query selection (_get_decoder_input)
    anchors, valid_mask = generate_anchors(shapes)
    masked = elementwise(net, feats, net.constant(valid_mask, f"{path}.valid_mask"), "PROD", f"{path}.valid_mask.mul")
    features = net.linear(masked, f"{path}.enc_output.0").get_output(0)
    features = net.alias(layer_norm(net, features, f"{path}.enc_output.1", eps=LN_EPS), f"{path}.enc_output")
    scores = net.linear(features, f"{path}.enc_score_head").get_output(0)  # [B, L, nc]
    best = net.name(nw.add_reduce(scores, trt.ReduceOperation.MAX, 1 << 2, False), f"{path}.enc_scores.max")
    k = min(NUM_QUERIES, length)
    topk = net.name(nw.add_topk(net.to_fp32(best.get_output(0), f"{path}.enc_scores.to_fp32"),
                                trt.TopKOperation.MAX, k, 1 << 1), f"{path}.topk")  # fmt: skip
    index = topk.get_output(1)  # [B, K] int32
    top_features = batch_gather(net, features, index, f"{path}.top_k_features")
    anchor_table = net.constant(anchors[0], f"{path}.anchors", np.float32)  # [L, 4]
    top_anchors = net.name(nw.add_gather(anchor_table, index, 0), f"{path}.top_k_anchors").get_output(0)
    box = mlp(net, top_features, f"{path}.enc_bbox_head")
    refer_bbox = add(net, net.to_fp32(box, f"{path}.enc_bbox_head.to_fp32"), top_anchors, f"{path}.refer_bbox")

    # the decoder (DeformableTransformerDecoder, eval: every layer runs, the last one scores)
    embed = top_features
    refer_bbox = activation(net, refer_bbox, "sigmoid", f"{path}.decoder.refer_bbox.sigmoid")  # fp32
    n_layers = _count(net, f"{path}.decoder.layers.{{}}", "norm3.weight")
    for i in range(n_layers):
        p = f"{path}.decoder.layers.{i}"
        pos = mlp(net, net.to_compute(refer_bbox, f"{p}.refer_bbox.to_compute"), f"{path}.query_pos_head",
                  f"{path}.query_pos_head.call{i}")  # fmt: skip
        embed = decoder_layer(net, embed, refer_bbox, feats, shapes, pos, p, form=form)
        bbox = net.to_fp32(mlp(net, embed, f"{path}.dec_bbox_head.{i}"), f"{path}.dec_bbox_head.{i}.to_fp32")
        refined = add(net, bbox, inverse_sigmoid(net, refer_bbox, f"{p}.inverse_sigmoid"), f"{p}.refine")
        refer_bbox = activation(net, refined, "sigmoid", f"{p}.refined_bbox")
    logits = net.linear(embed, f"{path}.dec_score_head.{n_layers - 1}").get_output(0)  # [B, Q, nc]
    return postprocess(net, refer_bbox, net.to_fp32(logits, f"{path}.dec_scores.to_fp32"), f"{path}.post", imgsz)


def postprocess(net: Net, boxes, logits, name: str, imgsz: tuple[int, int]):
    """RTDETRDecoder.postprocess: the top k = min(300, Q·nc) of sigmoid(scores) over queries x classes; each one's
    query box (scaled to input pixels) and class = index mod nc. fp32."""
    trt, nw = net.trt, net.network
    E = trt.ElementWiseOperation
    nq, nc = (int(d) for d in logits.shape[1:])
    scores = activation(net, logits, "sigmoid", f"{name}.sigmoid")
    flat = reshape(net, scores, (0, nq * nc), f"{name}.flatten")
    k = min(NUM_QUERIES, nq * nc)
    topk = net.name(nw.add_topk(flat, trt.TopKOperation.MAX, k, 1 << 1), f"{name}.topk")
    values, index = topk.get_output(0), topk.get_output(1)
    classes_n = net.constant(np.full((1, 1), nc, np.int32), f"{name}.nc", np.int32)
    query = net.name(nw.add_elementwise(index, classes_n, E.FLOOR_DIV), f"{name}.query_index").get_output(0)
    cls = net.name(nw.add_elementwise(query, classes_n, E.PROD), f"{name}.query_start").get_output(0)
    cls = net.name(nw.add_elementwise(index, cls, E.SUB), f"{name}.class").get_output(0)
    boxes = batch_gather(net, boxes, query, f"{name}.boxes")
    h, w = imgsz
    pixels = net.constant(np.array([[[w, h, w, h]]], np.float32), f"{name}.pixels", np.float32)
    return elementwise(net, boxes, pixels, "PROD", f"{name}.boxes_px"), values, cls


# ---- the yaml files ---------------------------------------------------------------------------------------------
def rtdetr_l(net: Net, x, imgsz: tuple[int, int], form: str = "matmul"):
    """rtdetr-l.yaml."""
    y = {}
    y[0] = hg_stem(net, x, "model.0")  # P2/4
    y[1] = hg_block(net, y[0], "model.1", 3)  # stage 1
    y[2] = dwconv(net, y[1], "model.2", 3, 2, act="none")  # P3/8
    y[3] = hg_block(net, y[2], "model.3", 3)  # stage 2
    y[4] = dwconv(net, y[3], "model.4", 3, 2, act="none")  # P4/16
    y[5] = hg_block(net, y[4], "model.5", 5, lightconv=True, shortcut=False)
    y[6] = hg_block(net, y[5], "model.6", 5, lightconv=True, shortcut=True)
    y[7] = hg_block(net, y[6], "model.7", 5, lightconv=True, shortcut=True)  # stage 3
    y[8] = dwconv(net, y[7], "model.8", 3, 2, act="none")  # P5/32
    y[9] = hg_block(net, y[8], "model.9", 5, lightconv=True, shortcut=False)  # stage 4
    y[10] = conv(net, y[9], "model.10", 1, act="none")  # input_proj.2
    y[11] = aifi(net, y[10], "model.11", form)
    y[12] = conv(net, y[11], "model.12", 1)  # Y5, lateral_convs.0
    y[13] = upsample(net, y[12], "model.13")
    y[14] = conv(net, y[7], "model.14", 1, act="none")  # input_proj.1
    y[15] = concat(net, [y[13], y[14]], "model.15")
    y[16] = rep_c3(net, y[15], "model.16")  # fpn_blocks.0
    y[17] = conv(net, y[16], "model.17", 1)  # Y4, lateral_convs.1
    y[18] = upsample(net, y[17], "model.18")
    y[19] = conv(net, y[3], "model.19", 1, act="none")  # input_proj.0
    y[20] = concat(net, [y[18], y[19]], "model.20")  # cat backbone P4
    y[21] = rep_c3(net, y[20], "model.21")  # X3, fpn_blocks.1
    y[22] = conv(net, y[21], "model.22", 3, 2)  # downsample_convs.0
    y[23] = concat(net, [y[22], y[17]], "model.23")  # cat Y4
    y[24] = rep_c3(net, y[23], "model.24")  # F4, pan_blocks.0
    y[25] = conv(net, y[24], "model.25", 3, 2)  # downsample_convs.1
    y[26] = concat(net, [y[25], y[12]], "model.26")  # cat Y5
    y[27] = rep_c3(net, y[26], "model.27")  # F5, pan_blocks.1
    return rtdetr_decoder(net, [y[21], y[24], y[27]], "model.28", imgsz, form)


def rtdetr_resnet(net: Net, x, imgsz: tuple[int, int], form: str = "matmul"):
    """rtdetr-resnet50.yaml and rtdetr-resnet101.yaml (they differ in the blocks of model.3, read from the weights)."""
    y = {}
    y[0] = resnet_layer(net, x, "model.0", is_first=True)
    y[1] = resnet_layer(net, y[0], "model.1", 1)
    y[2] = resnet_layer(net, y[1], "model.2", 2)
    y[3] = resnet_layer(net, y[2], "model.3", 2)
    y[4] = resnet_layer(net, y[3], "model.4", 2)
    y[5] = conv(net, y[4], "model.5", 1, act="none")
    y[6] = aifi(net, y[5], "model.6", form)
    y[7] = conv(net, y[6], "model.7", 1)
    y[8] = upsample(net, y[7], "model.8")
    y[9] = conv(net, y[3], "model.9", 1, act="none")
    y[10] = concat(net, [y[8], y[9]], "model.10")
    y[11] = rep_c3(net, y[10], "model.11")
    y[12] = conv(net, y[11], "model.12", 1)
    y[13] = upsample(net, y[12], "model.13")
    y[14] = conv(net, y[2], "model.14", 1, act="none")
    y[15] = concat(net, [y[13], y[14]], "model.15")  # cat backbone P4
    y[16] = rep_c3(net, y[15], "model.16")  # X3, fpn_blocks.1
    y[17] = conv(net, y[16], "model.17", 3, 2)  # downsample_convs.0
    y[18] = concat(net, [y[17], y[12]], "model.18")  # cat Y4
    y[19] = rep_c3(net, y[18], "model.19")  # F4, pan_blocks.0
    y[20] = conv(net, y[19], "model.20", 3, 2)  # downsample_convs.1
    y[21] = concat(net, [y[20], y[7]], "model.21")  # cat Y5
    y[22] = rep_c3(net, y[21], "model.22")  # F5, pan_blocks.1
    return rtdetr_decoder(net, [y[16], y[19], y[22]], "model.23", imgsz, form)


# ---- small helpers ------------------------------------------------------------------------------------------
def _count(net: Net, template: str, leaf: str) -> int:
    """How many consecutive j from 0 have ``template.format(j) + "." + leaf`` in the weights (at least one)."""
    n = count_indices(net.weights, f"{template}.{leaf}")
    if n == 0:
        raise NetdefError(f"weights have no tensor {template.format(0)}.{leaf!r}")
    return n


def _times(net: Net, x, factor: float, name: str):
    """``x · factor`` (fp32 constant)."""
    return elementwise(net, x, _const(net, factor, len(x.shape), f"{name}.factor"), "PROD", name)


def _const(net: Net, value: float, rank: int, name: str):
    return net.constant(np.full((1,) * rank, value, np.float32), name, np.float32)
