"""SqueezeNet 1.0 and 1.1 (torchvision ``squeezenet.py``).

python gen_wts.py --model torchvision:squeezenet1_1 --random-init -o squeezenet1_1.wts
python netdefs/squeezenet.py build --arch squeezenet1_1 -w squeezenet1_1.wts
python netdefs/squeezenet.py check --arch squeezenet1_1 -w squeezenet1_1.wts

Layer names are torchvision module paths (``features.3.expand3x3_activation``); a Fire module's output (the
concatenation of its two expand branches) is named after the module (``features.3``).
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import concat, conv_bn_act, flatten, global_avg_pool, max_pool
from trtx.net import Net

#: ``features`` in order: the stem conv (kernel, stride) is followed by its ReLU; "pool" = MaxPool2d(3, 2, ceil)
ARCHS = {
    "squeezenet1_0": {"stem": (7, 2), "features": ("pool", "fire", "fire", "fire", "pool", "fire", "fire", "fire",
                                                   "fire", "pool", "fire")},
    "squeezenet1_1": {"stem": (3, 2), "features": ("pool", "fire", "fire", "pool", "fire", "fire", "pool", "fire",
                                                   "fire", "fire", "fire")},
}  # fmt: skip
DEFAULT_ARCH = "squeezenet1_1"


def configure(args, weights, meta=None):
    arch = ARCHS[args.arch]
    if weights is not None:  # 1.0 starts with 96 7x7 filters, 1.1 with 64 3x3 ones
        out = imagenet.size(weights, "features.0.bias")
        kernel = round((imagenet.size(weights, "features.0.weight") / max(out, 1) / 3) ** 0.5)
        imagenet.check_arch(
            args.arch, f"a {kernel}x{kernel} stem conv", f"a {arch['stem'][0]}x{arch['stem'][0]} stem conv"
        )
    return imagenet.configure(args, weights, meta, classifier_bias="classifier.1.bias", **arch)


def source_model(arch: str | None = None):
    """Random-init torchvision model for ``gen_wts.py --model netdef:squeezenet:<arch>``."""
    return imagenet.torchvision_model(arch or DEFAULT_ARCH)


def fire(net: Net, x, path: str):
    """squeezenet.Fire: 1x1 squeeze + ReLU, then cat(1x1 expand + ReLU, 3x3 expand + ReLU)."""
    x = conv_bn_act(net, x, conv=f"{path}.squeeze", bn=None, act=f"{path}.squeeze_activation", kernel=1)
    e1 = conv_bn_act(net, x, conv=f"{path}.expand1x1", bn=None, act=f"{path}.expand1x1_activation", kernel=1)
    e3 = conv_bn_act(net, x, conv=f"{path}.expand3x3", bn=None, act=f"{path}.expand3x3_activation", kernel=3)
    return concat(net, [e1, e3], path)


def define(net: Net, cfg) -> None:
    """Mirrors torchvision ``SqueezeNet.forward``."""
    x = imagenet.data_input(net, cfg)
    kernel, stride = cfg.stem
    x = conv_bn_act(net, x, conv="features.0", bn=None, act="features.1", kernel=kernel, stride=stride, padding=0)
    for index, kind in enumerate(cfg.features, start=2):
        if kind == "pool":
            x = max_pool(net, x, f"features.{index}", 3, stride=2, ceil_mode=True)
        else:
            x = fire(net, x, f"features.{index}")
    net.alias(x, "features")
    # classifier: Dropout (identity), final 1x1 conv, ReLU, AdaptiveAvgPool2d(1)
    x = conv_bn_act(net, x, conv="classifier.1", bn=None, act="classifier.2", kernel=1)
    x = net.alias(global_avg_pool(net, x, "classifier.3"), "classifier")
    imagenet.softmax_output(net, flatten(net, x, "flatten"), cfg)


NETDEF = imagenet.classifier(
    "squeezenet",
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
