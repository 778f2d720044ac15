"""LeNet-5 (tensorrtx's first example): the smallest complete netdef.

python gen_wts.py --model netdef:lenet --random-init -o lenet.wts
python netdefs/lenet.py build -w lenet.wts -o lenet.engine
python netdefs/lenet.py check -w lenet.wts
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from netdefs.common import activation, avg_pool, flatten
from trtx.net import Net
from trtx.netdef import App, Netdef, TorchSide

ARCHS = {"lenet5": {"num_classes": 10}}
INPUT = "data"


def configure(args, weights, meta: dict | None = None) -> SimpleNamespace:
    num_classes = len(weights["fc3.bias"]) if weights is not None else meta["num_classes"]
    return SimpleNamespace(arch=args.arch, num_classes=num_classes)


def define(net: Net, cfg) -> None:
    """Mirrors LeNet5.forward below, layer by layer."""
    x = net.input(INPUT, (-1, 1, 32, 32))
    x = activation(net, net.conv(x, "conv1", 5).get_output(0), "relu", "relu1")
    x = avg_pool(net, x, "pool1", 2)
    x = activation(net, net.conv(x, "conv2", 5).get_output(0), "relu", "relu2")
    x = avg_pool(net, x, "pool2", 2)
    x = flatten(net, x, "flatten")
    x = activation(net, net.linear(x, "fc1").get_output(0), "relu", "relu3")
    x = activation(net, net.linear(x, "fc2").get_output(0), "relu", "relu4")
    x = net.linear(x, "fc3").get_output(0)
    prob = net.network.add_softmax(net.to_fp32(x, "fc3.to_fp32"))
    prob.axes = 1 << 1
    net.output(net.name(prob, "prob").get_output(0), "prob")
    net.meta["num_classes"] = cfg.num_classes


def _torch_module(num_classes: int = 10):
    import torch
    from torch import nn

    class LeNet5(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 6, 5), nn.ReLU(), nn.AvgPool2d(2)
            self.conv2, self.relu2, self.pool2 = nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1, self.relu3 = nn.Linear(16 * 5 * 5, 120), nn.ReLU()
            self.fc2, self.relu4 = nn.Linear(120, 84), nn.ReLU()
            self.fc3 = nn.Linear(84, num_classes)

        def forward(self, x):
            x = self.pool1(self.relu1(self.conv1(x)))
            x = self.pool2(self.relu2(self.conv2(x)))
            x = self.relu3(self.fc1(self.flatten(x)))
            x = self.relu4(self.fc2(x))
            return torch.softmax(self.fc3(x), dim=1)

    return LeNet5().eval()


def preprocess(images, cfg):
    """BGR images -> [B, 1, 32, 32] grayscale in [0, 1] (what MNIST-style LeNet expects)."""
    import cv2
    import numpy as np

    gray = [cv2.resize(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), (32, 32), interpolation=cv2.INTER_AREA) for im in images]
    return {INPUT: (np.stack(gray)[:, None] / 255.0).astype(np.float32)}, None


def postprocess(outputs, ctx, cfg):
    probs = outputs["prob"]
    return [{"class": int(p.argmax()), "prob": float(p.max())} for p in probs]


def source_model(arch: str | None = None):
    """Random-init PyTorch LeNet-5 for ``gen_wts.py --model netdef:lenet``."""
    return _torch_module(ARCHS[arch or "lenet5"]["num_classes"])


def torch_model(cfg, weights):
    from trtx.sources import load_state

    model = _torch_module(cfg.num_classes)
    load_state(model, weights)
    return model


def torch_forward(model, feeds):
    return {"prob": model(feeds[INPUT])}


NETDEF = Netdef(
    name="lenet",
    description="LeNet-5 (tensorrtx's first example): the smallest complete netdef",
    archs=tuple(ARCHS),
    default_arch="lenet5",
    configure=configure,
    define=define,
    torch=TorchSide(model=torch_model, forward=torch_forward, source=source_model),
    app=App(preprocess=preprocess, postprocess=postprocess),
    script="python netdefs/lenet.py",
)

if __name__ == "__main__":
    from trtx.cli import main

    sys.exit(main(NETDEF))
