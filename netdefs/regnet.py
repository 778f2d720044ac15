"""RegNet X/Y, torchvision's ``regnet_*``: layer names and weight keys are torchvision's.

python gen_wts.py --model torchvision:regnet_y_400mf --random-init -o regnet_y_400mf.wts
python netdefs/regnet.py build -w regnet_y_400mf.wts --arch regnet_y_400mf -o regnet_y_400mf.engine
python netdefs/regnet.py check -w regnet_y_400mf.wts --arch regnet_y_400mf
python netdefs/regnet.py infer -w regnet_y_400mf.wts --arch regnet_y_400mf images/

Widths, group counts and the squeeze-excitation (RegNetY) are read from the weights: every stage starts with
a stride-2 block, every 3x3 conv has ``width / group_width`` groups.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import activation, add, conv_norm_activation, flatten, global_avg_pool, squeeze_excitation
from trtx.net import Net, NetdefError

#: blocks per stage of torchvision's RegNets (what tells the archs' weights apart); SE blocks: the Y models
ARCHS = {
    "regnet_y_400mf": {"depths": (1, 3, 6, 6)},
    "regnet_y_800mf": {"depths": (1, 3, 8, 2)},
    "regnet_y_1_6gf": {"depths": (2, 6, 17, 2)},
    "regnet_y_3_2gf": {"depths": (2, 5, 13, 1)},
    "regnet_y_8gf": {"depths": (2, 4, 10, 1)},
    "regnet_y_16gf": {"depths": (2, 4, 11, 1)},
    "regnet_y_32gf": {"depths": (2, 5, 12, 1)},
    "regnet_x_400mf": {"depths": (1, 2, 7, 12)},
    "regnet_x_800mf": {"depths": (1, 3, 7, 5)},
    "regnet_x_1_6gf": {"depths": (2, 4, 10, 2)},
    "regnet_x_3_2gf": {"depths": (2, 6, 15, 2)},
    "regnet_x_8gf": {"depths": (2, 5, 15, 1)},
    "regnet_x_16gf": {"depths": (2, 6, 13, 1)},
    "regnet_x_32gf": {"depths": (2, 7, 13, 1)},
}
DEFAULT_ARCH = "regnet_y_400mf"


def configure(args, weights, meta=None):
    depths = ARCHS[args.arch]["depths"]
    if weights is not None:
        found = tuple(_count_blocks(weights, stage) for stage in range(1, 5))
        se = "trunk_output.block1.block1-0.f.se.fc1.weight" in weights
        if found != depths or se != args.arch.startswith("regnet_y"):
            raise NetdefError(
                f"weights have stages of {found} blocks {'with' if se else 'without'} squeeze-excitation; "
                f"{args.arch} has {depths} {'with' if args.arch.startswith('regnet_y') else 'without'} (check --arch)"
            )
    return imagenet.configure(args, weights, meta, classifier_bias="fc.bias", depths=depths)


def _count_blocks(weights, stage: int) -> int:
    n = 0
    while f"trunk_output.block{stage}.block{stage}-{n}.f.a.0.weight" in weights:
        n += 1
    return n


# ---- the network ---------------------------------------------------------------------------------------
def bottleneck_transform(net: Net, x, path: str, stride: int):
    """BottleneckTransform: 1x1 → 3x3 grouped (stride) → [squeeze-excitation] → 1x1 (no activation)."""
    y = conv_norm_activation(net, x, f"{path}.a", 1)
    width = int(y.shape[1])
    # the grouped conv's weight is [width, width / groups, 3, 3]: the groups follow from its size
    groups = width * width * 9 // net.weights[f"{path}.b.0.weight"].size
    y = conv_norm_activation(net, y, f"{path}.b", 3, stride=stride, groups=groups)
    if f"{path}.se.fc1.weight" in net.weights:
        y = squeeze_excitation(net, y, f"{path}.se")
    y = conv_norm_activation(net, y, f"{path}.c", 1, kind="none")
    return net.alias(y, path)


def res_bottleneck_block(net: Net, x, path: str, stride: int):
    """ResBottleneckBlock: relu(proj(x) + f(x)), proj (1x1 conv + BN) when the width or resolution changes."""
    shortcut = x
    if f"{path}.proj.0.weight" in net.weights:
        shortcut = conv_norm_activation(net, x, f"{path}.proj", 1, stride=stride, kind="none")
    y = add(net, shortcut, bottleneck_transform(net, x, f"{path}.f", stride), f"{path}.add")
    return net.alias(activation(net, y, "relu", f"{path}.activation"), path)


def define(net: Net, cfg) -> None:
    """Mirrors RegNet.forward."""
    x = imagenet.data_input(net, cfg)
    x = conv_norm_activation(net, x, "stem", 3, stride=2)
    for s, depth in enumerate(cfg.depths, start=1):
        for j in range(depth):
            x = res_bottleneck_block(net, x, f"trunk_output.block{s}.block{s}-{j}", 2 if j == 0 else 1)
        x = net.alias(x, f"trunk_output.block{s}")
    x = net.alias(x, "trunk_output")
    x = global_avg_pool(net, x, "avgpool")
    x = flatten(net, x, "flatten")
    x = net.linear(x, "fc").get_output(0)
    imagenet.softmax_output(net, x, cfg)


def torch_model(cfg, weights):
    """torchvision ``cfg.arch`` with ``weights`` loaded. Built on the CPU: RegNet's constructor computes its
    stage widths with tensor ops, which a meta-device construction cannot run."""
    from trtx.sources import load_state

    model = imagenet.torchvision_model(cfg.arch, cfg.num_classes)
    load_state(model, weights)
    return model


def source_model(arch: str | None = None):
    return imagenet.source_model(arch or DEFAULT_ARCH)


NETDEF = imagenet.classifier(
    "regnet",
    __doc__,
    archs=tuple(ARCHS),
    default_arch=DEFAULT_ARCH,
    configure=configure,
    define=define,
    torch_model=torch_model,
    source_model=source_model,
)

if __name__ == "__main__":
    from trtx.cli import main

    sys.exit(main(NETDEF))
