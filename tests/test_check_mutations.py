"""The `check` mutation suite (issue #17): one layer at a time changed the way a hand-written netdef goes wrong
(tests/mutations.py), and `check` names exactly that layer as the first divergent one -- or the network is refused
with an error naming it.

Where a mistake sits in a layer no PyTorch module mirrors (the residual add inside a torchvision block), the first
compared layer it reaches is the module whose forward contains it: the block's output. Inputs are small (resnet18 at
32x32, squeezenet, yolov5n and retinaface at 64x64) to keep the suite fast; the networks are the same at any size.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from mutations import Mutation, applied

import netdefs
import wts
from netdefs import sources as model_sources
from trtx import cli
from trtx_base.errors import UserError

#: model -> (source spec, netdef family, its CLI options, input size set on cfg or None)
MODELS = {
    "lenet": ("netdef:lenet", "lenet", [], None),
    "resnet18": ("torchvision:resnet18", "resnet", ["--arch", "resnet18"], 32),
    "squeezenet1_1": ("torchvision:squeezenet1_1", "squeezenet", ["--arch", "squeezenet1_1"], 64),
    "yolov5n": ("yolov5:yolov5n", "yolov5", ["--imgsz", "64"], None),
    "retinaface_mnet": ("retinaface:mnet", "retinaface", ["--arch", "mnet", "--imgsz", "64", "64"], None),
}

M = Mutation
MUTATIONS = {
    "lenet": [
        M("stride", "conv1"), M("stride", "conv2"), M("padding", "conv2"), M("stride", "pool1"),
        M("padding", "pool2"), M("groups", "conv2"), M("bias", "conv1"), M("bias", "fc2"),
        M("activation", "relu1"), M("activation", "relu3"), M("scale_weight", "conv1.weight"),
        M("scale_weight", "fc3.weight"),
    ],
    "resnet18": [
        M("stride", "conv1"), M("padding", "layer1.0.conv1"), M("stride", "layer2.0.conv1"), M("padding", "maxpool"),
        M("groups", "layer1.1.conv2"), M("groups", "layer3.0.downsample.0"), M("eps", "layer2.0.bn2"),
        M("activation", "layer3.1"), M("bias", "fc"), M("drop_add", "layer1.0.add", expect="layer1.0"),
        M("drop_add", "layer4.1.add", expect="layer4.1"), M("scale_weight", "layer4.0.downsample.1.weight"),
    ],
    "yolov5n": [
        M("stride", "model.0.conv"), M("padding", "model.1.conv"), M("groups", "model.2.cv1.conv"),
        M("eps", "model.3.bn"), M("activation", "model.4.cv1"), M("drop_add", "model.2.m.0"),
        M("drop_add", "model.6.m.1"), M("swap_concat", "model.12"), M("bias", "model.24.m.1"),
        M("swap_concat", "model.2.cat", expect="model.2.cv3.conv"), M("scale_weight", "model.8.cv2.conv.weight"),
        M("stride", "model.7.conv"),
    ],
    "retinaface_mnet": [
        M("stride", "body.stage1.0.0"), M("padding", "body.stage2.0.3"), M("groups", "body.stage1.1.0"),
        M("eps", "body.stage2.0.1"), M("activation", "body.stage1.0.2"), M("bias", "ClassHead.0.conv1x1"),
        M("drop_add", "fpn.add2", expect="fpn.merge2.0"), M("swap_concat", "ssh1.cat", expect="ssh1"),
        M("scale_weight", "fpn.output1.0.weight"),
    ],
    "squeezenet1_1": [
        M("swap_concat", "features.3"), M("swap_concat", "features.12"), M("stride", "features.2"),
        M("padding", "features.4.expand3x3"), M("activation", "features.6.squeeze_activation"),
        M("bias", "features.9.expand1x1"), M("scale_weight", "classifier.1.weight"),
    ],
}  # fmt: skip


@pytest.fixture
def model(request):
    return _model(request.param)


@functools.cache
def _model(name: str):
    """``check_netdef``'s arguments for one model, made once: netdef, parsed check options, random weights, cfg with
    its small input size, no sub-network, the PyTorch model."""
    spec, family, options, size = MODELS[name]
    torch_model = model_sources.build_model(spec, seed=11)
    state = model_sources.state_dict_for_wts(torch_model, spec)
    rng = np.random.default_rng(11)
    for key in [k for k in state if k.endswith(".bias") and not np.any(state[k])]:  # a zero bias hides a dropped one
        state[key] = rng.normal(0, 0.1, state[key].shape).astype(np.float32)
    weights = wts.WeightMap(state)
    nd = netdefs.load(family)
    args = cli._parser(nd).parse_args(["check", "-w", "(in memory)", *options])
    cfg = cli.configure(nd, args, weights)
    if size is not None:
        cfg.input_size = size
    return nd, args, weights, cfg, None, nd.torch.model(cfg, weights)  # one PyTorch model for every mutation


def cases():
    return [pytest.param(name, m, id=f"{name}-{m}") for name, ms in MUTATIONS.items() for m in ms]


@pytest.mark.parametrize("model", list(MODELS), indirect=True)
def test_the_unchanged_network_passes(model):
    result = cli.check_netdef(*model)
    assert result.passed, result.table()


@pytest.mark.parametrize("model, mutation", [(c.values[0], c.values[1]) for c in cases()],
                         ids=[c.id for c in cases()], indirect=["model"])  # fmt: skip
def test_check_names_exactly_the_changed_layer(model, mutation):
    with applied(mutation) as hits:
        try:
            result = cli.check_netdef(*model)
        except UserError as exc:  # refused while defining: the message names the layer
            assert hits, f"{mutation} changed nothing"
            assert mutation.expected in str(exc), str(exc)
            return
    assert hits, f"{mutation} changed nothing"
    assert not result.passed, result.table()
    assert result.first_divergent == mutation.expected, result.table()
    row = result.divergent_row()
    earlier = [r for r in result.layers if r.index is not None and r.index < row.index]
    assert all(r.passed is not False for r in earlier), result.table()
