"""VGG 11, 16 and 16 with batch norm (torchvision ``vgg.py``).

python gen_wts.py --model torchvision:vgg16 --random-init -o vgg16.wts
python netdefs/vgg.py build --arch vgg16 -w vgg16.wts
python netdefs/vgg.py check --arch vgg16 -w vgg16.wts

Layer names are torchvision module paths: ``features.N`` numbers conv, [BN,] ReLU and max-pool layers in
order, as ``vgg.make_layers`` does; ``classifier.0/3/6`` are the three Linear layers.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import activation, adaptive_avg_pool, conv_bn_act, flatten, max_pool
from trtx.net import Net

#: vgg.cfgs: a number is a 3x3 conv with that many output channels, "M" a 2x2 max-pool
CFG_A = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
CFG_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
ARCHS = {
    "vgg11": {"layers": CFG_A, "batch_norm": False},
    "vgg16": {"layers": CFG_D, "batch_norm": False},
    "vgg16_bn": {"layers": CFG_D, "batch_norm": True},
}
DEFAULT_ARCH = "vgg16"


def configure(args, weights, meta=None):
    arch = ARCHS[args.arch]
    if weights is not None:
        convs = sum(v != "M" for v in arch["layers"])
        imagenet.check_arch(args.arch, _structure_in(weights), _describe(convs, arch["batch_norm"]))
    return imagenet.configure(args, weights, meta, classifier_bias="classifier.6.bias", **arch)


def _describe(convs: int, batch_norm: bool) -> str:
    return f"{convs} conv layers {'with' if batch_norm else 'without'} batch norm"


def _structure_in(weights) -> str:
    """Conv layers are the ``features.N.weight`` without running statistics (those are BatchNorm2d)."""
    keys = [k for k in weights if k.startswith("features.") and k.endswith(".weight")]
    convs = [k for k in keys if k.replace(".weight", ".running_mean") not in weights]
    return _describe(len(convs), len(convs) < len(keys))


def source_model(arch: str | None = None):
    """Random-init torchvision model for ``gen_wts.py --model netdef:vgg:<arch>``."""
    return imagenet.torchvision_model(arch or DEFAULT_ARCH)


def features(net: Net, x, cfg):
    """vgg.make_layers: conv 3x3 (pad 1) [-> BN] -> ReLU per number, MaxPool2d(2, 2) per "M"."""
    index = 0
    for v in cfg.layers:
        if v == "M":
            x = max_pool(net, x, f"features.{index}", 2, stride=2)
            index += 1
        elif cfg.batch_norm:
            names = {"conv": f"features.{index}", "bn": f"features.{index + 1}", "act": f"features.{index + 2}"}
            x = conv_bn_act(net, x, **names, kernel=3, padding=1)
            index += 3
        else:
            x = conv_bn_act(net, x, conv=f"features.{index}", bn=None, act=f"features.{index + 1}", padding=1)
            index += 2
    return net.alias(x, "features")


def define(net: Net, cfg) -> None:
    """Mirrors torchvision ``VGG.forward``."""
    x = features(net, imagenet.data_input(net, cfg), cfg)
    x = adaptive_avg_pool(net, x, "avgpool", 7)
    x = flatten(net, x, "flatten")
    x = activation(net, net.linear(x, "classifier.0").get_output(0), "relu", "classifier.1")
    x = activation(net, net.linear(x, "classifier.3").get_output(0), "relu", "classifier.4")  # .2, .5: Dropout
    imagenet.softmax_output(net, net.linear(x, "classifier.6").get_output(0), cfg)


NETDEF = imagenet.classifier(
    "vgg",
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
