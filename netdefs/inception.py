"""Inception v3, torchvision's ``inception_v3``: layer names and weight keys are torchvision's.

python gen_wts.py --model torchvision:inception_v3 --random-init -o inception_v3.wts
python netdefs/inception.py build -w inception_v3.wts -o inception_v3.engine
python netdefs/inception.py check -w inception_v3.wts
python netdefs/inception.py infer -w inception_v3.wts images/

Input 299x299 (resize 342, crop 299). In eval mode torchvision skips the auxiliary classifier ``AuxLogits``: its
weights stay unread (the unused-weights report says why). See ``--transform-input``.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import avg_pool, basic_conv2d, concat, flatten, global_avg_pool, max_pool, transform_input
from trtx.net import Net

ARCHS = {"inception_v3": {"crop": 299, "resize": 342}}
DEFAULT_ARCH = "inception_v3"
AUX_HEAD = "AuxLogits."


# ---- configuration --------------------------------------------------------------------------------------
def add_arguments(parser, command: str) -> None:
    parser.add_argument(
        "--transform-input",
        choices=("on", "off"),
        default="off",
        help="torchvision's transform_input flag: off (default) for a model built by inception_v3() "
        "(what gen_wts.py --model torchvision:inception_v3 writes), on for the ported Google weights "
        "(inception_v3(weights=...) and the inception_v3_google-0cc3c7bd.pth checkpoint)",
    )


def configure(args, weights, meta=None):
    arch = ARCHS[args.arch]
    if weights is None:
        aux, transform = meta["aux_logits"], meta["transform_input"]
    else:
        aux = any(k.startswith(AUX_HEAD) for k in weights)
        transform = getattr(args, "transform_input", "off") == "on"
    cfg = imagenet.configure(args, weights, meta, classifier_bias="fc.bias", aux_logits=aux, transform_input=transform)
    cfg.input_size, cfg.resize = arch["crop"], arch["resize"]
    return cfg


def unused_reason(cfg, key: str) -> str | None:
    """Why a weight is legitimately left unread (``trtx.cli`` reports it as such)."""
    if key.startswith(AUX_HEAD):
        return "auxiliary classifier: torchvision runs it only in training mode"
    return None


# ---- the network ---------------------------------------------------------------------------------------
def branch(net: Net, x, path: str, convs):
    """A chain of BasicConv2d: ``convs`` = [(name, kernel, stride, padding), ...]."""
    for name, kernel, stride, padding in convs:
        x = basic_conv2d(net, x, f"{path}.{name}", kernel, stride=stride, padding=padding)
    return x


def pool_branch(net: Net, x, path: str):
    """F.avg_pool2d(x, 3, stride=1, padding=1) → branch_pool (InceptionA, C, E)."""
    x = avg_pool(net, x, f"{path}.avg_pool", 3, stride=1, padding=1)
    return basic_conv2d(net, x, f"{path}.branch_pool", 1)


def inception_a(net: Net, x, path: str):
    b1 = branch(net, x, path, [("branch1x1", 1, 1, 0)])
    b5 = branch(net, x, path, [("branch5x5_1", 1, 1, 0), ("branch5x5_2", 5, 1, 2)])
    b3 = branch(net, x, path, [("branch3x3dbl_1", 1, 1, 0), ("branch3x3dbl_2", 3, 1, 1), ("branch3x3dbl_3", 3, 1, 1)])
    return concat(net, [b1, b5, b3, pool_branch(net, x, path)], path)


def inception_b(net: Net, x, path: str):
    b3 = branch(net, x, path, [("branch3x3", 3, 2, 0)])
    bd = branch(net, x, path, [("branch3x3dbl_1", 1, 1, 0), ("branch3x3dbl_2", 3, 1, 1), ("branch3x3dbl_3", 3, 2, 0)])
    bp = max_pool(net, x, f"{path}.max_pool", 3, stride=2)
    return concat(net, [b3, bd, bp], path)


def inception_c(net: Net, x, path: str):
    b1 = branch(net, x, path, [("branch1x1", 1, 1, 0)])
    row, col = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
    b7 = branch(net, x, path, [("branch7x7_1", 1, 1, 0), ("branch7x7_2", *row), ("branch7x7_3", *col)])
    dbl = [
        ("branch7x7dbl_1", 1, 1, 0),
        ("branch7x7dbl_2", *col),
        ("branch7x7dbl_3", *row),
        ("branch7x7dbl_4", *col),
        ("branch7x7dbl_5", *row),
    ]
    b7d = branch(net, x, path, dbl)
    return concat(net, [b1, b7, b7d, pool_branch(net, x, path)], path)


def inception_d(net: Net, x, path: str):
    b3 = branch(net, x, path, [("branch3x3_1", 1, 1, 0), ("branch3x3_2", 3, 2, 0)])
    seven = [
        ("branch7x7x3_1", 1, 1, 0),
        ("branch7x7x3_2", (1, 7), 1, (0, 3)),
        ("branch7x7x3_3", (7, 1), 1, (3, 0)),
        ("branch7x7x3_4", 3, 2, 0),
    ]
    b7 = branch(net, x, path, seven)
    bp = max_pool(net, x, f"{path}.max_pool", 3, stride=2)
    return concat(net, [b3, b7, bp], path)


def fork_1x3_3x1(net: Net, x, path: str, name: str):
    """InceptionE's fork: torch.cat([{name}_Na(x) (1x3), {name}_Nb(x) (3x1)], 1), N = 2 or 3."""
    a = basic_conv2d(net, x, f"{path}.{name}a", (1, 3), padding=(0, 1))
    b = basic_conv2d(net, x, f"{path}.{name}b", (3, 1), padding=(1, 0))
    return concat(net, [a, b], f"{path}.{name.rsplit('_', 1)[0]}.cat")


