"""GoogLeNet (Inception v1), torchvision's ``googlenet``: layer names and weight keys are torchvision's.

python gen_wts.py --model torchvision:googlenet --random-init -o googlenet.wts
python netdefs/googlenet.py build -w googlenet.wts -o googlenet.engine
python netdefs/googlenet.py check -w googlenet.wts
python netdefs/googlenet.py infer -w googlenet.wts images/

In eval mode torchvision skips the auxiliary classifiers ``aux1``/``aux2``: their weights stay unread (the
unused-weights report says why). ``transform_input`` re-scales the ImageNet-normalized input the way the ported
Google weights expect; see ``--transform-input``.
"""

from __future__ import annotations

import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs import imagenet
from netdefs.common import basic_conv2d, concat, flatten, global_avg_pool, max_pool, transform_input
from trtx.net import Net

ARCHS = {"googlenet": {"crop": 224, "resize": 256}}
DEFAULT_ARCH = "googlenet"

#: the inception blocks in forward order, with the max pool before some of them
INCEPTIONS = (
    "inception3a",
    "inception3b",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "inception5a",
    "inception5b",
)
POOL_BEFORE = {"inception4a": ("maxpool3", 3), "inception5a": ("maxpool4", 2)}
AUX_HEADS = ("aux1.", "aux2.")


# ---- configuration --------------------------------------------------------------------------------------
def add_arguments(parser, command: str) -> None:
    parser.add_argument(
        "--transform-input",
        choices=("auto", "on", "off"),
        default="auto",
        help="torchvision's transform_input flag. auto (default): as torchvision's googlenet() sets it for "
        "these weights: off when they hold the aux classifiers (the constructor's default model), on when "
        "those were dropped (googlenet(weights=...)). The raw googlenet-1378be20.pth checkpoint keeps the "
        "aux classifiers: pass 'on' for it",
    )


def configure(args, weights, meta=None):
    arch = ARCHS[args.arch]
    if weights is None:
        aux, transform = meta["aux_logits"], meta["transform_input"]
    else:
        aux = any(k.startswith(AUX_HEADS) for k in weights)
        choice = getattr(args, "transform_input", "auto")
        transform = {"on": True, "off": False}.get(choice, not aux)
    cfg = imagenet.configure(args, weights, meta, classifier_bias="fc.bias", aux_logits=aux, transform_input=transform)
    cfg.input_size, cfg.resize = arch["crop"], arch["resize"]
    return cfg


def unused_reason(cfg, key: str) -> str | None:
    """Why a weight is legitimately left unread (``trtx.cli`` reports it as such)."""
    if key.startswith(AUX_HEADS):
        return "auxiliary classifier: torchvision runs it only in training mode"
    return None


# ---- the network ---------------------------------------------------------------------------------------
def inception(net: Net, x, path: str):
    """Inception: four branches, concatenated (branch3's 3x3 conv is torchvision's known deviation from 5x5)."""
    b1 = basic_conv2d(net, x, f"{path}.branch1", 1)
    b2 = basic_conv2d(net, x, f"{path}.branch2.0", 1)
    b2 = basic_conv2d(net, b2, f"{path}.branch2.1", 3, padding=1)
    b3 = basic_conv2d(net, x, f"{path}.branch3.0", 1)
    b3 = basic_conv2d(net, b3, f"{path}.branch3.1", 3, padding=1)
    b4 = max_pool(net, x, f"{path}.branch4.0", 3, stride=1, padding=1, ceil_mode=True)
    b4 = basic_conv2d(net, b4, f"{path}.branch4.1", 1)
    return concat(net, [b1, b2, b3, b4], path)


def define(net: Net, cfg) -> None:
    """Mirrors GoogLeNet.forward in eval mode: no aux classifiers, dropout is the identity."""
    x = imagenet.data_input(net, cfg)
    if cfg.transform_input:
        x = transform_input(net, x)
    x = basic_conv2d(net, x, "conv1", 7, stride=2, padding=3)
    x = max_pool(net, x, "maxpool1", 3, stride=2, ceil_mode=True)
    x = basic_conv2d(net, x, "conv2", 1)
    x = basic_conv2d(net, x, "conv3", 3, padding=1)
    x = max_pool(net, x, "maxpool2", 3, stride=2, ceil_mode=True)
    for name in INCEPTIONS:
        if name in POOL_BEFORE:
            pool, kernel = POOL_BEFORE[name]
            x = max_pool(net, x, pool, kernel, stride=2, ceil_mode=True)
        x = inception(net, x, name)
    x = global_avg_pool(net, x, "avgpool")
    x = flatten(net, x, "flatten")
    x = net.linear(x, "fc").get_output(0)
    imagenet.softmax_output(net, x, cfg)
    net.meta.update(aux_logits=cfg.aux_logits, transform_input=cfg.transform_input)


# ---- the PyTorch side ----------------------------------------------------------------------------------
def source_model(arch: str | None = None):
    """Random-init googlenet as ``torchvision.models.googlenet()`` builds it (aux heads, transform_input off)."""
    from torchvision.models import googlenet

    return googlenet(weights=None, init_weights=True).eval()


def torch_model(cfg, weights):
    from torchvision.models import GoogLeNet

    from trtx.sources import load_state

    model = GoogLeNet(
        num_classes=cfg.num_classes, aux_logits=cfg.aux_logits, transform_input=cfg.transform_input, init_weights=False
    )
    load_state(model, weights)
    return model.eval()


torch_forward = imagenet.torch_forward

NETDEF = imagenet.classifier(
    "googlenet",
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
