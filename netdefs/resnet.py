"""ResNet, ResNeXt and Wide ResNet (torchvision ``resnet.py``): ImageNet classifiers.

python gen_wts.py --model torchvision:resnet50 --random-init -o resnet50.wts
python netdefs/resnet.py build --arch resnet50 -w resnet50.wts -o resnet50.engine
python netdefs/resnet.py check --arch resnet50 -w resnet50.wts
python netdefs/resnet.py infer --arch resnet50 -e resnet50.engine bus.jpg

Layer names are torchvision module paths (``layer1.0.conv1``, ``layer1.0.downsample.1``). A block calls its
``relu`` module more than once, so those activations are named by call (``layer1.0.relu.0``, ...) except the
last one, whose output is the block's: it is named after the block (``layer1.0``).
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import activation, add, conv_bn_act, count_indices, flatten, global_avg_pool, max_pool
from trtx.net import Net

#: block type and blocks per stage; groups and width per group of the 3x3 convolutions (ResNeXt, Wide ResNet)
ARCHS = {
    "resnet18": {"block": "basic", "layers": (2, 2, 2, 2), "groups": 1, "width_per_group": 64},
    "resnet34": {"block": "basic", "layers": (3, 4, 6, 3), "groups": 1, "width_per_group": 64},
    "resnet50": {"block": "bottleneck", "layers": (3, 4, 6, 3), "groups": 1, "width_per_group": 64},
    "resnet101": {"block": "bottleneck", "layers": (3, 4, 23, 3), "groups": 1, "width_per_group": 64},
    "resnext50_32x4d": {"block": "bottleneck", "layers": (3, 4, 6, 3), "groups": 32, "width_per_group": 4},
    "wide_resnet50_2": {"block": "bottleneck", "layers": (3, 4, 6, 3), "groups": 1, "width_per_group": 128},
}
DEFAULT_ARCH = "resnet18"


def configure(args, weights, meta=None):
    arch = ARCHS[args.arch]
    if weights is not None:
        imagenet.check_arch(args.arch, _structure_in(weights), _structure(**arch))
    return imagenet.configure(args, weights, meta, classifier_bias="fc.bias", **arch)


def _structure(block: str, layers: tuple, groups: int, width_per_group: int) -> str:
    width = 64 if block == "basic" else width_per_group * groups  # layer1's 3x3 convs (torchvision Bottleneck)
    return f"{block} blocks {tuple(layers)}, layer1 3x3 convs {width} wide in {groups} group(s)"


def _structure_in(weights) -> str:
    """The same facts, read from the weights: blocks per stage, block type, layer1's 3x3 conv width and groups."""
    layers = tuple(count_indices(weights, f"layer{s}.{{}}.conv1.weight") for s in (1, 2, 3, 4))
    block = "bottleneck" if "layer1.0.conv3.weight" in weights else "basic"
    width = imagenet.size(weights, "layer1.0.bn2.weight")
    groups = width * width * 9 // max(imagenet.size(weights, "layer1.0.conv2.weight"), 1)
    return f"{block} blocks {layers}, layer1 3x3 convs {width} wide in {groups} group(s)"


def downsample(net: Net, x, path: str, stride: int):
    """The shortcut: ``x`` itself, or ``downsample`` = 1x1 conv (stride) + BN where the shape changes."""
    if f"{path}.downsample.0.weight" not in net.weights:
        return x
    y = conv_bn_act(net, x, conv=f"{path}.downsample.0", bn=f"{path}.downsample.1", act=None, kernel=1, stride=stride)
    return net.alias(y, f"{path}.downsample")


def basic_block(net: Net, x, path: str, stride: int, cfg):
    """BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
    out = conv_bn_act(net, x, conv=f"{path}.conv1", bn=f"{path}.bn1", act=f"{path}.relu.0", stride=stride)
    out = conv_bn_act(net, out, conv=f"{path}.conv2", bn=f"{path}.bn2", act=None)
    out = add(net, out, downsample(net, x, path, stride), f"{path}.add")
    return activation(net, out, "relu", path)


def bottleneck(net: Net, x, path: str, stride: int, cfg):
    """Bottleneck (ResNet v1.5: the stride is on the 3x3 conv): 1x1 -> 3x3 (grouped) -> 1x1, + shortcut."""
    out = conv_bn_act(net, x, conv=f"{path}.conv1", bn=f"{path}.bn1", act=f"{path}.relu.0", kernel=1)
    out = conv_bn_act(
        net, out, conv=f"{path}.conv2", bn=f"{path}.bn2", act=f"{path}.relu.1", stride=stride, groups=cfg.groups
    )
    out = conv_bn_act(net, out, conv=f"{path}.conv3", bn=f"{path}.bn3", act=None, kernel=1)
    out = add(net, out, downsample(net, x, path, stride), f"{path}.add")
    return activation(net, out, "relu", path)


def source_model(arch: str | None = None):
    """Random-init torchvision model for ``gen_wts.py --model netdef:resnet:<arch>``."""
    return imagenet.torchvision_model(arch or DEFAULT_ARCH)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck}


def define(net: Net, cfg) -> None:
    """Mirrors torchvision ``ResNet._forward_impl``."""
    x = imagenet.data_input(net, cfg)
    x = conv_bn_act(net, x, conv="conv1", bn="bn1", act="relu", kernel=7, stride=2, padding=3)
    x = max_pool(net, x, "maxpool", 3, stride=2, padding=1)
    block = BLOCKS[cfg.block]
    for stage, blocks in enumerate(cfg.layers, start=1):
        for i in range(blocks):
            stride = 2 if stage > 1 and i == 0 else 1
            x = block(net, x, f"layer{stage}.{i}", stride, cfg)
        net.alias(x, f"layer{stage}")
    x = global_avg_pool(net, x, "avgpool")
    x = flatten(net, x, "flatten")
    x = net.linear(x, "fc").get_output(0)
    imagenet.softmax_output(net, x, cfg)


NETDEF = imagenet.classifier(
    "resnet",
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
