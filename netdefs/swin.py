"""Swin Transformer V1 and V2, torchvision's ``swin_t/s/b`` and ``swin_v2_t/s/b``: layer names and weight keys
are torchvision's.

python gen_wts.py --model netdef:swin:swin_t --random-init -o swin_t.wts
python netdefs/swin.py build -w swin_t.wts --arch swin_t -o swin_t.engine
python netdefs/swin.py check -w swin_t.wts --arch swin_t
python netdefs/swin.py check -w swin_v2_t.wts --arch swin_v2_t --input-size 224

Channels-last ([B, H, W, C]) as torchvision runs it. Each block attends within windows of ``window`` x ``window``
patches: the feature map is padded to whole windows, rolled by half a window in every second block (shifted
windows, with a mask that keeps patches from attending across the roll's seam), cut into windows, and put back
the same way. V1 adds a learned relative position bias (a table gathered by relative position) to scaled
q·kᵀ; V2 uses cosine attention (q, k normalized, times a clamped per-head logit scale) plus a continuous
position bias (a small MLP on log-spaced relative coordinates, 16·sigmoid), puts LayerNorm after attention and
MLP instead of before, and normalizes after the patch-merging reduction. Structure (embedding width, depths,
heads, window size, patch, V1/V2) comes from the weights; ``--arch`` only checks it.
"""

from __future__ import annotations

import math
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

import numpy as np

from netdefs import imagenet
from netdefs.common import (
    activation,
    add,
    add_attention_argument,
    count_indices,
    elementwise,
    flatten,
    gather,
    global_avg_pool,
    layer_norm,
    merge_heads,
    mlp,
    permute,
    reshape,
    scaled_dot_product_attention,
    slice_nd,
    split_heads,
)
from trtx.net import Net, NetdefError

#: torchvision's constructors (embed_dim, depths, num_heads, window_size) and IMAGENET1K_V1 crop / resize
ARCHS = {
    "swin_t": {"v2": False, "embed": 96, "depths": (2, 2, 6, 2), "heads": (3, 6, 12, 24), "window": 7,
               "crop": 224, "resize": 232},
    "swin_s": {"v2": False, "embed": 96, "depths": (2, 2, 18, 2), "heads": (3, 6, 12, 24), "window": 7,
               "crop": 224, "resize": 246},
    "swin_b": {"v2": False, "embed": 128, "depths": (2, 2, 18, 2), "heads": (4, 8, 16, 32), "window": 7,
               "crop": 224, "resize": 238},
    "swin_v2_t": {"v2": True, "embed": 96, "depths": (2, 2, 6, 2), "heads": (3, 6, 12, 24), "window": 8,
                  "crop": 256, "resize": 260},
    "swin_v2_s": {"v2": True, "embed": 96, "depths": (2, 2, 18, 2), "heads": (3, 6, 12, 24), "window": 8,
                  "crop": 256, "resize": 260},
    "swin_v2_b": {"v2": True, "embed": 128, "depths": (2, 2, 18, 2), "heads": (4, 8, 16, 32), "window": 8,
                  "crop": 256, "resize": 272},
}  # fmt: skip
DEFAULT_ARCH = "swin_t"
EPS = 1e-5
#: score added where a shifted window's patches come from different regions (torchvision's value)
MASKED = -100.0


def configure(args, weights, meta=None):
    arch = ARCHS[args.arch]
    cfg = imagenet.configure(args, weights, meta, classifier_bias="head.bias")
    cfg.attention = getattr(args, "attention", None) or "matmul"
    cfg.interpolation = "bicubic"  # torchvision's; the shared preprocessing resizes bilinear (as for EfficientNet)
    if weights is None:  # an engine: imagenet.configure read the input size from its metadata
        return cfg
    found = structure(weights)
    expected = {k: arch[k] for k in found if k != "patch"}
    imagenet.check_arch(args.arch, _describe(found), _describe(expected))
    vars(cfg).update(found)
    cfg.input_size = getattr(args, "input_size", None) or arch["crop"]
    cfg.resize = round(arch["resize"] * cfg.input_size / arch["crop"])
    return cfg


