"""MNASNet 1.0 (torchvision ``mnasnet.py``, the B1 variant).

python gen_wts.py --model torchvision:mnasnet1_0 --random-init -o mnasnet1_0.wts
python netdefs/mnasnet.py build -w mnasnet1_0.wts
python netdefs/mnasnet.py check -w mnasnet1_0.wts

Layer names are torchvision module paths: the stem is ``layers.0`` .. ``layers.7``, the stacks of inverted
residuals ``layers.8`` .. ``layers.13`` (``layers.9.1.layers.3`` = the depthwise conv of the second block of
the second stack), the head ``layers.14`` .. ``layers.16`` and ``classifier.1``.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import add, conv_bn_act
from trtx.net import Net

#: the inverted residual stacks (layers.8 .. layers.13): kernel, first stride, expansion, repeats
STACKS = ((3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2), (5, 2, 6, 4), (3, 1, 6, 1))
ARCHS = {"mnasnet1_0": {"stacks": STACKS}}
DEFAULT_ARCH = "mnasnet1_0"


def configure(args, weights, meta=None):
    return imagenet.configure(args, weights, meta, classifier_bias="classifier.1.bias", **ARCHS[args.arch])


def source_model(arch: str | None = None):
    """Random-init torchvision model for ``gen_wts.py --model netdef:mnasnet``."""
    return imagenet.torchvision_model(arch or DEFAULT_ARCH)


torch_model = imagenet.torch_model


def inverted_residual(net: Net, x, path: str, kernel: int, stride: int, expansion: int):
    """mnasnet._InvertedResidual: 1x1 expand -> kxk depthwise (stride) -> 1x1 project, + x when shapes allow.
    The expanded width comes from the weights; ``expansion`` documents it."""
    p = f"{path}.layers"
    y = conv_bn_act(net, x, conv=f"{p}.0", bn=f"{p}.1", act=f"{p}.2", kernel=1)
    y = conv_bn_act(net, y, conv=f"{p}.3", bn=f"{p}.4", act=f"{p}.5", kernel=kernel, stride=stride,
                    groups=int(y.shape[1]))  # fmt: skip
    y = conv_bn_act(net, y, conv=f"{p}.6", bn=f"{p}.7", act=None, kernel=1)
    if stride == 1 and int(x.shape[1]) == int(y.shape[1]):
        return add(net, net.alias(y, p), x, path)
    return net.alias(y, path)


def define(net: Net, cfg) -> None:
    """Mirrors torchvision ``MNASNet.forward``."""
    x = imagenet.data_input(net, cfg)
    x = conv_bn_act(net, x, conv="layers.0", bn="layers.1", act="layers.2", stride=2)
    x = conv_bn_act(net, x, conv="layers.3", bn="layers.4", act="layers.5", groups=int(x.shape[1]))
    x = conv_bn_act(net, x, conv="layers.6", bn="layers.7", act=None, kernel=1)
    for index, (kernel, stride, expansion, repeats) in enumerate(cfg.stacks, start=8):
        for i in range(repeats):
            x = inverted_residual(net, x, f"layers.{index}.{i}", kernel, stride if i == 0 else 1, expansion)
        net.alias(x, f"layers.{index}")
    x = conv_bn_act(net, x, conv="layers.14", bn="layers.15", act="layers.16", kernel=1)
    net.alias(x, "layers")
    mean = net.network.add_reduce(x, net.trt.ReduceOperation.AVG, (1 << 2) | (1 << 3), False)  # x.mean([2, 3])
    x = net.name(mean, "mean").get_output(0)
    imagenet.softmax_output(net, net.linear(x, "classifier.1").get_output(0), cfg)  # classifier.0: Dropout


NETDEF = imagenet.classifier(
    "mnasnet",
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
