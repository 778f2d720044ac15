"""netdefs/ultralytics (YOLOv8 and YOLO11, every task) on the CPU: what the weights contain, the network against the
ultralytics model module by module (reference executor), broken blocks named by check, one-line errors.

Weights are random (gen_wts --random-init, or the same state_dict in memory); inputs are small (320, cls 224) to
keep the suite fast -- the network code is the same at any size. Larger scales: tests/test_ultralytics_slow.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

import gen_wts
import wts
from netdefs import sources as model_sources
from netdefs.ultralytics import NETDEF, app, arch, config, decode, model, source, torch_side
from trtx import check, cli, sources
from trtx.net import Net, NetdefError

ASSETS = sources.sample_images()
BUS, ZIDANE = str(ASSETS / "bus.jpg"), str(ASSETS / "zidane.jpg")
N_MODELS = [f"{f}n{t}" for f in ("yolov8", "yolo11") for t in ("", "-seg", "-pose", "-obb", "-cls")]


def state_of(spec: str, seed: int = 0) -> dict[str, np.ndarray]:
    """What ``gen_wts.py --model ultralytics:<spec> --random-init --seed <seed>`` writes, in memory."""
    m = model_sources.build_model(f"ultralytics:{spec}", seed=seed)
    state = {k: v.detach().float().numpy().reshape(-1).copy() for k, v in m.state_dict().items()}
    return {**state, **source.wts_extras(m)}


@pytest.fixture(scope="module")
def states():
    cache: dict[str, dict] = {}

    class Lazy(dict):
        def __missing__(self, spec):
            self[spec] = state_of(spec)
            return self[spec]

    return Lazy(cache)


def _net(state: dict, **flags) -> tuple[Net, config.Config, wts.WeightMap]:
    w = wts.WeightMap(state)
    cfg = config.configure(argparse.Namespace(command="check", **{"imgsz": "320", **flags}), w)
    net = Net(w, name=cfg.model_name)
    decode.define(net, cfg)
    return net, cfg, w


def _check(state: dict, feeds=None, **flags) -> check.CheckResult:
    net, cfg, w = _net(state, **flags)
    feeds = feeds or torch_side.example_feeds(cfg, BUS, 1)
    return check.compare(net, torch_side.torch_model(cfg, w), feeds, forward=torch_side.torch_forward)


def test_scale_tables_are_the_yaml_files():
    """arch.SCALES / NOMINAL (what build needs without ultralytics) equal the installed yaml files."""
    import yaml

    root = sources.package_dir("ultralytics") / "cfg" / "models"
    for family, sub in (("yolov8", "v8"), ("yolo11", "11")):
        for task in arch.TASKS:
            d = yaml.safe_load((root / sub / f"{family}{arch.SUFFIX[task]}.yaml").read_text())
            key = f"{family}-cls" if task == "cls" and f"{family}-cls" in arch.SCALES else family
            assert {s: tuple(v) for s, v in d["scales"].items()} == arch.SCALES[key], (family, task)
            rows = d["backbone"] + d["head"]
            nominal = arch.NOMINAL_CLS[family] if task == "cls" else arch.NOMINAL[family]
            for i, (_, n, module, args) in enumerate(rows):
                if module in ("Conv", "C2f", "C3k2", "SPPF", "C2PSA"):
                    assert nominal[i] == (args[0], n if n > 1 else 0), (family, task, i)
            head = len(rows) - 1
            assert head == (arch.HEAD_CLS if task == "cls" else arch.HEAD)[family]


def test_models_are_every_family_task_and_scale():
    names = [
        m.name for m in NETDEF.models if m.name.startswith(("yolov8", "yolo11"))
    ]  # v10, 12, 26: test_ultralytics_e2e
    assert len(names) == 50 and "yolov8n" in names and "yolo11x-obb" in names and "yolov8s-cls" in names
    assert [m.name for m in NETDEF.models if m.default] == ["yolo11n"]
    m = next(m for m in NETDEF.models if m.name == "yolov8m-pose")
    assert m.options == ("--family", "yolov8", "--scale", "m", "--task", "pose")


@pytest.fixture(scope="module")
def weights(ultralytics_weights):
    """gen_wts.py --model ultralytics:<spec> --random-init, for every spec of the suite (lazily, once each)."""
    return ultralytics_weights


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(NETDEF, argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _imgsz(spec: str) -> str:
    return "224" if spec.endswith("-cls") else "320"


@pytest.mark.parametrize("spec", [*N_MODELS, "yolov8s", "yolo11s"])
def test_build_batch_1_and_dynamic(spec, weights, tmp_path, capsys):
    """build (TensorRT-RTX) for batch 1 and 1:4:8, with the metadata infer reads back (infer -e)."""
    w = weights[spec]
    task = next((t for t in ("seg", "pose", "obb", "cls") if spec.endswith(f"-{t}")), "detect")
    for batch in ("1", "1:4:8"):
        engine = tmp_path / f"{spec}-{batch.replace(':', '_')}.engine"
        rc, out, err = run_cli(["build", "-w", w, "-o", str(engine), "--imgsz", _imgsz(spec), "--batch", batch], capsys)
        assert rc == 0, err
        meta = json.loads(Path(f"{engine}.json").read_text())
        assert engine.stat().st_size > 1_000_000 and meta["unused_weights"] == []
        assert meta["batch"]["max"] == (8 if batch == "1:4:8" else 1)
    u = meta["ultralytics"]
    assert (u["model"], u["task"], u["postprocess"]["mode"]) == (spec, task, "none" if task == "cls" else "native")
    outputs = [o["name"] for o in meta["outputs"]]
    assert outputs == {"detect": ["boxes", "scores"], "seg": ["boxes", "scores", "masks", "proto"],
                       "pose": ["boxes", "scores", "keypoints"], "obb": ["boxes", "scores", "angles"],
                       "cls": ["logits", "prob"]}[task]  # fmt: skip
    from_meta = NETDEF.configure(argparse.Namespace(command="infer"), None, meta)  # infer -e
    kpt_shape = (17, 3) if task == "pose" else None
    assert (from_meta.task, from_meta.num_classes, from_meta.kpt_shape) == (task, u["num_classes"], kpt_shape)


@pytest.mark.parametrize("spec", ["yolo11n", "yolo11n-cls"])
def test_check_command(spec, weights, capsys):
    """``check --image bus.jpg --json``: passes, every module-named layer compared, the extra rows there."""
    rc, out, err = run_cli(["check", "-w", weights[spec], "--image", BUS, "--imgsz", _imgsz(spec), "--json",
                            "--conf", "0.00003"], capsys)  # fmt: skip
    result = json.loads(out)
    assert rc == 0 and result["passed"], out[-3000:]
    assert result["max_rel_err"] <= 1e-4 and len([r for r in result["layers"] if r["passed"]]) > 130
    extras = {e["name"]: e for e in result["extras"]}
    if spec == "yolo11n":
        assert extras["detections after NMS"]["passed"] and "identical" in extras["detections after NMS"]["message"]
        assert extras["ultralytics' non_max_suppression"]["passed"]
    else:
        assert extras["top5[0]"]["passed"]


def test_arch_reads_family_task_scale_and_head(states):
    found = {}
    for spec in N_MODELS:
        a = arch.read_arch(states[spec])
        found[spec] = (a.family, a.task, arch.scale_name(a), a.num_classes, a.reg_max)
    assert found["yolov8n"] == ("yolov8", "detect", "n", 80, 16)
    assert found["yolo11n-obb"] == ("yolo11", "obb", "n", 80, 16)
    assert found["yolov8n-pose"] == ("yolov8", "pose", "n", 1, 16)
    assert found["yolo11n-cls"] == ("yolo11", "cls", "n", 1000, 16)
    seg = arch.read_arch(states["yolo11n-seg"])
    assert (seg.num_masks, seg.num_protos) == (32, 64)
    assert arch.read_arch(states["yolo11n-pose"]).kpt_shape == (17, 3)  # gen_wts' <head>.kpt_shape


def test_custom_scale_and_classes_from_the_weights():
    """A YOLO11 of its own depth/width/max_channels and 7 classes: the network and the yaml rebuilt for check
    both from the weights, no flags."""
    import torch
    import yaml

    d = yaml.safe_load((sources.package_dir("ultralytics") / "cfg/models/11/yolo11.yaml").read_text())
    d.update(scales={"custom": [0.67, 0.375, 768]}, scale="custom", nc=7)
    sources.prepare_environment()
    with sources.quiet():
        from ultralytics.nn.tasks import DetectionModel

        torch.manual_seed(0)
        m = DetectionModel(d, nc=7, verbose=False).eval()
    sources.randomize_norms(m, 0)
    state = {k: v.detach().float().numpy().reshape(-1).copy() for k, v in m.state_dict().items()}
    net, cfg, _ = _net(state)
    assert (cfg.scale, cfg.num_classes, cfg.arch.channels[0], cfg.arch.repeats[2]) == ("custom", 7, 24, 1)
    result = _check(state)
    assert result.passed, result.table()[-3000:]


def test_broken_dfl_is_named_first_divergent(states, monkeypatch):
    """A DFL that views the box logits as [B, reg_max, 4, A] (the comment in ultralytics' DFL.forward) instead of
    [B, 4, reg_max, A]: everything before matches, check names the DFL's weighted sum."""

    def wrong_view(net, x, path):
        nw, trt = net.network, net.trt
        reg_max, a = int(x.shape[1]) // 4, int(x.shape[2])
        bins = nw.add_shuffle(net.to_fp32(x, f"{path}.to_fp32"))
        bins.reshape_dims = (0, reg_max, 4, a)  # no transpose: the bins of one side are not where they should be
        soft = nw.add_softmax(bins.get_output(0))
        soft.axes = 1 << 1
        weight = net.constant(net.array(f"{path}.conv.weight", (1, reg_max, 1, 1)), f"{path}.w", np.float32)
        prod = nw.add_elementwise(soft.get_output(0), weight, trt.ElementWiseOperation.PROD)
        total = net.name(nw.add_reduce(prod.get_output(0), trt.ReduceOperation.SUM, 1 << 1, True), f"{path}.conv")
        flat = nw.add_shuffle(total.get_output(0))
        flat.reshape_dims = (0, 4, a)
        return net.name(flat, path).get_output(0)

    monkeypatch.setattr(model, "dfl", wrong_view)
    result = _check(states["yolo11n"])
    rows = {r.name: r for r in result.layers}
    assert not result.passed and result.first_divergent == "model.23.dfl.conv", result.table()[-2000:]
    assert rows["model.23.cv2.0"].passed and rows["model.23.cv3.2"].passed and not rows["model.23.dfl"].passed


def _c2psa_check(attention: str = "matmul") -> check.CheckResult:
    """ultralytics' C2PSA(256) alone on N(0, 1) features against the netdef's c2psa. In a random-weight YOLO11
    the features reaching model.10 hardly vary from one position to the next, so its attention is all but
    uniform there whatever the scale; here it attends."""
    import torch

    sources.prepare_environment()
    with sources.quiet():
        from ultralytics.nn.modules.block import C2PSA

    torch.manual_seed(0)
    block = torch.nn.Sequential(C2PSA(256, 256, n=1)).eval()
    sources.randomize_norms(block, 0)
    state = {k: v.detach().numpy().reshape(-1).copy() for k, v in block.state_dict().items()}
    net = Net(wts.WeightMap(state))
    net.meta["ultralytics"] = {"bn_eps": 1e-5, "attention": attention}  # a bare module keeps PyTorch's eps
    net.output(model.c2psa(net, net.input("x", (-1, 256, 8, 8)), "0"), "y")
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 256, 8, 8)).astype(np.float32)}
    return check.compare(net, block, feeds, forward=lambda m, f: {"y": m(f["x"])})


