"""ShuffleNetV2 x0.5 and x1.0 (torchvision ``shufflenetv2.py``).

python gen_wts.py --model torchvision:shufflenet_v2_x1_0 --random-init -o shufflenet_v2_x1_0.wts
python netdefs/shufflenet.py build --arch shufflenet_v2_x1_0 -w shufflenet_v2_x1_0.wts
python netdefs/shufflenet.py check --arch shufflenet_v2_x1_0 -w shufflenet_v2_x1_0.wts

Layer names are torchvision module paths (``stage2.0.branch2.3``); the channel split (``torch.chunk``), the
concatenation and the channel shuffle are functional, so their layers carry suffixed names
(``stage2.1.chunk.0``, ``stage2.1.cat``) and the shuffle's last layer carries the block's name.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import concat, conv_bn_act, conv_norm_activation, count_indices, max_pool, split
from trtx.net import Net

#: blocks per stage (stage2..4) and output channels (conv1, stage2..4, conv5): the network reads its channel
#: counts from the weights, ``configure`` checks them against these
ARCHS = {
    "shufflenet_v2_x0_5": {"stages_repeats": (4, 8, 4), "stages_out_channels": (24, 48, 96, 192, 1024)},
    "shufflenet_v2_x1_0": {"stages_repeats": (4, 8, 4), "stages_out_channels": (24, 116, 232, 464, 1024)},
}
DEFAULT_ARCH = "shufflenet_v2_x1_0"


def configure(args, weights, meta=None):
    arch = ARCHS[args.arch]
    if weights is not None:
        expected = f"blocks {arch['stages_repeats']}, channels {arch['stages_out_channels']}"
        imagenet.check_arch(args.arch, _structure_in(weights), expected)
    return imagenet.configure(args, weights, meta, classifier_bias="fc.bias", **arch)


def _structure_in(weights) -> str:
    """Blocks per stage and output channels, read from the weights (a block outputs twice its branch width)."""
    repeats = tuple(count_indices(weights, f"stage{s}.{{}}.branch2.0.weight") for s in (2, 3, 4))
    stages = tuple(2 * imagenet.size(weights, f"stage{s}.0.branch2.1.weight") for s in (2, 3, 4))
    channels = (imagenet.size(weights, "conv1.1.weight"), *stages, imagenet.size(weights, "conv5.1.weight"))
    return f"blocks {repeats}, channels {channels}"


def source_model(arch: str | None = None):
    """Random-init torchvision model for ``gen_wts.py --model netdef:shufflenet:<arch>``."""
    return imagenet.torchvision_model(arch or DEFAULT_ARCH)


def channel_shuffle(net: Net, x, groups: int, name: str):
    """shufflenetv2.channel_shuffle: view [B, g, C/g, H, W] -> transpose(1, 2) -> view [B, C, H, W]."""
    c, h, w = (int(d) for d in x.shape[1:])
    split = net.network.add_shuffle(x)
    split.reshape_dims = (0, groups, c // groups, h, w)  # 0: copy the (dynamic) batch
    split.second_transpose = (0, 2, 1, 3, 4)
    net.name(split, f"{name}.transpose")
    merge = net.network.add_shuffle(split.get_output(0))
    merge.reshape_dims = (0, c, h, w)
    return net.name(merge, name).get_output(0)


def branch1(net: Net, x, path: str, stride: int):
    """branch1 (stride 2 only): 3x3 depthwise + BN -> 1x1 + BN + ReLU."""
    y = conv_bn_act(net, x, conv=f"{path}.0", bn=f"{path}.1", act=None, stride=stride, groups=int(x.shape[1]))
    y = conv_bn_act(net, y, conv=f"{path}.2", bn=f"{path}.3", act=f"{path}.4", kernel=1)
    return net.alias(y, path)


def branch2(net: Net, x, path: str, stride: int):
    """branch2: 1x1 + BN + ReLU -> 3x3 depthwise (stride) + BN -> 1x1 + BN + ReLU."""
    y = conv_bn_act(net, x, conv=f"{path}.0", bn=f"{path}.1", act=f"{path}.2", kernel=1)
    y = conv_bn_act(net, y, conv=f"{path}.3", bn=f"{path}.4", act=None, stride=stride, groups=int(y.shape[1]))
    y = conv_bn_act(net, y, conv=f"{path}.5", bn=f"{path}.6", act=f"{path}.7", kernel=1)
    return net.alias(y, path)


def inverted_residual(net: Net, x, path: str, stride: int):
    """shufflenetv2.InvertedResidual: split (stride 1) or two branches (stride 2), concat, channel shuffle."""
    if stride == 1:
        x1, x2 = split(net, x, [int(x.shape[1]) // 2] * 2, f"{path}.chunk")
        out = concat(net, [x1, branch2(net, x2, f"{path}.branch2", stride)], f"{path}.cat")
    else:
        out = concat(
            net, [branch1(net, x, f"{path}.branch1", stride), branch2(net, x, f"{path}.branch2", stride)], f"{path}.cat"
        )
    return channel_shuffle(net, out, 2, path)


def define(net: Net, cfg) -> None:
    """Mirrors torchvision ``ShuffleNetV2._forward_impl``."""
    x = imagenet.data_input(net, cfg)
    x = conv_norm_activation(net, x, "conv1", 3, stride=2)
    x = max_pool(net, x, "maxpool", 3, stride=2, padding=1)
    for stage, repeats in enumerate(cfg.stages_repeats, start=2):
        for i in range(repeats):
            x = inverted_residual(net, x, f"stage{stage}.{i}", 2 if i == 0 else 1)
        net.alias(x, f"stage{stage}")
    x = conv_norm_activation(net, x, "conv5", 1)
    mean = net.network.add_reduce(x, net.trt.ReduceOperation.AVG, (1 << 2) | (1 << 3), False)  # x.mean([2, 3])
    x = net.name(mean, "mean").get_output(0)
    imagenet.softmax_output(net, net.linear(x, "fc").get_output(0), cfg)


NETDEF = imagenet.classifier(
    "shufflenet",
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
