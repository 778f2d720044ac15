"""INT8 end to end on LeNet: calibration through the reference executor, Q/DQ network, cache reuse."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

import wts
from netdefs import lenet
from trtx import calibrate, reference
from trtx.build import build_serialized
from trtx.net import Net
from trtx.quant import CalibrationError


@pytest.fixture(scope="module")
def lenet_files(tmp_path_factory, make_calibration_folder):
    tmp = tmp_path_factory.mktemp("lenet")
    torch.manual_seed(0)
    model = lenet.source_model()
    weights_path = tmp / "lenet.wts"
    wts.save({k: v.detach().numpy().reshape(-1) for k, v in model.state_dict().items()}, weights_path)
    return weights_path, make_calibration_folder(tmp)


def test_int8_lenet_tracks_fp32(lenet_files):
    weights_path, images = lenet_files
    weights = wts.load(weights_path)
    cfg = lenet.configure(argparse.Namespace(arch="lenet5"), weights)
    rng = np.random.default_rng()
    feeds = [{"data": rng.uniform(0, 1, (1, 1, 32, 32)).astype(np.float32)} for _ in range(6)]
    amax = calibrate.collect(lambda net: lenet.define(net, cfg), weights, feeds, method="entropy")
    assert set(amax) == {"data", "pool1", "flatten", "relu3", "relu4"}
    fp32, int8 = Net(weights), Net(weights, precision="int8", calibration=amax)
    lenet.define(fp32, cfg)
    lenet.define(int8, cfg)
    x = {"data": rng.uniform(0, 1, (4, 1, 32, 32)).astype(np.float32)}
    a = reference.execute(fp32.network, x)["prob"]
    b = reference.execute(int8.network, x)["prob"].float()
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99
    assert not torch.equal(a, b)  # Q/DQ really changed the numbers
    assert len(build_serialized(int8)) > 10_000


def test_calibration_cache_is_reused_and_invalidated(lenet_files, tmp_path, capsys):
    weights_path, images = lenet_files
    weights = wts.load(weights_path)
    cfg = lenet.configure(argparse.Namespace(arch="lenet5"), weights)
    cache = tmp_path / "calib.json"
    first = calibrate.for_netdef(lenet.NETDEF, cfg, weights, str(weights_path), calib=str(images), cache=str(cache))
    assert cache.exists()
    again = calibrate.for_netdef(lenet.NETDEF, cfg, weights, str(weights_path), calib=None, cache=str(cache))
    assert again == pytest.approx(first)
    other = tmp_path / "other.wts"
    wts.save({k: np.asarray(weights[k]) * 1.5 for k in weights}, other)
    with pytest.raises(CalibrationError, match="other weights"):
        calibrate.for_netdef(lenet.NETDEF, cfg, wts.load(other), str(other), calib=None, cache=str(cache))
    recomputed = calibrate.for_netdef(
        lenet.NETDEF, cfg, wts.load(other), str(other), calib=str(images), cache=str(cache)
    )
    assert "recalibrating" in capsys.readouterr().err
    assert recomputed != pytest.approx(first)