def test_wrong_attention_scale_is_named_first_divergent(monkeypatch):
    """C2PSA's attention without the 1/sqrt(key_dim) scale: q, k, v and the positional conv match, the
    projection after the attention product is the first layer that does not."""
    result = _c2psa_check()
    assert result.passed and "0.m.0.attn" in {r.name for r in result.layers}, result.table()[-2000:]
    original = model.attention
    monkeypatch.setattr(model, "attention", lambda net, x, path, heads: original(net, x, path, heads, scale=1.0))
    result = _c2psa_check()
    rows = {r.name: r for r in result.layers}
    assert not result.passed and result.first_divergent == "0.m.0.attn.proj.conv", result.table()[-2000:]
    assert rows["0.m.0.attn.qkv"].passed and rows["0.m.0.attn.pe"].passed and not rows["0.m.0.attn"].passed


def test_postprocess_none_outputs_the_raw_head(states):
    result = _check(states["yolov8n-seg"], postprocess="none")
    assert result.passed, result.table()[-2000:]
    shapes = {r.name: r.shape for r in result.outputs}
    assert shapes == {"raw_boxes": (1, 64, 2100), "raw_scores": (1, 80, 2100), "raw_masks": (1, 32, 2100),
                      "proto": (1, 32, 80, 80)}  # fmt: skip


