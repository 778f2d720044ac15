"""The pieces the classic classifiers share (netdefs/imagenet.py, common.adaptive_avg_pool) and ``check``
pointing at a deliberately broken resnet block -- the walk-through of docs/netdefs.md."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from netdefs import imagenet, resnet
from netdefs.common import adaptive_avg_pool, conv_bn_act
from trtx import check, reference
from trtx.net import Net, NetdefError

REPO = Path(__file__).resolve().parents[1]
CFG = SimpleNamespace(resize=256, input_size=224, num_classes=1000)


def test_class_names_are_torchvisions():
    from torchvision.models import ResNet18_Weights

    assert list(imagenet.class_names()) == list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert imagenet.class_name(0) == "tench" and imagenet.class_name(3, num_classes=10) == "class 3"


@pytest.mark.parametrize("shape", [(100, 150), (300, 200), (256, 256), (240, 1000), (257, 255), (1080, 810)])
def test_preprocessing_equals_torchvision_transforms(shape):
    """Down- and upscaling, both orientations, odd sizes: bit for bit what IMAGENET1K_V1.transforms() gives."""
    from torchvision.models import ResNet18_Weights

    rng = np.random.default_rng(sum(shape))
    bgr = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    bgr[: shape[0] // 2] //= 3  # some structure, not only noise
    ours = imagenet.preprocess_image(bgr, CFG)
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)
    theirs = ResNet18_Weights.IMAGENET1K_V1.transforms()(rgb).numpy()
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)


def test_preprocess_rejects_what_is_not_a_bgr_image():
    with pytest.raises(NetdefError, match="HxWx3 uint8 BGR"):
        imagenet.preprocess_image(np.zeros((10, 10), np.uint8), CFG)


def test_postprocess_top5_summary_json_render():
    prob = np.full((2, 1000), 1e-4, np.float32)
    prob[0, [5, 9, 1, 700, 3]] = [0.5, 0.2, 0.1, 0.05, 0.01]
    prob[1, 999] = 0.9
    results = imagenet.postprocess({"prob": prob}, None, CFG)
    assert [i for i, _, _ in results[0]] == [5, 9, 1, 700, 3]
    assert results[1][0][:2] == (999, "toilet tissue") and [i for i, _, _ in results[1][1:]] == [0, 1, 2, 3]
    assert imagenet.summary(results[0], CFG).startswith("electric ray (5) 0.5000, ostrich (9) 0.2000, ")
    assert imagenet.result_json(results[0], CFG)["top5"][0] == {"class": 5, "name": imagenet.class_name(5), "prob": 0.5}
    image = np.zeros((480, 640, 3), np.uint8)
    drawn = imagenet.render(image, results[0], CFG)
    assert drawn.shape == image.shape and drawn.any() and not image.any()


def test_check_extra_rows():
    ref = torch.softmax(torch.linspace(0, 8, 1000)[None], dim=1)
    good = imagenet.check_extra(CFG, {"prob": ref.clone()}, {"prob": ref})
    assert [(name, ok) for name, ok, _ in good] == [("top5[0]", True), ("logits[0] not constant", True)]
    swapped = ref.clone()
    swapped[0, [999, 998]] = swapped[0, [998, 999]]
    assert imagenet.check_extra(CFG, {"prob": swapped}, {"prob": ref})[0][1] is False
    flat = torch.full((1, 1000), 1e-3)
    assert imagenet.check_extra(CFG, {"prob": flat}, {"prob": flat})[1][1] is False
    # reduced precision compares the top-1 class only; a near tie (here 0.8 %) may flip, a clear loss may not
    tail = ref.clone()
    tail[0, [990, 991]] = tail[0, [991, 990]]
    assert imagenet.check_extra(CFG, {"prob": tail}, {"prob": ref}, precision="fp16")[0][:2] == ("top1[0]", True)
    assert imagenet.check_extra(CFG, {"prob": swapped}, {"prob": ref}, precision="fp16")[0][1] is True
    far = ref.clone()
    far[0, [999, 900]] = far[0, [900, 999]]
    assert imagenet.check_extra(CFG, {"prob": far}, {"prob": ref}, precision="int8")[0][1] is False


def test_configure_names_the_missing_classifier():
    from netdefs import alexnet

    with pytest.raises(NetdefError, match="'classifier.6.bias'.*torchvision alexnet"):
        alexnet.configure(argparse.Namespace(arch="alexnet"), {"fc.bias": np.zeros(10)})


@pytest.mark.parametrize("size, out", [(7, 7), (14, 7), (12, 6)])
def test_adaptive_avg_pool(size, out):
    net = Net({})
    x = net.input("x", (-1, 4, size, size))
    net.output(adaptive_avg_pool(net, x, "avgpool", out), "y")
    feed = torch.randn(2, 4, size, size)
    got = reference.execute(net.network, {"x": feed})["y"]
    torch.testing.assert_close(got, torch.nn.functional.adaptive_avg_pool2d(feed, out), rtol=1e-6, atol=1e-6)


def test_adaptive_avg_pool_refuses_unequal_windows():
    net = Net({})
    with pytest.raises(NetdefError, match=r"avgpool: AdaptiveAvgPool2d\(7\) of a 13x13 input"):
        adaptive_avg_pool(net, net.input("x", (-1, 4, 13, 13)), "avgpool", 7)


def test_check_points_at_the_wrong_layer(monkeypatch):
    """A BasicBlock that forgets its first ReLU: every layer up to ``layer1.0.bn1`` matches, ``layer1.0.conv2``
    (whose input lacks the ReLU) is the first divergent one."""
    from netdefs.sources import build_model

    model = build_model("torchvision:resnet18", seed=0)
    weights = {k: v.detach().numpy().reshape(-1).copy() for k, v in model.state_dict().items()}

    def buggy_basic_block(net, x, path, stride, cfg):
        out = conv_bn_act(net, x, conv=f"{path}.conv1", bn=f"{path}.bn1", act=None, stride=stride)  # no ReLU!
        out = conv_bn_act(net, out, conv=f"{path}.conv2", bn=f"{path}.bn2", act=None)
        return resnet.activation(net, resnet.add(net, out, resnet.downsample(net, x, path, stride), f"{path}.add"),
                                 "relu", path)  # fmt: skip

    monkeypatch.setitem(resnet.BLOCKS, "basic", buggy_basic_block)
    cfg = resnet.configure(argparse.Namespace(arch="resnet18"), weights)
    net = Net(weights, name="resnet18")
    resnet.define(net, cfg)
    side = resnet.NETDEF.torch
    result = check.compare(net, side.model(cfg, weights), side.feeds(cfg, None, 1, 0), forward=side.forward)
    rows = {r.name: r for r in result.layers}
    assert not result.passed and result.first_divergent == "layer1.0.conv2"
    assert rows["layer1.0.bn1"].passed and rows["maxpool"].passed and not rows["layer1.0.conv2"].passed
    assert "first divergent: layer1.0.conv2" in result.table()


def test_deploy_time_imports_no_torch():
    """The netdefs and their infer hooks run where torch is not installed (deploy time)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from netdefs import alexnet, imagenet, mnasnet, mobilenet, resnet, shufflenet, squeezenet, vgg\n"
        "from netdefs import __main__\n"
        "cfg = resnet.configure(type('A', (), {'arch': 'resnet50'})(), None, {'num_classes': 1000})\n"
        "app = resnet.NETDEF.app\n"
        "feeds, ctx = app.preprocess([np.zeros((300, 400, 3), np.uint8)], cfg)\n"
        "prob = np.full((1, 1000), 1e-3, np.float32)\n"
        "print(app.summary(app.postprocess({'prob': prob}, ctx, cfg)[0], cfg))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("tench (0) 0.0010, goldfish (1) 0.0010")


@pytest.mark.parametrize("family", ["resnet", "mobilenet", "shufflenet", "squeezenet", "vgg"])
def test_every_arch_accepts_its_own_weights_only(family):
    """``configure`` reads the structure from the weights: torchvision's state_dict of each arch is accepted
    for that arch and refused, in one line naming --arch, for every other arch of the family."""
    import importlib

    import torchvision

    nd = importlib.import_module(f"netdefs.{family}")
    for arch in nd.ARCHS:
        with torch.device("meta"):
            state = torchvision.models.get_model(arch).state_dict()
        weights = {k: np.broadcast_to(np.float32(0), (v.numel(),)) for k, v in state.items()}
        for other in nd.ARCHS:
            if other == arch:
                assert nd.configure(argparse.Namespace(arch=other), weights).arch == arch
            else:
                with pytest.raises(NetdefError, match=rf"^weights have .*; {other} has .* \(check --arch\)$"):
                    nd.configure(argparse.Namespace(arch=other), weights)
