"""The larger scales and reduced precisions (marker ``slow``): YOLOv8 / YOLO11 m, l and x built by TensorRT-RTX and
checked against the ultralytics model module by module; yolo11n at int8 with --int8-fallback (its sensitivity
pass runs the int8 network once per quantized tensor); the s scale of YOLO26 (detect, seg, pose, obb), YOLOv10 and
YOLO12, the layouts only larger scales have, YOLO12's other heads, YOLO26n for more seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gen_wts
from netdefs.ultralytics import NETDEF
from trtx import cli, sources

pytestmark = pytest.mark.slow
BUS = str(sources.sample_images() / "bus.jpg")
ZIDANE = str(sources.sample_images() / "zidane.jpg")


def _weights(spec: str, folder: Path) -> str:
    path = folder / f"{spec}.wts"
    assert gen_wts.main(["-m", f"ultralytics:{spec}", "--random-init", "-o", str(path), "-q"]) == 0
    return str(path)


@pytest.mark.parametrize(
    "spec", [f"{f}{s}" for f in ("yolov8", "yolo11") for s in "mlx"] + ["yolov8x-seg", "yolo11x-seg"]
)
def test_large_scales_build_and_check(spec, tmp_path, capsys):
    """m/l/x (YOLO11 m/l/x: every C3k2 holds C3k blocks, 512 max channels; the x scale's Segment too): built,
    then checked at 320."""
    w = _weights(spec, tmp_path)
    engine = tmp_path / f"{spec}.engine"
    assert cli.main(NETDEF, ["build", "-w", w, "-o", str(engine), "--imgsz", "320"]) == 0
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["ultralytics"]["scale"] == spec[len("yolov8") if spec.startswith("yolov8") else len("yolo11")]
    capsys.readouterr()
    rc = cli.main(NETDEF, ["check", "-w", w, "--image", BUS, "--imgsz", "320", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["passed"], json.dumps(result)[-3000:]
    compared = [r for r in result["layers"] if r["max_rel_err"] is not None]
    worst = max(compared, key=lambda r: r["max_rel_err"])
    print(f"\nRESULT {spec}: outputs max rel err {result['max_rel_err']:.2e}; {len(compared)} layers, max rel err "
          f"{worst['max_rel_err']:.2e} ({worst['name']})")  # fmt: skip
    assert result["max_rel_err"] <= 1e-4 and len(compared) > 250


def test_yolo11n_int8_with_fallback_builds(tmp_path, capsys, make_calibration_folder):
    w = _weights("yolo11n", tmp_path)
    engine = tmp_path / "yolo11n-int8.engine"
    argv = ["build", "-w", w, "-o", str(engine), "--imgsz", "64", "--precision", "int8", "--int8-fallback", "4",
            "--calib", str(make_calibration_folder(tmp_path))]  # fmt: skip
    assert cli.main(NETDEF, argv) == 0, capsys.readouterr().err
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["precision"] == "int8" and len(meta["int8"]["fp16_fallback"]) == 4
    assert meta["int8"]["quantized_tensors"] > 60


@pytest.mark.parametrize("seed", range(10))
def test_yolo11n_checks_for_seeds_0_to_9(seed):
    """Random weights of ten seeds: outputs and every module within 1e-4, the detections after NMS and
    ultralytics' own NMS both a greedy NMS of PyTorch's candidates (bus.jpg and zidane.jpg in one batch)."""
    import argparse

    import cv2

    import wts
    from netdefs import sources as model_sources
    from netdefs.ultralytics import app, config, decode, source, torch_side
    from trtx import check
    from trtx.net import Net

    m = model_sources.build_model("ultralytics:yolo11n", seed=seed)
    w = wts.WeightMap({**{k: v.numpy().reshape(-1).copy() for k, v in m.state_dict().items()}, **source.wts_extras(m)})
    cfg = config.configure(argparse.Namespace(command="check", imgsz="320"), w)
    net = Net(w)
    decode.define(net, cfg)
    zidane = str(sources.sample_images() / "zidane.jpg")
    feeds, _ = app.preprocess([cv2.imread(BUS), cv2.imread(zidane)], cfg)
    result = check.compare(net, torch_side.torch_model(cfg, w), feeds, forward=torch_side.torch_forward)
    assert result.passed and len(result.layers) > 250, result.table()[-3000:]
    cfg.conf = float(result.expected_outputs["scores"].max(-1).values.quantile(0.8))
    for name, passed, message in torch_side.check_extra(cfg, result.network_outputs, result.expected_outputs):
        assert passed and not message.startswith("0 "), (name, message)


# ---- YOLO26, YOLOv10, YOLO12 (tests/test_ultralytics_e2e.py: the n scale) ----------------------------------------
@pytest.mark.parametrize("spec", ["yolo26s", "yolo26s-seg", "yolo26s-pose", "yolo26s-obb", "yolov10s", "yolo12s"])
def test_s_scale_builds_and_checks(spec, tmp_path, capsys):
    """The s scale of the new generations: built for batch 1:4:8 and checked at 320 through the CLI -- every
    module, and the detections (the end-to-end heads' top-k, YOLO12's NMS) at a conf nearly every anchor passes."""
    w = _weights(spec, tmp_path)
    engine = tmp_path / f"{spec}.engine"
    assert cli.main(NETDEF, ["build", "-w", w, "-o", str(engine), "--imgsz", "320", "--batch", "1:4:8"]) == 0
    assert json.loads(Path(f"{engine}.json").read_text())["ultralytics"]["scale"] == "s"
    capsys.readouterr()
    rc = cli.main(NETDEF, ["check", "-w", w, "--image", BUS, "--imgsz", "320", "--json", "--conf", "0.00003"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["passed"], json.dumps(result)[-3000:]
    compared = [r for r in result["layers"] if r["max_rel_err"] is not None]
    assert result["max_rel_err"] <= 1e-4 and len(compared) > 250
    topk = [e for e in result["extras"] if e["name"].startswith("top-k ")]  # check's near-tie rows of each top-k
    extras = [e for e in result["extras"] if not e["name"].startswith("top-k ")]
    assert all(e["passed"] for e in topk), topk
    assert len(extras) == 2 and all("identical" in e["message"] for e in extras), extras


@pytest.mark.parametrize(
    "spec",
    ["yolov10m", "yolov10x", "yolo12l", "yolo26m", "yolo12n-seg", "yolo12n-pose", "yolo12n-obb", "yolo12n-cls"],
)
def test_other_layouts_check(spec, tmp_path):
    """What the n and s scales do not hold: YOLOv10's C2fCIB without large kernels (m) and at model.6 (x),
    YOLO12's A2C2f residual gamma and 1.2 MLP ratio (l), YOLO26's C3k blocks beside model.22's attention (m), and
    YOLO12's other heads; checked at 160 on bus.jpg and zidane.jpg."""
    import cv2

    from netdefs.ultralytics import app, torch_side
    from trtx import check

    net, cfg, w = _net(spec, tmp_path, "64" if spec.endswith("-cls") else "160")
    feeds, _ = app.preprocess([cv2.imread(BUS), cv2.imread(ZIDANE)], cfg)
    result = check.compare(net, torch_side.torch_model(cfg, w), feeds, forward=torch_side.torch_forward)
    assert result.passed, result.table()[-3000:]
    if spec == "yolo12l":
        assert cfg.arch.gamma == {6, 8} and "model.8" in {r.name for r in result.layers}
    if cfg.task != "cls":
        cfg.conf = float(result.expected_outputs["scores"].max(-1).values.quantile(0.8))
    for name, passed, message in torch_side.check_extra(cfg, result.network_outputs, result.expected_outputs):
        assert passed and not message.startswith("0 "), (name, message)


@pytest.mark.parametrize("seed", range(1, 5))
def test_yolo26n_checks_for_seeds_1_to_4(seed, tmp_path):
    """Random weights of other seeds: every module within 1e-4, the top-k a top-k of PyTorch's candidates."""
    import cv2

    from netdefs.ultralytics import app, torch_side
    from trtx import check

    net, cfg, w = _net("yolo26n", tmp_path, "160", seed)
    feeds, _ = app.preprocess([cv2.imread(BUS), cv2.imread(ZIDANE)], cfg)
    result = check.compare(net, torch_side.torch_model(cfg, w), feeds, forward=torch_side.torch_forward)
    assert result.passed and len(result.layers) > 250, result.table()[-3000:]
    cfg.conf = float(result.expected_outputs["scores"].max(-1).values.quantile(0.8))
    for name, passed, message in torch_side.check_extra(cfg, result.network_outputs, result.expected_outputs):
        assert passed and not message.startswith("0 "), (name, message)


def _net(spec: str, folder: Path, imgsz: str, seed: int = 0):
    import argparse

    import wts
    from netdefs.ultralytics import config, decode
    from trtx.net import Net

    path = folder / f"{spec}.wts"
    assert gen_wts.main(["-m", f"ultralytics:{spec}", "--random-init", "--seed", str(seed), "-o", str(path), "-q"]) == 0
    w = wts.load(path)
    cfg = config.configure(argparse.Namespace(command="check", imgsz=imgsz), w)
    net = Net(w)
    decode.define(net, cfg)
    return net, cfg, w
