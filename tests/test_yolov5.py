"""netdefs/yolov5 end to end on the CPU: gen_wts -> build (TensorRT-RTX builder) -> check (reference executor vs
the yolov5 package's PyTorch model, every named layer, detections after NMS) -> infer; errors; dynamic batch.

Weights are random (gen_wts --random-init). Their scores are tiny (yolov5's initial biases), so detections are
compared at --conf 1e-4; the inputs are small (320, cls 224) to keep the suite fast -- the network code is the
same at any size (640 and the large variants: tests/test_yolov5_slow.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import gen_wts
from netdefs import sources as model_sources
from netdefs import yolov5
from netdefs.detection.boxes import Detections, xywh2xyxy
from netdefs.detection.compare import compare_detections
from netdefs.yolov5 import app, config, decode, source, torch_side
from trtx import cli, sources

ASSETS = sources.sample_images()
BUS, ZIDANE = str(ASSETS / "bus.jpg"), str(ASSETS / "zidane.jpg")
SPECS = ["yolov5n", "yolov5s", "yolov5n-seg", "yolov5s-seg", "yolov5n-cls", "yolov5s-cls"]
CONF = "0.0001"


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(yolov5.NETDEF, argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, str]:
    """gen_wts.py --model yolov5:<spec> --random-init, for every spec of the suite (lazily, once each)."""
    folder = tmp_path_factory.mktemp("yolov5_wts")
    made: dict[str, str] = {}

    class Lazy(dict):
        def __missing__(self, spec):
            path = folder / f"{spec}.wts"
            assert gen_wts.main(["-m", f"yolov5:{spec}", "--random-init", "-o", str(path), "-q"]) == 0
            self[spec] = str(path)
            return self[spec]

    yield Lazy(made)
    shutil.rmtree(folder)


def _imgsz(spec: str) -> str:
    return "224" if spec.endswith("-cls") else "320"


@pytest.mark.parametrize("spec", SPECS)
def test_build_then_check(spec, weights, tmp_path, capsys):
    """build gives an engine + metadata; check passes: outputs and every named layer within 1e-4 of PyTorch,
    raw head convs too, and the detections after NMS are the same."""
    w = weights[spec]
    engine = tmp_path / f"{spec}.engine"
    rc, out, err = run_cli(["build", "-w", w, "-o", str(engine), "--imgsz", _imgsz(spec)], capsys)
    assert rc == 0, err
    assert engine.stat().st_size > 1_000_000
    meta = json.loads(Path(str(engine) + ".json").read_text())
    task = "cls" if spec.endswith("-cls") else "seg" if spec.endswith("-seg") else "detect"
    y = meta["yolov5"]
    assert (y["task"], y["num_classes"], y["variant"]) == (task, 1000 if task == "cls" else 80, spec[6])
    assert meta["weights"]["sha256"] and meta["backend"]["name"] and meta["unused_weights"] == []
    assert [i["name"] for i in meta["inputs"]] == ["images"]
    if task == "detect":
        assert y["strides"] == [8, 16, 32] and y["anchors"][0] == [[10, 13], [16, 30], [33, 23]]
        assert y["postprocess"]["nms"] == "after-engine"  # TensorRT-RTX's builder has no NMS runner
        assert [o["name"] for o in meta["outputs"]] == ["boxes", "scores", "classes"]
    if task == "seg":
        assert y["num_masks"] == 32 and [o["name"] for o in meta["outputs"]][-1] == "proto"
    from_meta = config.configure(argparse.Namespace(command="infer", conf=None), None, meta)  # infer -e
    size = int(_imgsz(spec))
    assert (from_meta.task, from_meta.num_classes, from_meta.imgsz) == (task, y["num_classes"], (size, size))

    rc, out, err = run_cli(
        ["check", "-w", w, "--image", BUS, "--imgsz", _imgsz(spec), "--conf", CONF, "--json"], capsys
    )
    result = json.loads(out)
    assert rc == 0 and result["passed"], out[-3000:]
    assert result["max_rel_err"] <= 1e-4
    layers = {row["name"]: row for row in result["layers"]}
    compared = [row for row in result["layers"] if row["passed"] is not None]
    assert len(compared) > 100
    if task != "cls":
        head = [row for name, row in layers.items() if name.startswith("model.24.m.")]
        assert len(head) == 3 and all(r["passed"] and r["max_rel_err"] <= 1e-4 for r in head)
        extras = {e["name"]: e for e in result["extras"]}
        nms_row = extras["detections after NMS"]
        assert nms_row["passed"] and "identical" in nms_row["message"] and not nms_row["message"].startswith("0 ")
    else:
        assert result["extras"][0]["passed"]


def test_cli_chain_gen_wts_build_check_subprocess(tmp_path):
    """The commands users type, as separate processes: gen_wts.py, then netdefs/yolov5.py build (default 640)."""
    import subprocess
    import sys

    w = tmp_path / "yolov5n.wts"
    subprocess.run([sys.executable, "gen_wts.py", "-m", "yolov5:yolov5n", "--random-init", "-o", str(w)], check=True,
                   capture_output=True)  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "netdefs/yolov5.py", "build", "-w", str(w), "-o", str(tmp_path / "n.engine")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "engine" in proc.stdout and (tmp_path / "n.engine").stat().st_size > 1_000_000
    meta = json.loads((tmp_path / "n.engine.json").read_text())
    assert meta["yolov5"]["imgsz"] == [640, 640] and meta["outputs"][0]["shape"] == [-1, 25200, 4]


def _net(weights_path: str, **flags):
    import wts
    from trtx.net import Net

    w = wts.load(weights_path)
    cfg = config.configure(argparse.Namespace(command="check", **flags), w)
    net = Net(w)
    decode.define(net, cfg)
    return net, cfg, w


def test_dynamic_batch_builds_and_batch3_equals_three_batch1_runs(weights, tmp_path, capsys):
    from trtx import reference

    w = weights["yolov5n"]
    rc, _, err = run_cli(["build", "-w", w, "-o", str(tmp_path / "b.engine"), "--imgsz", "256", "--batch", "1:4:16"],
                         capsys)  # fmt: skip
    assert rc == 0, err
    meta = json.loads((tmp_path / "b.engine.json").read_text())
    assert meta["batch"] == {"min": 1, "opt": 4, "max": 16} and meta["inputs"][0]["shape"][0] == -1

    net, cfg, _ = _net(w, imgsz="256", conf=1e-4)
    import cv2

    images = [cv2.imread(BUS), cv2.imread(ZIDANE), cv2.imread(BUS)[::-1, ::2].copy()]
    feeds, ctx = app.preprocess(images, cfg)
    batch = reference.execute(net.network, feeds)
    singles = [reference.execute(net.network, {"images": feeds["images"][i : i + 1]}) for i in range(3)]
    for name in ("boxes", "scores", "classes"):
        together = batch[name].numpy()
        apart = np.concatenate([s[name].numpy() for s in singles])
        scale = np.abs(apart).max()
        assert np.abs(together - apart).max() <= 1e-5 * scale, name
    for i, single in enumerate(singles):
        together = {k: v.numpy()[i : i + 1] for k, v in batch.items()}
        ours = app.detections_from_outputs(together, cfg)
        passed, message = compare_detections(ours, torch_side.candidates(single), cfg.rule)
        assert passed and not message.startswith("0 "), message


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--classes", "20"], "--classes 20, but the weights contain 80 classes (model.24.m.0.bias has 255 values"),
        (["--imgsz", "600"], "--imgsz 600: the input size must be N or H,W with each a positive multiple of 32"),
        (["--imgsz", "640,100"], "multiple of 32"),
        (["--variant", "m"], "--variant m, but the weights contain yolov5n"),
        (["--task", "seg"], "--task seg, but the weights contain a detect model"),
        (["--postprocess", "plugin"], "needs plugin layers"),
        (["--conf", "2"], "argument --conf: '2' must lie in [0, 1]"),
        (["--max-det", "0"], "argument --max-det: '0' must be a whole number >= 1"),
    ],
)
def test_bad_flags_give_one_line(argv, message, weights, tmp_path, capsys):
    from trtx_base import backend

    if "plugin" in argv and backend.get().has_plugin_layers:
        pytest.skip("this backend has plugin layers")
    try:
        rc, out, err = run_cli(["build", "-w", weights["yolov5n"], "-o", str(tmp_path / "x.engine"), *argv], capsys)
    except SystemExit as exc:  # argparse refused the flag
        rc, err = exc.code, capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "x.engine").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and (lines[0].startswith("error: ") or ": error: " in lines[0]) and message in lines[0], err


def test_names_file_must_match_the_weights(weights, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    rc, _, err = run_cli(["build", "-w", weights["yolov5n"], "-o", str(tmp_path / "x.engine"), "--names",
                          str(names)], capsys)  # fmt: skip
    assert rc == 2 and "lists 3 names but the weights have 80 classes" in err and len(err.strip().splitlines()) == 1


def test_p6_weights_need_multiples_of_64(weights, tmp_path, capsys):
    w = tmp_path / "n6.wts"
    assert gen_wts.main(["-m", "yolov5:yolov5n6", "--random-init", "-o", str(w), "-q"]) == 0
    rc, _, err = run_cli(["build", "-w", str(w), "-o", str(tmp_path / "x.engine"), "--imgsz", "352"], capsys)
    assert rc == 2 and "multiple of 64" in err
    rc, out, err = run_cli(["build", "-w", str(w), "-o", str(tmp_path / "n6.engine"), "--imgsz", "256"], capsys)
    assert rc == 0, err
    meta = json.loads((tmp_path / "n6.engine.json").read_text())["yolov5"]
    assert meta["variant"] == "n6" and meta["strides"] == [8, 16, 32, 64] and len(meta["anchors"]) == 4


def _pytorch_pipeline(model, image_path: str, imgsz: int, conf: float, nm: int = 0):
    """yolov5's detect.py: letterbox(auto=False), model, non_max_suppression; the detections and the candidates
    its NMS chose from (boxes, obj x best class score, that class), in input pixels; and scale_boxes."""
    import cv2
    import torch
    from yolov5.utils.augmentations import letterbox
    from yolov5.utils.general import non_max_suppression, scale_boxes

    im0 = cv2.imread(image_path)
    im = letterbox(im0, (imgsz, imgsz), auto=False)[0]
    t = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)[::-1])).float()[None] / 255
    with torch.no_grad():
        pred = model(t)[0]
    det = non_max_suppression(pred, conf, 0.45, max_det=300, nm=nm)[0].numpy()
    pred = pred[0].numpy()
    scores = pred[:, 5 : pred.shape[1] - nm] * pred[:, 4:5]
    candidates = Detections(xywh2xyxy(pred[:, :4]), scores.max(1), scores.argmax(1))
    to_image = lambda boxes: scale_boxes(t.shape[2:], torch.tensor(boxes), im0.shape).numpy()  # noqa: E731
    return Detections(det[:, :4], det[:, 4], det[:, 5]), candidates, to_image


@pytest.mark.parametrize("spec", ["yolov5n", "yolov5n-seg"])
def test_infer_reference_matches_pytorch(spec, weights, tmp_path, capsys):
    """infer --backend reference writes annotated images + COCO-style JSON: the network's detections (a greedy NMS
    of yolov5's own candidates up to near-tied scores, as yolov5's own pipeline is) on the original image."""
    import cv2

    from trtx import reference

    out_dir = tmp_path / "out"
    rc, out, err = run_cli(["infer", "-w", weights[spec], BUS, ZIDANE, "-o", str(out_dir), "--backend", "reference",
                            "--imgsz", "320", "--conf", CONF], capsys)  # fmt: skip
    assert rc == 0, err
    assert "bus.jpg: " in out and "zidane.jpg: " in out
    net, cfg, w = _net(weights[spec], imgsz="320", conf=1e-4)
    model = torch_side.torch_model(cfg, w)
    for name, path in (("bus", BUS), ("zidane", ZIDANE)):
        doc = json.loads((out_dir / f"{name}.json").read_text())
        image = cv2.imread(str(out_dir / f"{name}.jpg"))
        assert image is not None and image.shape == cv2.imread(path).shape
        assert (doc["height"], doc["width"]) == image.shape[:2]
        dets = doc["detections"]
        assert dets and all(set(d) >= {"bbox", "score", "category_id", "category"} for d in dets)
        theirs, candidates, to_image = _pytorch_pipeline(model, path, 320, 1e-4, nm=cfg.num_masks)
        feeds, _ = app.preprocess([cv2.imread(path)], cfg)
        ours = app.detections_from_outputs({k: v.numpy() for k, v in reference.execute(net.network, feeds).items()},
                                           cfg)[0]  # fmt: skip
        boxes = [[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]] for d in dets]
        np.testing.assert_allclose(boxes, to_image(ours.boxes), atol=1e-3)  # the JSON holds these detections
        assert [d["score"] for d in dets] == ours.scores.tolist()
        assert [d["category_id"] for d in dets] == ours.classes.tolist()
        passed, message = compare_detections([ours], [candidates], cfg.rule)
        assert passed, message
        assert compare_detections([theirs], [candidates], cfg.rule)[0]  # yolov5's own NMS, held to the same
        if cfg.task == "seg":
            assert all("segmentation" in d and d["area"] >= 0 for d in dets)


def test_engine_infer_says_why_it_cannot_run_here(weights, tmp_path, capsys):
    from trtx_base import backend

    if backend.get().can_execute()[0]:
        pytest.skip("this machine executes engines")
    engine = tmp_path / "n.engine"
    assert run_cli(["build", "-w", weights["yolov5n"], "-o", str(engine), "--imgsz", "128"], capsys)[0] == 0
    rc, out, err = run_cli(["infer", "-e", str(engine), BUS, "-o", str(tmp_path / "o")], capsys)
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith("error: ") and "cannot execute engines on this machine" in err


def test_postprocess_none_outputs_the_raw_head_and_checks(weights, capsys):
    rc, out, err = run_cli(["check", "-w", weights["yolov5n"], "--imgsz", "128", "--postprocess", "none", "--json",
                            "--no-layers"], capsys)  # fmt: skip
    result = json.loads(out)
    assert rc == 0 and [o["name"] for o in result["outputs"]] == ["raw0", "raw1", "raw2"]
    assert result["max_rel_err"] <= 1e-4 and result["outputs"][0]["shape"] == [1, 255, 16, 16]


def test_tensorrt_nms_layer_network_matches_cpu_nms(weights):
    """The graph built where the builder implements INMSLayer (full TensorRT): run here by the reference executor,
    its detections equal the after-engine CPU NMS. TensorRT-RTX's builder refuses it, which is why RTX engines
    end at the decoded boxes."""
    from trtx import reference
    from trtx.build import BuildError, BuildOptions, build_serialized
    from trtx_base import backend

    net, cfg, _ = _net(weights["yolov5n"], imgsz="128", conf=1e-4)
    native = {k: v.numpy() for k, v in reference.execute(net.network, _feeds(cfg)).items()}
    cfg.nms_in_engine = True
    from trtx.net import Net

    nms_net = Net(net.weights)
    decode.define(nms_net, cfg)
    outputs = [nms_net.network.get_output(i).name for i in range(nms_net.network.num_outputs)]
    assert outputs == ["det_batch", "det_index", "det_boxes", "det_scores", "det_classes"]
    got = {k: v.numpy() for k, v in reference.execute(nms_net.network, _feeds(cfg)).items()}
    in_engine = app.detections_from_outputs(got, cfg, batch=2)
    after = app.detections_from_outputs(native, cfg)
    passed, message = compare_detections(in_engine, torch_side.candidates(native), cfg.rule)
    assert passed and len(after[0]) > 0, message
    if not backend.get().has_nms_runner:
        with pytest.raises(BuildError, match="post.nms has no runners"):
            build_serialized(nms_net, BuildOptions(progress=False))


def _feeds(cfg, batch: int = 2):
    import cv2

    return app.preprocess([cv2.imread(BUS), cv2.imread(ZIDANE)][:batch], cfg)[0]


def test_plugin_records_give_the_same_detections(weights):
    """--postprocess plugin's outputs (yolo_decode + nms records), computed by the plugins' torch references on
    the raw head, unpack to the detections of the native path (NMS exactly per class on both sides)."""
    import torch

    from plugins import nms as nms_plugin
    from plugins import yolo_decode
    from trtx import reference

    net, cfg, w = _net(weights["yolov5n"], imgsz="128", conf=1e-4, postprocess="none")
    raw = reference.execute(net.network, _feeds(cfg))
    pairs = []
    for i in range(3):
        anchors = [float(v) for pair in cfg.anchors[i] for v in pair]
        r = raw[f"raw{i}"]
        pairs += yolo_decode.reference([r], num_classes=80, anchors=anchors, stride=float(cfg.strides[i]),
                                       conf_threshold=cfg.conf, max_det=r.shape[1] // 85 * r.shape[2] * r.shape[3],
                                       level=i)  # fmt: skip
    num, dets = nms_plugin.reference(pairs, iou_threshold=cfg.iou, score_threshold=cfg.conf, max_det=cfg.max_det)
    plugin_dets = app.detections_from_outputs({"num": num.numpy(), "dets": dets.numpy()}, cfg)

    native_net, native_cfg, _ = _net(weights["yolov5n"], imgsz="128", conf=1e-4)
    native = {k: v.numpy() for k, v in reference.execute(native_net.network, _feeds(cfg)).items()}
    cpu = app.detections_from_outputs(native, native_cfg, class_offset=None)
    exactly_per_class = dataclasses.replace(cfg.rule, class_offset=None)
    passed, message = compare_detections(plugin_dets, torch_side.candidates(native), exactly_per_class)
    assert passed and len(cpu[0]) > 0, message
    assert isinstance(num, torch.Tensor)


def test_custom_depth_width_classes_anchors(tmp_path, capsys):
    """A model with its own depth/width multiples, 7 classes and anchors: all read from the weights."""
    import yaml

    import wts

    d = yaml.safe_load(source.yaml_path("yolov5s").read_text())
    d.update(depth_multiple=0.5, width_multiple=0.3, nc=7)
    d["anchors"] = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]
    sources.prepare_environment()
    with sources.quiet():
        import torch
        from yolov5.models.yolo import DetectionModel

        torch.manual_seed(0)
        model = DetectionModel(d).eval()
    sources.randomize_norms(model, 0)
    path = tmp_path / "custom.wts"
    wts.save(model_sources.state_dict_for_wts(model, task="detect"), path)
    net, cfg, _ = _net(str(path), imgsz="128")
    assert (cfg.variant, cfg.num_classes, cfg.arch.repeats[2], cfg.arch.channels[0]) == ("custom", 7, 2, 24)
    assert cfg.anchors[2][2] == [459, 401]
    rc, out, err = run_cli(["check", "-w", str(path), "--imgsz", "128", "--image", BUS, "--json", "--conf", "0.001"],
                           capsys)  # fmt: skip
    result = json.loads(out)
    assert rc == 0 and result["passed"], out[-2000:]


def test_gpu_nms_packing_with_the_plugin_reference(weights, monkeypatch):
    """gpu_detections' records (boxes, score, class, box index) and unpacking, with the nms plugin's torch
    reference standing in for its kernels (tests/test_yolov5_gpu.py runs the kernels): equal to trtx.nms
    exactly per class, bit for bit."""
    import torch

    from plugins import nms as nms_plugin
    from trtx import reference

    net, cfg, _ = _net(weights["yolov5n"], imgsz="128", conf=1e-4)
    out = reference.execute(net.network, _feeds(cfg))
    monkeypatch.setattr(nms_plugin, "run", lambda inputs, **fields: nms_plugin.reference(inputs, **fields))
    packed = app.gpu_detections(out, cfg)
    exact = app.detections_from_outputs({k: v.numpy() for k, v in out.items()}, cfg, class_offset=None)
    assert all(len(d) for d in exact) and isinstance(out["scores"], torch.Tensor)
    for p, e in zip(packed, exact):
        for field in ("boxes", "scores", "classes", "index"):
            np.testing.assert_array_equal(getattr(p, field), getattr(e, field))


def test_unused_weights_are_listed(weights, tmp_path, capsys):
    import wts

    w = dict(wts.load(weights["yolov5n"]).items())
    w["model.25.extra.weight"] = np.ones(3, np.float32)
    w["ema.updates"] = np.ones(1, np.float32)
    path = tmp_path / "extra.wts"
    wts.save(w, path)
    rc, _, err = run_cli(["build", "-w", str(path), "-o", str(tmp_path / "e.engine"), "--imgsz", "64"], capsys)
    assert rc == 0
    assert "warning: 2 weight(s) never read by the netdef: ema.updates, model.25.extra.weight" in err
    unused = json.loads((tmp_path / "e.engine.json").read_text())["unused_weights"]
    assert unused == ["ema.updates", "model.25.extra.weight"]


def test_check_against_a_named_model_source(weights, capsys):
    """check --model SPEC: the comparison model built from a trtx.sources spec; a spec the weights do not fit is
    one line naming the first mismatches."""
    w = weights["yolov5n"]
    rc, out, err = run_cli(["check", "-w", w, "--model", "yolov5:yolov5n", "--imgsz", "128", "--no-layers"], capsys)
    assert rc == 0 and "PASSED" in out, out + err
    rc, out, err = run_cli(["check", "-w", w, "--model", "yolov5:yolov5s", "--imgsz", "128"], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: --model yolov5:yolov5s: weights from ")
    assert "model.0.conv.weight (1728 values, model needs 3456)" in lines[0]


def test_infer_cls_top5_matches_pytorch(weights, tmp_path, capsys):
    """yolov5-cls: classify_transforms (center crop, ImageNet mean/std), the network, softmax -> top-5 JSON equal to
    the PyTorch model's on the same crop; ImageNet class names by default."""
    import cv2
    import torch
    from yolov5.utils.augmentations import classify_transforms

    rc, out, err = run_cli(["infer", "-w", weights["yolov5n-cls"], BUS, "-o", str(tmp_path)], capsys)
    assert rc == 0, err
    doc = json.loads((tmp_path / "bus.json").read_text())
    _, cfg, w = _net(weights["yolov5n-cls"])
    model = torch_side.torch_model(cfg, w)
    with torch.no_grad():
        prob = torch.softmax(model(classify_transforms(224)(cv2.imread(BUS))[None]), 1)[0]
    top = torch.topk(prob, 5)
    assert [d["category_id"] for d in doc["top5"]] == top.indices.tolist()
    np.testing.assert_allclose([d["score"] for d in doc["top5"]], top.values.numpy(), rtol=1e-4)
    assert doc["top5"][0]["category"] == cfg.names[top.indices[0]] and cfg.names[0] == "tench"