def structure(weights) -> dict:
    """What a torchvision SwinTransformer state_dict says about itself."""
    if "features.0.0.weight" not in weights or "head.bias" not in weights:
        raise NetdefError("weights have no tensor 'features.0.0.weight': not a torchvision SwinTransformer state_dict")
    v2 = "features.1.0.attn.logit_scale" in weights
    embed = imagenet.size(weights, "features.0.2.weight")
    depths = tuple(count_indices(weights, f"features.{2 * s + 1}.{{}}.norm1.weight") for s in range(4))
    table = "cpb_mlp.2.weight" if v2 else "relative_position_bias_table"
    heads = []
    for s in range(4):
        per_head = 512 if v2 else 1
        heads.append(imagenet.size(weights, f"features.{2 * s + 1}.0.attn.{table}") // per_head)
    window = math.isqrt(math.isqrt(imagenet.size(weights, "features.1.0.attn.relative_position_index")))
    if not v2:  # the table has (2·window - 1)² rows
        heads = [h // (2 * window - 1) ** 2 for h in heads]
    patch = math.isqrt(imagenet.size(weights, "features.0.0.weight") // (3 * embed))
    return {"v2": v2, "embed": embed, "depths": depths, "heads": tuple(heads), "window": window, "patch": patch}


def _describe(s: dict) -> str:
    return (f"Swin {'V2' if s['v2'] else 'V1'} width {s['embed']}, depths {s['depths']}, heads {s['heads']}, "
            f"window {s['window']}")  # fmt: skip


# ---- windows -------------------------------------------------------------------------------------------
def roll(net: Net, x, shift: int, axis: int, name: str):
    """``torch.roll(x, shift, axis)`` on a static axis: a gather of the rolled indices."""
    n = int(x.shape[axis])
    return gather(net, x, (np.arange(n) - shift) % n, name, axis=axis)


def roll_hw(net: Net, x, shift: tuple[int, int], name: str):
    """``torch.roll(x, shifts=shift, dims=(1, 2))``."""
    if shift[0]:
        x = roll(net, x, shift[0], 1, f"{name}.h")
    if shift[1]:
        x = roll(net, x, shift[1], 2, f"{name}.w")
    return x


def window_partition(net: Net, x, window: int, name: str):
    """[B, H, W, C] -> [B·nW, window², C]: ``x.view(B, H/w, w, W/w, w, C).permute(0, 1, 3, 2, 4, 5)`` and a reshape."""
    h, w, c = (int(d) for d in x.shape[1:])
    x = reshape(net, x, (0, h // window, window, w // window, window, c), f"{name}.view", transpose=(0, 1, 3, 2, 4, 5))
    return reshape(net, x, (-1, window * window, c), name)


def window_reverse(net: Net, x, window: int, size: tuple[int, int], name: str):
    """[B·nW, window², C] -> [B, H, W, C], the inverse of :func:`window_partition`."""
    h, w = size
    c = int(x.shape[2])
    x = reshape(net, x, (-1, h // window, w // window, window, window, c), f"{name}.view", transpose=(0, 1, 3, 2, 4, 5))
    return reshape(net, x, (0, h, w, c), name)


def shift_mask(size: tuple[int, int], window: int, shift: tuple[int, int]) -> np.ndarray:
    """The attention mask of shifted windows, [nW, window², window²]: 0 between patches of the same region of the
    rolled map, -100 across regions (torchvision's ``attn_mask``, computed the same way)."""
    h, w = size
    regions = np.zeros((h, w), np.float32)
    h_slices = ((0, -window), (-window, -shift[0]), (-shift[0], None))
    w_slices = ((0, -window), (-window, -shift[1]), (-shift[1], None))
    for count, (hs, ws) in enumerate((hs, ws) for hs in h_slices for ws in w_slices):
        regions[hs[0] : hs[1], ws[0] : ws[1]] = count
    regions = regions.reshape(h // window, window, w // window, window).transpose(0, 2, 1, 3).reshape(-1, window**2)
    diff = regions[:, None, :] - regions[:, :, None]
    return np.where(diff != 0, MASKED, 0.0).astype(np.float32)


def relative_position_bias(net: Net, table, path: str, window: int):
    """``_get_relative_position_bias``: ``table[relative_position_index]`` as [1, heads, N, N] (N = window²)."""
    n = window * window
    index = net.array(f"{path}.relative_position_index", (n * n,)).astype(np.int64)
    bias = net.network.add_gather(table, net.constant(index, f"{path}.relative_position_index", np.int64), 0)
    bias = net.name(bias, f"{path}.relative_position_bias.gather").get_output(0)  # [N·N, heads]
    heads = int(table.shape[-1])
    return reshape(net, permute(net, bias, (1, 0), f"{path}.relative_position_bias.permute"), (1, heads, n, n),
                   f"{path}.relative_position_bias")  # fmt: skip


def position_bias_v1(net: Net, path: str, window: int):
    table = net.constant(net.array(f"{path}.relative_position_bias_table", ((2 * window - 1) ** 2, -1)),
                         f"{path}.relative_position_bias_table")  # fmt: skip
    return relative_position_bias(net, table, path, window)


def position_bias_v2(net: Net, path: str, window: int):
    """ShiftedWindowAttentionV2.get_relative_position_bias: 16 · sigmoid(gather(cpb_mlp(relative_coords_table)))."""
    coords = net.constant(net.array(f"{path}.relative_coords_table", (1, 2 * window - 1, 2 * window - 1, 2)),
                          f"{path}.relative_coords_table")  # fmt: skip
    y = net.linear(coords, f"{path}.cpb_mlp.0").get_output(0)
    y = activation(net, y, "relu", f"{path}.cpb_mlp.1")
    y = net.alias(net.linear(y, f"{path}.cpb_mlp.2").get_output(0), f"{path}.cpb_mlp")
    table = reshape(net, y, (-1, int(y.shape[-1])), f"{path}.cpb_mlp.view")
    bias = relative_position_bias(net, table, path, window)
    bias = activation(net, bias, "sigmoid", f"{path}.relative_position_bias.sigmoid")
    sixteen = net.constant(np.full((1, 1, 1, 1), 16.0, np.float32), f"{path}.relative_position_bias.16")
    return elementwise(net, bias, sixteen, "PROD", f"{path}.relative_position_bias.scaled")


def normalize(net: Net, x, name: str, eps: float = 1e-12):
    """``F.normalize(x, dim=-1)``: x / max(‖x‖₂, eps), in fp32 whatever the precision: V2 zeroes the key bias, so
    the keys of zero-padded patches are exactly 0, and fp16 would turn eps into 0 and 0 / 0 into NaN."""
    trt, nw = net.trt, net.network
    x32 = net.to_fp32(x, f"{name}.to_fp32")
    squares = elementwise(net, x32, x32, "PROD", f"{name}.square")
    total = nw.add_reduce(squares, trt.ReduceOperation.SUM, 1 << (len(x.shape) - 1), True)
    norm = nw.add_unary(net.name(total, f"{name}.sum").get_output(0), trt.UnaryOperation.SQRT)
    norm = net.name(norm, f"{name}.norm").get_output(0)
    floor = net.constant(np.full((1,) * len(x.shape), eps, np.float32), f"{name}.eps", np.float32)
    norm = elementwise(net, norm, floor, "MAX", f"{name}.clamp")
    if x32.dtype == x.dtype:  # fp32 network: no cast back
        return elementwise(net, x32, norm, "DIV", name)
    return net.cast(elementwise(net, x32, norm, "DIV", f"{name}.fp32"), x.dtype, name)


def logit_scale(net: Net, path: str, heads: int):
    """``torch.clamp(logit_scale, max=log(100)).exp()`` as [1, heads, 1, 1]."""
    scale = net.constant(net.array(f"{path}.logit_scale", (1, heads, 1, 1)), f"{path}.logit_scale")
    cap = net.constant(np.full((1, 1, 1, 1), math.log(100.0), np.float32), f"{path}.logit_scale.max")
    scale = elementwise(net, scale, cap, "MIN", f"{path}.logit_scale.clamp")
    exp = net.network.add_unary(scale, net.trt.UnaryOperation.EXP)
    return net.name(exp, f"{path}.logit_scale.exp").get_output(0)


def window_attention(net: Net, q, k, v, scale, position_bias, mask, path: str, form: str):
    """softmax(q·kᵀ·scale + position bias [+ shift mask]) v on [B·nW, heads, N, head_dim]. The shift mask differs
    per window while the batch is B·nW: shifted blocks attend as [B, nW·heads, N, N] (a reshape) with one mask
    [1, nW·heads, N, N] = position bias + shift mask, which broadcasts over B (TensorRT's attention layer takes it
    as its add mask too)."""
    if mask is None:
        return scaled_dot_product_attention(net, q, k, v, f"{path}.attention", scale=scale, mask=position_bias,
                                            form=form)  # fmt: skip
    windows, heads, n = mask.shape[0], int(q.shape[1]), int(q.shape[2])
    bias = reshape(net, position_bias, (1, 1, heads, n, n), f"{path}.relative_position_bias.view")
    bias = add(net, bias, net.constant(mask[None, :, None], f"{path}.attn_mask"), f"{path}.attn_mask.add")
    bias = reshape(net, bias, (1, windows * heads, n, n), f"{path}.attn_mask.view")
    if not isinstance(scale, float):  # the per-head scale goes on q while heads are still an axis of their own
        q, scale = elementwise(net, q, scale, "PROD", f"{path}.q_scaled"), None
    q, k, v = (reshape(net, t, (-1, windows * heads, n, int(t.shape[3])), f"{path}.{label}.windows")
               for label, t in zip("qkv", (q, k, v)))  # fmt: skip
    y = scaled_dot_product_attention(net, q, k, v, f"{path}.attention", scale=scale, mask=bias, form=form)
    return reshape(net, y, (-1, heads, n, int(y.shape[3])), f"{path}.attention.view")


# ---- blocks --------------------------------------------------------------------------------------------
def shifted_window_attention(net: Net, x, path: str, cfg, heads: int, shift: int):
    """ShiftedWindowAttention(V2) at ``path`` on [B, H, W, C]: pad to whole windows, roll, partition, attention
    with position bias (and the shift mask), reverse, roll back, crop."""
    h, w, c = (int(d) for d in x.shape[1:])
    win = cfg.window
    pad_h, pad_w = h + (win - h % win) % win, w + (win - w % win) % win
    if (pad_h, pad_w) != (h, w):
        x = slice_nd(net, x, f"{path}.pad", (0, 0, 0, 0), (None, pad_h, pad_w, c), mode=net.trt.SampleMode.FILL)
    # no shift along a side that one window covers
    shifts = (0 if win >= pad_h else shift, 0 if win >= pad_w else shift)
    x = roll_hw(net, x, (-shifts[0], -shifts[1]), f"{path}.roll")
    x = window_partition(net, x, win, f"{path}.partition")  # [B·nW, N, C]

    if cfg.v2:  # the key bias is not used: zeroed on every forward (its weights may hold anything)
        bias = net.array(f"{path}.qkv.bias", (3 * c,)).copy()
        bias[c : 2 * c] = 0
        qkv = net.linear(x, f"{path}.qkv.matmul", weight_key=f"{path}.qkv.weight", bias=False).get_output(0)
        bias = net.constant(bias.reshape(1, 1, 3 * c), f"{path}.qkv.bias")
        qkv = add(net, qkv, bias, f"{path}.qkv")
    else:
        qkv = net.linear(x, f"{path}.qkv").get_output(0)
    q, k, v = split_heads(net, qkv, heads, path)  # [B·nW, heads, N, C / heads]
    if cfg.v2:  # cosine attention
        q, k = normalize(net, q, f"{path}.q_normalized"), normalize(net, k, f"{path}.k_normalized")
        scale = logit_scale(net, path, heads)
        position_bias = position_bias_v2(net, path, win)
    else:
        scale = (c // heads) ** -0.5
        position_bias = position_bias_v1(net, path, win)

    mask = shift_mask((pad_h, pad_w), win, shifts) if any(shifts) else None
    y = window_attention(net, q, k, v, scale, position_bias, mask, path, cfg.attention)
    y = merge_heads(net, y, f"{path}.merge_heads")  # [B·nW, N, C]
    y = net.linear(y, f"{path}.proj").get_output(0)
    y = window_reverse(net, y, win, (pad_h, pad_w), f"{path}.reverse")
    y = roll_hw(net, y, shifts, f"{path}.roll_back")
    if (pad_h, pad_w) != (h, w):
        y = slice_nd(net, y, f"{path}.crop", (0, 0, 0, 0), (None, h, w, c))
    return net.alias(y, path)


def swin_block(net: Net, x, path: str, cfg, heads: int, shift: int):
    """SwinTransformerBlock: x + attn(norm1(x)), then x + mlp(norm2(x)); V2: x + norm1(attn(x)), x + norm2(mlp(x))
    (stochastic depth is the identity at inference)."""
    if cfg.v2:
        y = shifted_window_attention(net, x, f"{path}.attn", cfg, heads, shift)
        x = add(net, x, layer_norm(net, y, f"{path}.norm1", eps=EPS), f"{path}.add")
        y = mlp(net, x, f"{path}.mlp")
        return add(net, x, layer_norm(net, y, f"{path}.norm2", eps=EPS), path)
    y = layer_norm(net, x, f"{path}.norm1", eps=EPS)
    x = add(net, x, shifted_window_attention(net, y, f"{path}.attn", cfg, heads, shift), f"{path}.add")
    y = mlp(net, layer_norm(net, x, f"{path}.norm2", eps=EPS), f"{path}.mlp")
    return add(net, x, y, path)


def patch_merging(net: Net, x, path: str, cfg):
    """PatchMerging(V2): 2x2 neighbours side by side (``_patch_merging_pad``: [B, H/2, W/2, 4C] in the order
    x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]), then LayerNorm → Linear (V2: Linear → LayerNorm)."""
    h, w, c = (int(d) for d in x.shape[1:])
    if h % 2 or w % 2:
        x = slice_nd(net, x, f"{path}.pad", (0, 0, 0, 0), (None, h + h % 2, w + w % 2, c), mode=net.trt.SampleMode.FILL)
        h, w = h + h % 2, w + w % 2
    # [B, H/2, 2 (row), W/2, 2 (column), C] -> [B, H/2, W/2, column, row, C]: the row index varies fastest
    x = reshape(net, x, (0, h // 2, 2, w // 2, 2, c), f"{path}.neighbours", transpose=(0, 1, 3, 4, 2, 5))
    x = reshape(net, x, (0, h // 2, w // 2, 4 * c), f"{path}.merge")
    if cfg.v2:
        x = net.linear(x, f"{path}.reduction").get_output(0)
        return net.alias(layer_norm(net, x, f"{path}.norm", eps=EPS), path)
    x = layer_norm(net, x, f"{path}.norm", eps=EPS)
    return net.alias(net.linear(x, f"{path}.reduction").get_output(0), path)


def define(net: Net, cfg) -> None:
    """Mirrors SwinTransformer.forward: patch embedding ``features.0``, stages ``features.1/3/5/7`` with patch
    merging ``features.2/4/6`` between them, LayerNorm, average pool, head."""
    x = imagenet.data_input(net, cfg)
    x = net.conv(x, "features.0.0", cfg.patch, stride=cfg.patch).get_output(0)
    x = permute(net, x, (0, 2, 3, 1), "features.0.1")
    x = net.alias(layer_norm(net, x, "features.0.2", eps=EPS), "features.0")
    for s, depth in enumerate(cfg.depths):
        stage = 2 * s + 1
        for j in range(depth):
            shift = 0 if j % 2 == 0 else cfg.window // 2
            x = swin_block(net, x, f"features.{stage}.{j}", cfg, cfg.heads[s], shift)
        x = net.alias(x, f"features.{stage}")
        if s < len(cfg.depths) - 1:
            x = patch_merging(net, x, f"features.{stage + 1}", cfg)
    x = net.alias(x, "features")
    x = layer_norm(net, x, "norm", eps=EPS)
    x = permute(net, x, (0, 3, 1, 2), "permute")
    x = global_avg_pool(net, x, "avgpool")
    x = flatten(net, x, "flatten")
    x = net.linear(x, "head").get_output(0)
    imagenet.softmax_output(net, x, cfg)
    net.meta["attention"] = cfg.attention


# ---- the PyTorch side ------------------------------------------------------------------------------------
def swin_transformer(cfg, *, init: bool = True):
    """torchvision's SwinTransformer with ``cfg``'s structure (``init=False``: parameters left uninitialized)."""
    from functools import partial

    import torch
    from torchvision.models import swin_transformer as tv

    v2 = dict(block=tv.SwinTransformerBlockV2, downsample_layer=tv.PatchMergingV2) if cfg.v2 else {}
    return imagenet.instantiate(
        tv.SwinTransformer,
        init=init,
        patch_size=[cfg.patch] * 2,
        embed_dim=cfg.embed,
        depths=list(cfg.depths),
        num_heads=list(cfg.heads),
        window_size=[cfg.window] * 2,
        num_classes=cfg.num_classes,
        norm_layer=partial(torch.nn.LayerNorm, eps=EPS),
        **v2,
    )


def torch_model(cfg, weights):
    from trtx.sources import load_state

    model = swin_transformer(cfg, init=False)
    load_state(model, weights)
    return model


def source_model(arch: str | None = None, **overrides):
    """A random-init ``arch`` (``gen_wts.py --model netdef:swin[:arch]``); ``overrides`` (embed, depths, heads,
    window, patch, num_classes) make smaller test models. Parameters torchvision sets to one value (biases,
    V2's logit scale) are drawn at random (trtx.sources.randomize_constant_parameters)."""
    from types import SimpleNamespace

    from trtx.sources import randomize_constant_parameters

    cfg = SimpleNamespace(**ARCHS[arch or DEFAULT_ARCH], patch=4, num_classes=1000)
    vars(cfg).update(overrides)
    model = swin_transformer(cfg)
    randomize_constant_parameters(model)
    return model


def add_arguments(parser, command: str) -> None:
    if command in ("build", "check", "inspect", "infer", "bench"):
        add_attention_argument(parser)
        parser.add_argument(
            "--input-size",
            type=int,
            default=None,
            help="input height = width in pixels (default: the arch's IMAGENET1K_V1 crop, 224 for V1, 256 for V2)",
        )


NETDEF = imagenet.classifier(
    "swin",
    __doc__,
    archs=tuple(ARCHS),
    default_arch=DEFAULT_ARCH,
    configure=configure,
    define=define,
    torch_model=torch_model,
    source_model=source_model,
    add_arguments=add_arguments,
)

if __name__ == "__main__":
    from trtx.cli import main

    sys.exit(main(NETDEF))