def inception_e(net: Net, x, path: str):
    b1 = branch(net, x, path, [("branch1x1", 1, 1, 0)])
    b3 = branch(net, x, path, [("branch3x3_1", 1, 1, 0)])
    b3 = fork_1x3_3x1(net, b3, path, "branch3x3_2")
    bd = branch(net, x, path, [("branch3x3dbl_1", 1, 1, 0), ("branch3x3dbl_2", 3, 1, 1)])
    bd = fork_1x3_3x1(net, bd, path, "branch3x3dbl_3")
    return concat(net, [b1, b3, bd, pool_branch(net, x, path)], path)


#: Inception3's blocks after the stem, in forward order
MIXED = {
    "Mixed_5b": inception_a,
    "Mixed_5c": inception_a,
    "Mixed_5d": inception_a,
    "Mixed_6a": inception_b,
    "Mixed_6b": inception_c,
    "Mixed_6c": inception_c,
    "Mixed_6d": inception_c,
    "Mixed_6e": inception_c,
    "Mixed_7a": inception_d,
    "Mixed_7b": inception_e,
    "Mixed_7c": inception_e,
}


def define(net: Net, cfg) -> None:
    """Mirrors Inception3.forward in eval mode: no AuxLogits, dropout is the identity."""
    x = imagenet.data_input(net, cfg)
    if cfg.transform_input:
        x = transform_input(net, x)
    x = basic_conv2d(net, x, "Conv2d_1a_3x3", 3, stride=2)
    x = basic_conv2d(net, x, "Conv2d_2a_3x3", 3)
    x = basic_conv2d(net, x, "Conv2d_2b_3x3", 3, padding=1)
    x = max_pool(net, x, "maxpool1", 3, stride=2)
    x = basic_conv2d(net, x, "Conv2d_3b_1x1", 1)
    x = basic_conv2d(net, x, "Conv2d_4a_3x3", 3)
    x = max_pool(net, x, "maxpool2", 3, stride=2)
    for name, block in MIXED.items():
        x = block(net, x, name)
    x = global_avg_pool(net, x, "avgpool")
    x = flatten(net, x, "flatten")
    x = net.linear(x, "fc").get_output(0)
    imagenet.softmax_output(net, x, cfg)
    net.meta.update(aux_logits=cfg.aux_logits, transform_input=cfg.transform_input)


# ---- the PyTorch side ----------------------------------------------------------------------------------
def source_model(arch: str | None = None):
    """Random-init inception_v3 as ``torchvision.models.inception_v3()`` builds it (AuxLogits, no transform)."""
    from torchvision.models import inception_v3

    return inception_v3(weights=None, init_weights=True).eval()


def torch_model(cfg, weights):
    from torchvision.models import Inception3

    from trtx.sources import load_state

    model = Inception3(
        num_classes=cfg.num_classes, aux_logits=cfg.aux_logits, transform_input=cfg.transform_input, init_weights=False
    )
    load_state(model, weights)
    return model.eval()


torch_forward = imagenet.torch_forward

NETDEF = imagenet.classifier(
    "inception",
    __doc__,
    archs=tuple(ARCHS),
    default_arch=DEFAULT_ARCH,
    configure=configure,
    define=define,
    torch_model=torch_model,
    source_model=source_model,
    add_arguments=add_arguments,
    unused_reason=unused_reason,
)

if __name__ == "__main__":
    from trtx.cli import main

    sys.exit(main(NETDEF))
