"""The LeNet-5 netdef: built by the real builder through the shared CLI path."""

from __future__ import annotations

import argparse

import numpy as np

from netdefs import lenet
from trtx.build import BatchSpec, BuildOptions, build_serialized
from trtx.net import Net


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(seed)
    model = lenet.source_model()
    return {k: v.detach().numpy().reshape(-1).astype(np.float32) for k, v in model.state_dict().items()}


def test_lenet_builds_dynamic_batch():
    weights = _weights()
    cfg = lenet.configure(argparse.Namespace(arch="lenet5"), weights)
    net = Net(weights, name="lenet5")
    lenet.define(net, cfg)
    engine = build_serialized(net, BuildOptions(batch=BatchSpec.parse("1:4:8")))
    assert len(engine) > 10_000
    assert cfg.num_classes == 10
