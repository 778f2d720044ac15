"""DenseNet-BC, torchvision's ``densenet121/161/169/201``: layer names and weight keys are torchvision's.

python gen_wts.py --model torchvision:densenet121 --random-init -o densenet121.wts
python netdefs/densenet.py build -w densenet121.wts --arch densenet121 -o densenet121.engine
python netdefs/densenet.py check -w densenet121.wts --arch densenet121
python netdefs/densenet.py infer -w densenet121.wts --arch densenet121 images/

The block structure (layers per dense block, growth rate, widths) is read from the weights; ``--arch`` only
names the model. Old checkpoints with ``norm.1``-style keys need torchvision's key renaming first (gen_wts.py).
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import activation, avg_pool, concat, flatten, global_avg_pool, max_pool
from trtx.net import Net, NetdefError

#: torchvision's block_config per arch (layers in each of the 4 dense blocks)
ARCHS = {
    "densenet121": {"block_config": (6, 12, 24, 16)},
    "densenet161": {"block_config": (6, 12, 36, 24)},
    "densenet169": {"block_config": (6, 12, 32, 32)},
    "densenet201": {"block_config": (6, 12, 48, 32)},
}
DEFAULT_ARCH = "densenet121"


def configure(args, weights, meta=None):
    if weights is not None:
        found = tuple(_count_layers(weights, b) for b in range(1, 5))
    else:
        found = tuple(meta["block_config"])
    expected = ARCHS[args.arch]["block_config"]
    if found != expected:
        raise NetdefError(f"weights have dense blocks of {found} layers; {args.arch} has {expected} (check --arch)")
    return imagenet.configure(args, weights, meta, classifier_bias="classifier.bias", block_config=found)


def _count_layers(weights, block: int) -> int:
    n = 0
    while f"features.denseblock{block}.denselayer{n + 1}.conv1.weight" in weights:
        n += 1
    return n


# ---- the network ---------------------------------------------------------------------------------------
def bn_relu_conv(net: Net, x, path: str, i: str, kernel: int, padding: int = 0):
    """norm{i} → relu{i} → conv{i} of a _DenseLayer (``i`` = "1" or "2"; "" for a _Transition)."""
    x = net.batchnorm(x, f"{path}.norm{i}").get_output(0)
    x = activation(net, x, "relu", f"{path}.relu{i}")
    return net.conv(x, f"{path}.conv{i}", kernel, padding=padding).get_output(0)


def dense_layer(net: Net, features: list, path: str):
    """_DenseLayer: cat(features) → BN-ReLU-conv1x1 (bottleneck) → BN-ReLU-conv3x3 (growth_rate channels)."""
    x = features[0] if len(features) == 1 else concat(net, features, f"{path}.cat")
    x = bn_relu_conv(net, x, path, "1", 1)
    x = bn_relu_conv(net, x, path, "2", 3, padding=1)
    return net.alias(x, path)


def dense_block(net: Net, x, path: str, num_layers: int):
    """_DenseBlock: every layer sees the concatenation of the block input and all earlier layers' outputs."""
    features = [x]
    for i in range(1, num_layers + 1):
        features.append(dense_layer(net, features, f"{path}.denselayer{i}"))
    return concat(net, features, path)


def transition(net: Net, x, path: str):
    """_Transition: BN → ReLU → conv1x1 (halves the channels) → 2x2 average pool."""
    x = bn_relu_conv(net, x, path, "", 1)
    x = avg_pool(net, x, f"{path}.pool", 2, stride=2)
    return net.alias(x, path)


def define(net: Net, cfg) -> None:
    """Mirrors DenseNet.forward."""
    x = imagenet.data_input(net, cfg)
    x = net.conv(x, "features.conv0", 7, stride=2, padding=3).get_output(0)
    x = net.batchnorm(x, "features.norm0").get_output(0)
    x = activation(net, x, "relu", "features.relu0")
    x = max_pool(net, x, "features.pool0", 3, stride=2, padding=1)
    last = len(cfg.block_config)
    for b, num_layers in enumerate(cfg.block_config, start=1):
        x = dense_block(net, x, f"features.denseblock{b}", num_layers)
        if b != last:
            x = transition(net, x, f"features.transition{b}")
    x = net.alias(net.batchnorm(x, "features.norm5").get_output(0), "features")
    x = activation(net, x, "relu", "relu")
    x = global_avg_pool(net, x, "avgpool")
    x = flatten(net, x, "flatten")
    x = net.linear(x, "classifier").get_output(0)
    imagenet.softmax_output(net, x, cfg)
    net.meta["block_config"] = list(cfg.block_config)


def source_model(arch: str | None = None):
    return imagenet.source_model(arch or DEFAULT_ARCH)


NETDEF = imagenet.classifier(
    "densenet",
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
