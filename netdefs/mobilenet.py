"""MobileNetV2 and MobileNetV3 small/large (torchvision ``mobilenetv2.py``, ``mobilenetv3.py``).

python gen_wts.py --model torchvision:mobilenet_v2 --random-init -o mobilenet_v2.wts
python netdefs/mobilenet.py build --arch mobilenet_v2 -w mobilenet_v2.wts -o mobilenet_v2.engine
python netdefs/mobilenet.py check --arch mobilenet_v2 -w mobilenet_v2.wts
python netdefs/mobilenet.py infer --arch mobilenet_v2 -e mobilenet_v2.engine bus.jpg

Layer names are torchvision module paths: ``features.3.conv.1.0`` (V2), ``features.4.block.2.fc1`` (V3).
Channel counts come from the weights; the tables below give what the weights cannot: strides, kernels,
expansion, squeeze-excitation and activations.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import activation, add, conv_norm_activation, flatten, global_avg_pool, squeeze_excitation
from trtx.net import Net

#: MobileNetV2 inverted residual stages: expand ratio t, output channels c, blocks n, first stride s
V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

#: MobileNetV3 blocks: input, kernel, expanded, output channels, squeeze-excitation, activation, stride
V3_LARGE = (
    (16, 3, 16, 16, False, "relu", 1),
    (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hardswish", 2),
    (80, 3, 200, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 480, 112, True, "hardswish", 1),
    (112, 3, 672, 112, True, "hardswish", 1),
    (112, 5, 672, 160, True, "hardswish", 2),
    (160, 5, 960, 160, True, "hardswish", 1),
    (160, 5, 960, 160, True, "hardswish", 1),
)
V3_SMALL = (
    (16, 3, 16, 16, True, "relu", 2),
    (16, 3, 72, 24, False, "relu", 2),
    (24, 3, 88, 24, False, "relu", 1),
    (24, 5, 96, 40, True, "hardswish", 2),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 120, 48, True, "hardswish", 1),
    (48, 5, 144, 48, True, "hardswish", 1),
    (48, 5, 288, 96, True, "hardswish", 2),
    (96, 5, 576, 96, True, "hardswish", 1),
    (96, 5, 576, 96, True, "hardswish", 1),
)

ARCHS = {
    "mobilenet_v2": {"version": 2, "setting": V2_SETTING},
    "mobilenet_v3_large": {"version": 3, "setting": V3_LARGE},
    "mobilenet_v3_small": {"version": 3, "setting": V3_SMALL},
}
DEFAULT_ARCH = "mobilenet_v2"
V3_BN_EPS = 1e-3  # MobileNetV3 builds its BatchNorm2d with eps=0.001


def configure(args, weights, meta=None):
    arch = ARCHS[args.arch]
    classifier = "classifier.1.bias" if arch["version"] == 2 else "classifier.3.bias"
    if weights is not None:
        blocks = sum(n for _, _, n, _ in V2_SETTING) if arch["version"] == 2 else len(arch["setting"])
        expected = f"MobileNetV{arch['version']}, {blocks} inverted residuals"
        imagenet.check_arch(args.arch, _structure_in(weights), expected)
    return imagenet.configure(args, weights, meta, classifier_bias=classifier, **arch)


def _structure_in(weights) -> str:
    """Read from the weights: V2 blocks are ``features.N.conv``, V3 blocks ``features.N.block`` (N from 1)."""
    version = 3 if "features.1.block.0.0.weight" in weights else 2
    inner = "block" if version == 3 else "conv"
    blocks = 0
    while f"features.{blocks + 1}.{inner}.0.0.weight" in weights:
        blocks += 1
    return f"MobileNetV{version}, {blocks} inverted residuals"


# ---- MobileNetV2 --------------------------------------------------------------------------------------
def inverted_residual_v2(net: Net, x, path: str, out_channels: int, stride: int, expand_ratio: int):
    """mobilenetv2.InvertedResidual: [1x1 expand] -> 3x3 depthwise -> 1x1 project + BN, + x when shapes allow."""
    in_channels = int(x.shape[1])
    hidden = int(round(in_channels * expand_ratio))
    i, y = 0, x
    if expand_ratio != 1:
        y = conv_norm_activation(net, y, f"{path}.conv.0", 1, kind="relu6")
        i = 1
    y = conv_norm_activation(net, y, f"{path}.conv.{i}", 3, stride=stride, groups=hidden, kind="relu6")
    y = net.conv(y, f"{path}.conv.{i + 1}", 1).get_output(0)
    y = net.batchnorm(y, f"{path}.conv.{i + 2}").get_output(0)
    if stride == 1 and in_channels == out_channels:
        return add(net, x, net.alias(y, f"{path}.conv"), path)
    return net.alias(y, path)


def define_v2(net: Net, cfg):
    """Mirrors torchvision ``MobileNetV2._forward_impl``; returns the logits."""
    x = imagenet.data_input(net, cfg)
    x = conv_norm_activation(net, x, "features.0", 3, stride=2, kind="relu6")
    index = 1
    for t, c, n, s in cfg.setting:
        for i in range(n):
            x = inverted_residual_v2(net, x, f"features.{index}", c, s if i == 0 else 1, t)
            index += 1
    x = conv_norm_activation(net, x, f"features.{index}", 1, kind="relu6")
    net.alias(x, "features")
    x = global_avg_pool(net, x, "adaptive_avg_pool2d")  # functional in torchvision: no module to compare
    x = flatten(net, x, "flatten")
    return net.linear(x, "classifier.1").get_output(0)  # classifier.0 is Dropout


# ---- MobileNetV3 --------------------------------------------------------------------------------------
def inverted_residual_v3(net: Net, x, path: str, setting: tuple):
    """mobilenetv3.InvertedResidual: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project, + x when shapes allow."""
    in_channels, kernel, expanded, out_channels, use_se, kind, stride = setting
    i, y = 0, x
    if expanded != in_channels:
        y = conv_norm_activation(net, y, f"{path}.block.{i}", 1, kind=kind, eps=V3_BN_EPS)
        i += 1
    y = conv_norm_activation(
        net, y, f"{path}.block.{i}", kernel, stride=stride, groups=int(y.shape[1]), kind=kind, eps=V3_BN_EPS
    )
    i += 1
    if use_se:
        y = squeeze_excitation(net, y, f"{path}.block.{i}", act="relu", scale_act="hardsigmoid")
        i += 1
    y = conv_norm_activation(net, y, f"{path}.block.{i}", 1, kind="none", eps=V3_BN_EPS)
    if stride == 1 and in_channels == out_channels:
        return add(net, net.alias(y, f"{path}.block"), x, path)
    return net.alias(y, path)


def define_v3(net: Net, cfg):
    """Mirrors torchvision ``MobileNetV3._forward_impl``; returns the logits."""
    x = imagenet.data_input(net, cfg)
    x = conv_norm_activation(net, x, "features.0", 3, stride=2, kind="hardswish", eps=V3_BN_EPS)
    for index, setting in enumerate(cfg.setting, start=1):
        x = inverted_residual_v3(net, x, f"features.{index}", setting)
    x = conv_norm_activation(net, x, f"features.{len(cfg.setting) + 1}", 1, kind="hardswish", eps=V3_BN_EPS)
    net.alias(x, "features")
    x = global_avg_pool(net, x, "avgpool")
    x = flatten(net, x, "flatten")
    x = net.linear(x, "classifier.0").get_output(0)
    x = activation(net, x, "hardswish", "classifier.1")
    return net.linear(x, "classifier.3").get_output(0)  # classifier.2 is Dropout


def define(net: Net, cfg) -> None:
    logits = define_v2(net, cfg) if cfg.version == 2 else define_v3(net, cfg)
    imagenet.softmax_output(net, logits, cfg)


NETDEF = imagenet.classifier(
    "mobilenet",
    __doc__,
    archs=tuple(ARCHS),
    default_arch=DEFAULT_ARCH,
    configure=configure,
    define=define,
)

if __name__ == "__main__":
    from trtx.cli import main

    sys.exit(main(NETDEF))
