"""ConvNeXt, torchvision's ``convnext_tiny/small/base/large``: layer names and weight keys are torchvision's.

python gen_wts.py --model torchvision:convnext_tiny --random-init -o convnext_tiny.wts
python netdefs/convnext.py build -w convnext_tiny.wts --arch convnext_tiny -o convnext_tiny.engine
python netdefs/convnext.py check -w convnext_tiny.wts --arch convnext_tiny
python netdefs/convnext.py infer -w convnext_tiny.wts --arch convnext_tiny images/

Stage depths and widths are read from the weights. A CNBlock runs channels-last, as torchvision's does: its
Permute, LayerNorm and Linear layers are mirrored one by one (INormalizationLayer, fp32 statistics; matrix
multiplies). Layer scale is a per-channel multiply; stochastic depth is the identity at inference.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

import numpy as np

from netdefs import imagenet
from netdefs.common import activation, add, flatten, global_avg_pool, layer_norm, permute, stochastic_depth
from trtx.net import Net, NetdefError

#: torchvision's (depths, widths) per arch
ARCHS = {
    "convnext_tiny": {"depths": (3, 3, 9, 3), "widths": (96, 192, 384, 768), "resize": 236},
    "convnext_small": {"depths": (3, 3, 27, 3), "widths": (96, 192, 384, 768), "resize": 230},
    "convnext_base": {"depths": (3, 3, 27, 3), "widths": (128, 256, 512, 1024), "resize": 232},
    "convnext_large": {"depths": (3, 3, 27, 3), "widths": (192, 384, 768, 1536), "resize": 232},
}
DEFAULT_ARCH = "convnext_tiny"
EPS = 1e-6


def configure(args, weights, meta=None):
    arch = ARCHS[args.arch]
    cfg = imagenet.configure(args, weights, meta, classifier_bias="classifier.2.bias", depths=arch["depths"])
    cfg.resize = arch["resize"]
    if weights is not None:
        depths = tuple(_count_blocks(weights, 2 * s + 1) for s in range(len(arch["depths"])))
        width = np.asarray(weights["classifier.2.weight"]).size // cfg.num_classes
        if (depths, width) != (arch["depths"], arch["widths"][-1]):
            raise NetdefError(
                f"weights have stages of {depths} blocks and {width} channels at the head; {args.arch} has "
                f"{arch['depths']} and {arch['widths'][-1]} (check --arch)"
            )
    return cfg


def _count_blocks(weights, index: int) -> int:
    n = 0
    while f"features.{index}.{n}.layer_scale" in weights:
        n += 1
    return n


# ---- the network ---------------------------------------------------------------------------------------
def cn_block(net: Net, x, path: str):
    """CNBlock: x + stochastic_depth(layer_scale · block(x)); block = depthwise 7x7 conv, then channels-last
    LayerNorm → Linear (4x) → GELU → Linear, then back to channels-first."""
    c = int(x.shape[1])
    y = net.conv(x, f"{path}.block.0", 7, padding=3, groups=c).get_output(0)
    y = permute(net, y, (0, 2, 3, 1), f"{path}.block.1")
    y = layer_norm(net, y, f"{path}.block.2", axis=-1, eps=EPS)
    y = net.linear(y, f"{path}.block.3").get_output(0)
    y = activation(net, y, "gelu", f"{path}.block.4")
    y = net.linear(y, f"{path}.block.5").get_output(0)
    y = net.alias(permute(net, y, (0, 3, 1, 2), f"{path}.block.6"), f"{path}.block")
    gamma = net.constant(net.array(f"{path}.layer_scale", (1, c, 1, 1), layer=path), f"{path}.layer_scale")
    y = net.name(net.network.add_elementwise(gamma, y, net.trt.ElementWiseOperation.PROD), f"{path}.layer_scale.mul")
    y = stochastic_depth(net, y.get_output(0), f"{path}.stochastic_depth")
    return add(net, y, x, path)


def define(net: Net, cfg) -> None:
    """Mirrors ConvNeXt.forward: stem, then (stage, downsample) pairs, pooled LayerNorm2d + Linear head."""
    x = imagenet.data_input(net, cfg)
    x = net.conv(x, "features.0.0", 4, stride=4).get_output(0)
    x = net.alias(layer_norm(net, x, "features.0.1", axis=1, eps=EPS), "features.0")
    last = 2 * len(cfg.depths) - 1
    for s, depth in enumerate(cfg.depths):
        stage = 2 * s + 1
        for j in range(depth):
            x = cn_block(net, x, f"features.{stage}.{j}")
        x = net.alias(x, f"features.{stage}")
        if stage != last:  # downsample: LayerNorm2d → 2x2 stride-2 conv
            x = layer_norm(net, x, f"features.{stage + 1}.0", axis=1, eps=EPS)
            x = net.alias(net.conv(x, f"features.{stage + 1}.1", 2, stride=2).get_output(0), f"features.{stage + 1}")
    x = net.alias(x, "features")
    x = global_avg_pool(net, x, "avgpool")
    x = layer_norm(net, x, "classifier.0", axis=1, eps=EPS)
    x = flatten(net, x, "classifier.1")
    x = net.linear(x, "classifier.2").get_output(0)
    imagenet.softmax_output(net, x, cfg)


def source_model(arch: str | None = None):
    return imagenet.source_model(arch or DEFAULT_ARCH)


NETDEF = imagenet.classifier(
    "convnext",
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
