"""EfficientNet B0-B7 and V2-S/M, torchvision's ``efficientnet_*``: layer names and weight keys are torchvision's.

python gen_wts.py --model torchvision:efficientnet_b0 --random-init -o efficientnet_b0.wts
python netdefs/efficientnet.py build -w efficientnet_b0.wts --arch efficientnet_b0 -o efficientnet_b0.engine
python netdefs/efficientnet.py check -w efficientnet_b0.wts --arch efficientnet_b0
python netdefs/efficientnet.py infer -w efficientnet_b0.wts --arch efficientnet_b0 images/

Channels and expansions come from the weights; ``ARCHS`` holds what they cannot tell: each stage's block
type, kernel and stride (torchvision's ``_efficientnet_conf``), the BatchNorm eps and the input size, and the
blocks per stage and head width that tell the archs' weights apart. Stochastic depth and dropout are the
identity at inference.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

import numpy as np

from netdefs import imagenet
from netdefs.common import add, conv_norm_activation, flatten, global_avg_pool, squeeze_excitation, stochastic_depth
from trtx.net import Net, NetdefError

#: per stage (block, kernel, stride); "mb" = MBConv, "fused" = FusedMBConv
_V1 = [("mb", 3, 1), ("mb", 3, 2), ("mb", 5, 2), ("mb", 3, 2), ("mb", 5, 1), ("mb", 5, 2), ("mb", 3, 1)]
_V2_S = [("fused", 3, 1), ("fused", 3, 2), ("fused", 3, 2), ("mb", 3, 2), ("mb", 3, 1), ("mb", 3, 2)]
_V2_M = _V2_S + [("mb", 3, 1)]


def _arch(stages, depths, head: int, crop: int, resize: int, eps=1e-5, interpolation="bicubic") -> dict:
    return dict(stages=stages, depths=depths, head=head, crop=crop, resize=resize, eps=eps, interpolation=interpolation)


#: per arch: stage layout, blocks per stage and width of the last conv (to tell the archs apart by their
#: weights), input crop/resize of torchvision's weights, BatchNorm eps
ARCHS = {
    "efficientnet_b0": _arch(_V1, (1, 2, 2, 3, 3, 4, 1), 1280, 224, 256),
    "efficientnet_b1": _arch(_V1, (2, 3, 3, 4, 4, 5, 2), 1280, 240, 256),
    "efficientnet_b2": _arch(_V1, (2, 3, 3, 4, 4, 5, 2), 1408, 288, 288),
    "efficientnet_b3": _arch(_V1, (2, 3, 3, 5, 5, 6, 2), 1536, 300, 320),
    "efficientnet_b4": _arch(_V1, (2, 4, 4, 6, 6, 8, 2), 1792, 380, 384),
    "efficientnet_b5": _arch(_V1, (3, 5, 5, 7, 7, 9, 3), 2048, 456, 456, eps=1e-3),
    "efficientnet_b6": _arch(_V1, (3, 6, 6, 8, 8, 11, 3), 2304, 528, 528, eps=1e-3),
    "efficientnet_b7": _arch(_V1, (4, 7, 7, 10, 10, 13, 4), 2560, 600, 600, eps=1e-3),
    "efficientnet_v2_s": _arch(_V2_S, (2, 4, 4, 6, 9, 15), 1280, 384, 384, eps=1e-3, interpolation="bilinear"),
    "efficientnet_v2_m": _arch(_V2_M, (3, 5, 5, 7, 14, 18, 5), 1280, 480, 480, eps=1e-3, interpolation="bilinear"),
}
DEFAULT_ARCH = "efficientnet_b0"


def configure(args, weights, meta=None):
    arch = ARCHS[args.arch]
    cfg = imagenet.configure(
        args,
        weights,
        meta,
        classifier_bias="classifier.1.bias",
        depths=arch["depths"],
        stages=arch["stages"],
        eps=arch["eps"],
    )
    cfg.input_size, cfg.resize, cfg.interpolation = arch["crop"], arch["resize"], arch["interpolation"]
    if weights is not None:
        depths = tuple(_count_blocks(weights, s) for s in range(1, len(arch["stages"]) + 1))
        head = np.asarray(weights["classifier.1.weight"]).size // cfg.num_classes
        if (depths, head) != (arch["depths"], arch["head"]) or f"features.{len(depths) + 2}.0.weight" in weights:
            raise NetdefError(
                f"weights have blocks per stage {depths} and a {head}-channel head; {args.arch} has "
                f"{arch['depths']} and {arch['head']} (check --arch)"
            )
    return cfg


def _count_blocks(weights, stage: int) -> int:
    n = 0
    while f"features.{stage}.{n}.block.0.0.weight" in weights:
        n += 1
    return n


# ---- the network ---------------------------------------------------------------------------------------
def mbconv(net: Net, x, path: str, kernel: int, stride: int, eps: float):
    """MBConv: [1x1 expand] → depthwise kxk → squeeze-excitation → 1x1 project; residual when shapes allow."""
    i = 0
    y = x
    if f"{path}.block.3.0.weight" in net.weights:  # expand_ratio != 1: a 1x1 expansion comes first
        y = conv_norm_activation(net, y, f"{path}.block.0", 1, kind="silu", eps=eps)
        i = 1
    y = conv_norm_activation(
        net, y, f"{path}.block.{i}", kernel, stride=stride, groups=int(y.shape[1]), kind="silu", eps=eps
    )
    y = squeeze_excitation(net, y, f"{path}.block.{i + 1}", act="silu")
    y = conv_norm_activation(net, y, f"{path}.block.{i + 2}", 1, kind="none", eps=eps)
    return _residual(net, x, y, path, stride)


def fused_mbconv(net: Net, x, path: str, kernel: int, stride: int, eps: float):
    """FusedMBConv: kxk expand (or kxk straight to the output when expand_ratio == 1) → [1x1 project]."""
    if f"{path}.block.1.0.weight" in net.weights:
        y = conv_norm_activation(net, x, f"{path}.block.0", kernel, stride=stride, kind="silu", eps=eps)
        y = conv_norm_activation(net, y, f"{path}.block.1", 1, kind="none", eps=eps)
    else:
        y = conv_norm_activation(net, x, f"{path}.block.0", kernel, stride=stride, kind="silu", eps=eps)
    return _residual(net, x, y, path, stride)


def _residual(net: Net, x, y, path: str, stride: int):
    """``use_res_connect`` (stride 1, same channels): stochastic_depth(y) + x, else y."""
    if stride == 1 and int(x.shape[1]) == int(y.shape[1]):
        return add(net, stochastic_depth(net, y, f"{path}.stochastic_depth"), x, path)
    return net.alias(y, path)


BLOCKS = {"mb": mbconv, "fused": fused_mbconv}


def define(net: Net, cfg) -> None:
    """Mirrors EfficientNet.forward."""
    x = imagenet.data_input(net, cfg)
    x = conv_norm_activation(net, x, "features.0", 3, stride=2, kind="silu", eps=cfg.eps)
    for s, ((kind, kernel, stride), depth) in enumerate(zip(cfg.stages, cfg.depths), start=1):
        for j in range(depth):
            x = BLOCKS[kind](net, x, f"features.{s}.{j}", kernel, stride if j == 0 else 1, cfg.eps)
        x = net.alias(x, f"features.{s}")
    last = len(cfg.stages) + 1
    x = conv_norm_activation(net, x, f"features.{last}", 1, kind="silu", eps=cfg.eps)
    x = net.alias(x, "features")
    x = global_avg_pool(net, x, "avgpool")
    x = flatten(net, x, "flatten")
    x = net.linear(x, "classifier.1").get_output(0)
    imagenet.softmax_output(net, x, cfg)


def source_model(arch: str | None = None):
    return imagenet.source_model(arch or DEFAULT_ARCH)


NETDEF = imagenet.classifier(
    "efficientnet",
    __doc__,
    archs=tuple(ARCHS),
    default_arch=DEFAULT_ARCH,
    configure=configure,
    define=define,
    source_model=source_model,
)

if __name__ == "__main__":
    from trtx.cli import main

    sys.exit(main(NETDEF))
