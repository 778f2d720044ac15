"""AlexNet (torchvision ``alexnet.py``).

python gen_wts.py --model torchvision:alexnet --random-init -o alexnet.wts
python netdefs/alexnet.py build -w alexnet.wts
python netdefs/alexnet.py check -w alexnet.wts

Layer names are torchvision module paths: ``features.0`` .. ``features.12`` (conv, ReLU, max-pool),
``avgpool``, ``classifier.1/4/6`` (Linear; ``classifier.0/3`` are Dropout).
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import activation, adaptive_avg_pool, conv_bn_act, flatten, max_pool
from trtx.net import Net

ARCHS = {"alexnet": {}}
DEFAULT_ARCH = "alexnet"


def configure(args, weights, meta=None):
    return imagenet.configure(args, weights, meta, classifier_bias="classifier.6.bias")


def source_model(arch: str | None = None):
    """Random-init torchvision AlexNet for ``gen_wts.py --model netdef:alexnet``."""
    return imagenet.torchvision_model(arch or DEFAULT_ARCH)


def define(net: Net, cfg) -> None:
    """Mirrors torchvision ``AlexNet.forward``."""
    x = imagenet.data_input(net, cfg)
    x = conv_bn_act(net, x, conv="features.0", bn=None, act="features.1", kernel=11, stride=4, padding=2)
    x = max_pool(net, x, "features.2", 3, stride=2)
    x = conv_bn_act(net, x, conv="features.3", bn=None, act="features.4", kernel=5, padding=2)
    x = max_pool(net, x, "features.5", 3, stride=2)
    x = conv_bn_act(net, x, conv="features.6", bn=None, act="features.7", kernel=3, padding=1)
    x = conv_bn_act(net, x, conv="features.8", bn=None, act="features.9", kernel=3, padding=1)
    x = conv_bn_act(net, x, conv="features.10", bn=None, act="features.11", kernel=3, padding=1)
    x = net.alias(max_pool(net, x, "features.12", 3, stride=2), "features")
    x = adaptive_avg_pool(net, x, "avgpool", 6)
    x = flatten(net, x, "flatten")
    x = activation(net, net.linear(x, "classifier.1").get_output(0), "relu", "classifier.2")
    x = activation(net, net.linear(x, "classifier.4").get_output(0), "relu", "classifier.5")
    imagenet.softmax_output(net, net.linear(x, "classifier.6").get_output(0), cfg)


NETDEF = imagenet.classifier(
    "alexnet",
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