@pytest.mark.parametrize(
    "spec, flags, message",
    [
        ("yolo11n", {"task": "seg"}, "--task seg, but the weights contain yolo11n (stem 16 channels"),
        ("yolo11n", {"family": "yolov8"}, "--family yolov8, but the weights contain yolo11n"),
        ("yolov8n", {"scale": "s"}, "--scale s, but the weights contain yolov8n"),
        ("yolov8n", {"classes": 3}, "--classes 3, but the weights contain 80 classes (model.22.cv3.0.2.bias)"),
        ("yolo11n-pose", {"kpt_shape": "34,2"}, "--kpt-shape 34,2, but model.23.cv4.0.2 predicts 51 keypoint values"),
        ("yolo11n", {"kpt_shape": "17,3"}, "not a pose model"),
        ("yolo11n", {"imgsz": "300"}, "--imgsz 300: the input size must be N or H,W with each a positive multiple"),
        ("yolo11n", {"conf": 1.5}, "--conf 1.5: must lie in [0, 1]"),
    ],
)
def test_flags_that_contradict_the_weights(spec, flags, message, states):
    with pytest.raises(NetdefError, match=None) as info:
        config.configure(argparse.Namespace(command="build", **flags), wts.WeightMap(states[spec]))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_weights_of_other_models_say_what_they_hold(states):
    """yolov5, an end-to-end head on YOLO11, a truncated model, a pose model whose keypoints split two ways: one line
    each."""
    y5 = model_sources.build_model("yolov5:yolov5n")
    one2one = {
        k.replace(".cv", ".one2one_cv", 1): v for k, v in states["yolo11n"].items() if k.startswith("model.23.cv")
    }
    cases = {
        "YOLOv5 model (C3 blocks: model.2.cv3)": {k: v.numpy().reshape(-1) for k, v in y5.state_dict().items()},
        "end-to-end head (model.23.one2one_cv2), which yolo11 has not": {**states["yolo11n"], **one2one},
        "which is neither a YOLO detection head (no model.22.cv2.0.2.bias": {
            k: v for k, v in states["yolo11n"].items() if not k.startswith("model.23.")
        },
        "no model.0.conv.weight": {"conv.weight": np.ones(3, np.float32)},
    }
    for message, state in cases.items():
        with pytest.raises(NetdefError) as info:
            arch.read_arch(wts.WeightMap(state))
        assert message in str(info.value), str(info.value)
    pose = dict(states["yolo11n-pose"])
    del pose["model.23.kpt_shape"]
    cfg = config.configure(argparse.Namespace(command="build"), wts.WeightMap(pose))
    assert cfg.kpt_shape == (17, 3)  # 51 values: only 17 x 3 fits
    for key in (f"model.23.cv4.{i}.2.{kind}" for i in range(3) for kind in ("weight", "bias")):
        pose[key] = pose[key][: pose[key].size // 51 * 24]  # 24 keypoint values: 12 x 2 or 8 x 3
    with pytest.raises(NetdefError, match="predicts 24 keypoint values: 8x3 or 12x2\\? pass --kpt-shape"):
        config.configure(argparse.Namespace(command="build"), wts.WeightMap(pose))


def test_class_names_and_keypoint_shape_travel_with_the_weights(tmp_path):
    """gen_wts.py -w on an ultralytics checkpoint ({'model': DetectionModel} pickle, --unsafe-pickle) writes its
    class names on the head; configure reads them back."""
    import torch
    import yaml

    d = yaml.safe_load((sources.package_dir("ultralytics") / "cfg/models/11/yolo11.yaml").read_text())
    d.update(scale="n", nc=3)
    sources.prepare_environment()
    with sources.quiet():
        from ultralytics.nn.tasks import DetectionModel

        m = DetectionModel(d, nc=3, verbose=False)
    m.names = {0: "cat", 1: "dog", 2: "ünïcode bird"}
    ckpt, out = tmp_path / "three.pt", tmp_path / "three.wts"
    torch.save({"model": m.half(), "ema": None}, ckpt)
    assert gen_wts.main(["-w", str(ckpt), "-o", str(out), "-q"]) == 2  # pickles need --unsafe-pickle (exit 2)
    assert gen_wts.main(["-w", str(ckpt), "--unsafe-pickle", "-o", str(out), "-q"]) == 0
    w = wts.load(out)
    cfg = config.configure(argparse.Namespace(command="build", imgsz="64"), w)
    assert cfg.names == ["cat", "dog", "ünïcode bird"] and cfg.num_classes == 3
    net = Net(w)
    decode.define(net, cfg)
    assert net.unused_weights() == [] and net.meta["ultralytics"]["names"] == cfg.names


def test_fp16_engine_builds_and_checks(weights, tmp_path, capsys):
    """yolo11n at fp16: built by TensorRT-RTX with the fp32 policy kept (DFL softmax, decode and attention softmax
    in fp32), and check passes at fp16's tolerance (relative RMS error <= 1e-2 per output and layer)."""
    w = weights["yolo11n"]
    engine = tmp_path / "yolo11n-fp16.engine"
    rc, _, err = run_cli(["build", "-w", w, "-o", str(engine), "--imgsz", "320", "--precision", "fp16"], capsys)
    assert rc == 0 and "computes in fp16" not in err, err
    assert json.loads(Path(f"{engine}.json").read_text())["precision"] == "fp16"
    rc, out, _ = run_cli(["check", "-w", w, "--image", ZIDANE, "--imgsz", "320", "--precision", "fp16", "--json"],
                         capsys)  # fmt: skip
    result = json.loads(out)
    assert rc == 0 and result["passed"], out[-3000:]
    assert all(r["rms_rel_err"] < 1e-2 for r in result["outputs"])


def test_int8_engine_builds(weights, tmp_path, capsys, make_calibration_folder):
    """yolo11n at int8, calibrated on two photos (--int8-fallback: tests/test_ultralytics_slow.py)."""
    engine = tmp_path / "yolo11n-int8.engine"
    argv = ["build", "-w", weights["yolo11n"], "-o", str(engine), "--imgsz", "128", "--precision", "int8", "--calib",
            str(make_calibration_folder(tmp_path))]  # fmt: skip
    rc, _, err = run_cli(argv, capsys)
    assert rc == 0, err
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["precision"] == "int8" and meta["int8"]["quantized_tensors"] > 60


@pytest.mark.parametrize("spec", N_MODELS)
def test_check_every_module_and_nms_on_bus_and_zidane(spec, states):
    """bus.jpg and zidane.jpg in one batch: outputs and every module-named layer within 1e-4 of the ultralytics
    model, the heads' modules (DFL, both branches of every level, proto, attention) among the compared ones; the
    network's detections after the host NMS, and ultralytics' own non_max_suppression on PyTorch's prediction,
    both a (greedy / OBB: Fast) NMS of PyTorch's candidates under the shared tie-aware comparison. conf: the 80th
    percentile of PyTorch's best scores (random weights score ~1e-4), so some 400 candidates per image enter the
    NMS. cls: the top-5 rows instead."""
    import cv2

    net, cfg, w = _net(states[spec], imgsz=_imgsz(spec))
    feeds, _ = app.preprocess([cv2.imread(BUS), cv2.imread(ZIDANE)], cfg)
    result = check.compare(net, torch_side.torch_model(cfg, w), feeds, forward=torch_side.torch_forward)
    assert result.passed, result.table()[-3000:]
    rows = {r.name: r for r in result.layers if r.passed is not None}
    v8, task = spec.startswith("yolov8"), cfg.task
    head = ("model.9" if v8 else "model.10") if task == "cls" else ("model.22" if v8 else "model.23")
    expected = [f"{head}.linear"] if task == "cls" else [f"{head}.dfl", f"{head}.cv2.2", f"{head}.cv3.0"]
    expected += {"seg": [f"{head}.proto.cv3", f"{head}.cv4.1"], "pose": [f"{head}.cv4.2"],
                 "obb": [f"{head}.cv4.0"]}.get(task, [])  # fmt: skip
    if not v8:
        expected += ["model.9.m.0.attn" if task == "cls" else "model.10.m.0.attn", "model.2.m.0"]
    assert all(name in rows for name in expected), [n for n in expected if n not in rows]
    assert len(rows) > (80 if task == "cls" else 200)
    assert max(r.max_rel_err for r in [*rows.values(), *result.outputs]) <= 1e-4
    if task != "cls":
        cfg.conf = float(result.expected_outputs["scores"].max(-1).values.quantile(0.8))
    extras = torch_side.check_extra(cfg, result.network_outputs, result.expected_outputs)
    if task == "cls":
        assert all(passed for _, passed, _ in extras) and len(extras) == 4
        return
    assert [name for name, _, _ in extras] == ["detections after NMS", "ultralytics' non_max_suppression"]
    for name, passed, message in extras:
        assert passed and "identical" in message and not message.startswith("0 "), (name, message)
    ours = app.detect({k: v.numpy() for k, v in result.network_outputs.items()}, cfg)
    assert all(len(d) > 5 for d in ours)


@pytest.mark.parametrize("spec", ["yolo11n", "yolo11n-seg", "yolo11n-pose", "yolo11n-obb", "yolo11n-cls"])
def test_infer_writes_pictures_and_coco_json(spec, weights, tmp_path, capsys):
    """infer --backend reference on bus.jpg and zidane.jpg: one annotated picture and one JSON per image, with
    what each task adds (masks as polygons, keypoints, rotated boxes; cls: the top-5)."""
    import cv2

    out_dir = tmp_path / "out"
    rc, out, err = run_cli(["infer", "-w", weights[spec], BUS, ZIDANE, "-o", str(out_dir), "--imgsz", _imgsz(spec),
                            "--conf", "0.00003"], capsys)  # fmt: skip
    assert rc == 0, err
    assert "bus.jpg: " in out and "zidane.jpg: " in out
    for name, path in (("bus", BUS), ("zidane", ZIDANE)):
        picture = cv2.imread(str(out_dir / f"{name}.jpg"))
        assert picture is not None and picture.shape == cv2.imread(path).shape
        doc = json.loads((out_dir / f"{name}.json").read_text())
        if spec.endswith("-cls"):
            assert len(doc["top5"]) == 5 and doc["top5"][0]["name"]
            continue
        dets = doc["detections"]
        assert dets and all({"bbox", "score", "category_id", "category"} <= set(d) for d in dets)
        h, w = doc["height"], doc["width"]
        inside = [0 <= d["bbox"][0] <= w and 0 <= d["bbox"][1] <= h for d in dets]
        assert all(inside) or spec.endswith("-obb")  # rotated boxes are not clipped (ultralytics does not)
        if spec.endswith("-seg"):
            assert all("segmentation" in d and d["area"] >= 0 for d in dets)
        if spec.endswith("-pose"):
            assert all(len(d["keypoints"]) == 17 * 3 for d in dets)
        if spec.endswith("-obb"):
            assert all(len(d["rbox"]) == 5 and len(d["polygon"]) == 8 for d in dets)


@pytest.mark.parametrize("spec", ["yolo11n-seg", "yolo11n-obb"])
def test_gpu_post_processing_packs_like_the_host(spec, states, monkeypatch):
    """gpu_detect's records (made from the outputs with torch ops), the NMS kernels' outputs unpacked, the extras
    gathered by anchor: with the plugins' torch references standing in for the kernels
    (tests/plugins/test_ultralytics_plugins.py runs the kernels), the host's detections -- exactly per class
    (the nms kernel does not shift boxes by class), OBB bit for bit."""
    import cv2

    from netdefs.detection.nms import NmsRule
    from plugins import nms as nms_plugin
    from plugins import rotated_nms
    from trtx import reference

    net, cfg, _ = _net(states[spec])
    feeds, _ = app.preprocess([cv2.imread(BUS), cv2.imread(ZIDANE)], cfg)
    out = reference.execute(net.network, feeds)
    cfg.conf = float(out["scores"].max(-1).values.quantile(0.8))
    for plugin in (nms_plugin, rotated_nms):
        monkeypatch.setattr(plugin, "run", lambda inputs, plugin=plugin, **fields: plugin.reference(inputs, **fields))
    packed = app.gpu_detect(out, cfg)
    outputs = {k: v.numpy() for k, v in out.items()}
    if cfg.task == "obb":
        host = app.detect(outputs, cfg)
    else:
        host = NmsRule(cfg.conf, cfg.iou, cfg.max_det, class_aware=True).detect(app.candidates(outputs, cfg))
    assert all(len(h) > 5 for h in host)
    for p, h in zip(packed, host):
        np.testing.assert_array_equal(p.index, h.index)
        np.testing.assert_array_equal(p.boxes, h.boxes)
        np.testing.assert_array_equal(p.scores, h.scores)
        for k, v in h.extras.items():
            np.testing.assert_array_equal(p.extras[k], v)


def test_masks_on_the_original_image_equal_ultralytics():
    """process_masks against ultralytics' own process_mask(upsample=True) + scale_masks on varied prototypes and
    coefficients (random weights leave every mask empty: their logits are all below 0)."""
    import cv2
    import torch

    sources.prepare_environment()
    from ultralytics.utils import ops

    from trtx import letterbox as lb

    rng = np.random.default_rng(0)
    image = cv2.imread(ZIDANE)
    _, (g,) = lb.letterbox_batch([image], (320, 320))
    protos = rng.standard_normal((32, 80, 80)).astype(np.float32)
    coefs = rng.standard_normal((6, 32)).astype(np.float32) * 0.3
    xy = rng.uniform(0, 200, (6, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(20, 120, (6, 2)).astype(np.float32)], 1)
    ours = app.process_masks(protos, coefs, boxes, g)
    masks = ops.process_mask(torch.from_numpy(protos), torch.from_numpy(coefs), torch.from_numpy(boxes), (320, 320),
                             upsample=True)  # fmt: skip
    theirs = ops.scale_masks(masks[None].float(), image.shape[:2])[0].numpy() > 0.5
    assert ours.shape == theirs.shape and theirs.sum() > 1000
    assert (ours != theirs).mean() < 1e-3, (ours != theirs).mean()  # bilinear edges: OpenCV vs torch rounding


@pytest.mark.parametrize("spec", ["yolo11n-pose", "yolo11n-obb"])
def test_plugin_records_give_the_same_detections(spec, states):
    """--postprocess plugin's outputs (dfl_decode, then nms / rotated_nms, the kept anchors' keypoints gathered),
    computed by the plugins' torch references on the head's raw outputs (TensorRT-RTX has no plugin layers),
    unpack to the native path's detections -- exactly per class on both sides for the greedy NMS, OBB bit for bit."""
    import cv2
    import torch

    from netdefs.detection.nms import NmsRule
    from plugins import dfl_decode, nms, rotated_nms
    from trtx import reference

    net, cfg, _ = _net(states[spec], postprocess="none")
    feeds, _ = app.preprocess([cv2.imread(BUS), cv2.imread(ZIDANE)], cfg)
    raw = reference.execute(net.network, feeds)
    native_net, native_cfg, _ = _net(states[spec])
    native = {k: v.numpy() for k, v in reference.execute(native_net.network, feeds).items()}
    cfg.conf = native_cfg.conf = float(np.quantile(native["scores"].max(-1), 0.8))
    parts = ["raw_boxes", "raw_scores", "raw_angle"] if cfg.task == "obb" else ["raw_boxes", "raw_scores"]
    head = torch.cat([raw[k] for k in parts], 1)
    records = dfl_decode.reference([head], num_classes=80, height=320, width=320, angle=cfg.task == "obb",
                                   conf_threshold=cfg.conf, max_det=head.shape[2])  # fmt: skip
    after = rotated_nms if cfg.task == "obb" else nms
    num, dets = after.reference(records, iou_threshold=cfg.iou, score_threshold=cfg.conf, max_det=cfg.max_det)
    outputs = {"num": num.numpy(), "dets": dets.numpy()}
    if cfg.task == "pose":
        index = dets[..., 7].long().numpy()
        outputs["det_keypoints"] = np.stack([native["keypoints"][b][index[b]] for b in range(2)])
    plugin = app.detect(outputs, cfg)
    if cfg.task == "obb":
        host = app.detect(native, native_cfg)
    else:
        host = NmsRule(cfg.conf, cfg.iou, cfg.max_det, class_aware=True).detect(app.candidates(native, native_cfg))
    for p, h in zip(plugin, host):
        assert len(h) > 5
        np.testing.assert_array_equal(p.index, h.index)
        scale = float(np.abs(h.boxes).max())
        np.testing.assert_allclose(p.boxes, h.boxes, rtol=0, atol=1e-5 * scale)  # the DFL sums in another order
        np.testing.assert_allclose(p.scores, h.scores, rtol=1e-6)
        for k, v in h.extras.items():
            np.testing.assert_allclose(p.extras[k], v, rtol=1e-5, atol=1e-5 * float(np.abs(v).max()))


def test_attention_layer_option_is_checked_like_the_matmul_form(monkeypatch):
    """--attention trt (TensorRT's IAttention, q and k zero-padded to the value width): C2PSA alone passes check,
    and without its scale is named at the projection, as the matrix-multiply form."""
    result = _c2psa_check("trt")
    assert result.passed, result.table()[-2000:]
    original = model.attention
    monkeypatch.setattr(model, "attention", lambda net, x, path, heads: original(net, x, path, heads, scale=1.0))
    result = _c2psa_check("trt")
    assert not result.passed and result.first_divergent == "0.m.0.attn.proj.conv", result.table()[-2000:]


def test_attention_layer_option_builds(weights, tmp_path, capsys):
    """yolo11n with --attention trt: TensorRT-RTX builds IAttention for C2PSA, batch 1:4:8."""
    engine = tmp_path / "yolo11n-sdpa.engine"
    rc, _, err = run_cli(["build", "-w", weights["yolo11n"], "-o", str(engine), "--imgsz", "320", "--attention", "trt",
                          "--batch", "1:4:8"], capsys)  # fmt: skip
    assert rc == 0, err
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["ultralytics"]["attention"] == "trt" and meta["unused_weights"] == []
