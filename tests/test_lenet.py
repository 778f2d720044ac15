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


def test_lenet_int8_network_has_qdq_and_builds():
    weights = _weights()
    cfg = lenet.configure(argparse.Namespace(arch="lenet5"), weights)
    fp32 = Net(weights)
    lenet.define(fp32, cfg)
    assert fp32.quant_inputs == ["data", "pool1", "flatten", "relu3", "relu4"]  # inputs of conv1/2, fc1/2/3
    int8 = Net(weights, precision="int8", calibration={name: 2.0 for name in fp32.quant_inputs})
    lenet.define(int8, cfg)
    types = [int8.network.get_layer(i).type for i in range(int8.network.num_layers)]
    trt = int8.trt
    assert types.count(trt.LayerType.QUANTIZE) == 10  # 5 activations + 5 per-channel weights
    assert len(build_serialized(int8)) > 10_000


def test_lenet_int8_without_calibration_names_the_tensor():
    import pytest

    from trtx.net import NetdefError

    weights = _weights()
    cfg = lenet.configure(argparse.Namespace(arch="lenet5"), weights)
    with pytest.raises(NetdefError, match="'data'.*conv1"):
        lenet.define(Net(weights, precision="int8"), cfg)
