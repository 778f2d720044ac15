"""netdefs/ultralytics for the newest generations on the CPU: YOLO26 (every task), YOLOv10 and YOLO12 (detect).
The end-to-end (one-to-one) heads end in a top-k and no NMS; YOLO12's area attention; YOLOv10's SCDown, C2fCIB,
PSA.

Weights are random (gen_wts --random-init); inputs are small (160, cls 64) to keep the suite fast -- the network
code is the same at any size (the s scale at 320: tests/test_ultralytics_slow.py). The top-k rows hold the
network's detections, and ultralytics' own end-to-end output, to PyTorch's candidates
(netdefs/detection/compare.py::compare_topk).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

import wts
from netdefs.ultralytics import NETDEF, app, arch, config, decode, model, torch_side
from trtx import check, cli, sources
from trtx.net import Net, NetdefError

ASSETS = sources.sample_images()
BUS, ZIDANE = str(ASSETS / "bus.jpg"), str(ASSETS / "zidane.jpg")
SPECS = ["yolo26n", "yolo26n-seg", "yolo26n-pose", "yolo26n-obb", "yolo26n-cls", "yolov10n", "yolo12n"]
TASK_OUTPUTS = {
    "detect": ["det_boxes", "det_scores", "det_classes", "det_index"],
    "seg": ["det_boxes", "det_scores", "det_classes", "det_index", "det_masks", "proto"],
    "pose": ["det_boxes", "det_scores", "det_classes", "det_index", "det_keypoints"],
    "obb": ["det_boxes", "det_scores", "det_classes", "det_index", "det_angles"],
    "cls": ["logits", "prob"],
}


def _task(spec: str) -> str:
    return next((t for t in ("seg", "pose", "obb", "cls") if spec.endswith(f"-{t}")), "detect")


def _imgsz(spec: str) -> str:
    return "64" if spec.endswith("-cls") else "160"


def _flags(spec: str) -> dict:
    return {"family": "yolo26"} if spec == "yolo26n-cls" else {}  # its weights are yolo11n-cls's, layer for layer


@pytest.fixture(scope="module")
def weights(ultralytics_weights):
    """gen_wts.py --model ultralytics:<spec> --random-init, for every spec of the suite (lazily, once each)."""
    return ultralytics_weights


def _net(path: str, **flags) -> tuple[Net, config.Config, wts.WeightMap]:
    w = wts.load(path)
    cfg = config.configure(argparse.Namespace(command="check", **flags), w)
    net = Net(w, name=cfg.model_name)
    decode.define(net, cfg)
    return net, cfg, w


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(NETDEF, argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_yaml_tables_are_the_yaml_files():
    """arch's scales, nominal widths/repeats, head indices and YOLOv10's C2fCIB layouts equal the installed yaml
    files of the new generations (v8/11: tests/test_ultralytics.py)."""
    import yaml

    root = sources.package_dir("ultralytics") / "cfg" / "models"
    files = [(f, t, root / d / f"{f}{arch.SUFFIX[t]}.yaml") for f, d in (("yolo12", "12"), ("yolo26", "26"))
             for t in arch.TASKS]  # fmt: skip
    files += [("yolov10", "detect", root / "v10" / f"yolov10{s}.yaml") for s in arch.SCALES["yolov10"]]
    for family, task, path in files:
        d = yaml.safe_load(path.read_text())
        scales = {s: tuple(v) for s, v in d["scales"].items()}
        assert scales.items() <= arch.SCALES[family].items(), path
        rows = d["backbone"] + d["head"]
        nominal = arch.NOMINAL_CLS[family] if task == "cls" else arch.NOMINAL[family]
        for i, (_, n, module, args) in enumerate(rows):
            if module in ("Conv", "C2f", "C3k2", "SPPF", "C2PSA", "SCDown", "C2fCIB", "PSA", "A2C2f"):
                assert nominal[i] == (args[0], n if n > 1 else 0), (path, i)
        assert len(rows) - 1 == (arch.HEAD_CLS if task == "cls" else arch.HEAD)[family], path
        if family == "yolov10":
            cib = {i for i, row in enumerate(rows) if row[2] == "C2fCIB"}
            lk = {i for i, row in enumerate(rows) if row[2] == "C2fCIB" and len(row[3]) > 2 and row[3][2]}
            assert arch.V10_LAYOUT[next(iter(scales))] == (cib, lk), path
        if family == "yolo26" and task != "cls":
            assert d["end2end"] and d["reg_max"] == 1 and rows[9][3] == [1024, 5, 3, True] and rows[22][3][3]
    names = [m.name for m in NETDEF.models]
    assert {"yolo26n", "yolo26x-obb", "yolo26s-cls", "yolov10b", "yolo12l-pose"} <= set(names)
    assert "yolov10n-seg" not in names and len(names) == 25 + 25 + 6 + 25 + 25


def test_arch_reads_the_new_generations(weights):
    found = {}
    for spec in SPECS:
        a = arch.read_arch(wts.load(weights[spec]))
        found[spec] = (a.family, a.task, arch.scale_name(a), a.reg_max, a.one2one, a.one2many, sorted(a.psa))
    assert found["yolo26n"] == ("yolo26", "detect", "n", 1, True, True, [10, 22])
    assert found["yolo26n-pose"] == ("yolo26", "pose", "n", 1, True, True, [10, 22])
    assert found["yolo26n-cls"][:2] == ("yolo11", "cls")  # the same network as yolo11n-cls: --family yolo26
    assert found["yolov10n"] == ("yolov10", "detect", "n", 16, True, True, [10])
    assert found["yolo12n"] == ("yolo12", "detect", "n", 16, False, True, [6, 8])
    v10 = arch.read_arch(wts.load(weights["yolov10n"]))
    assert (v10.cib, v10.lk) == ({22}, {22})
    assert arch.read_arch(wts.load(weights["yolo26n-pose"])).num_keypoint_values == 51  # Pose26's cv4_kpts


@pytest.mark.parametrize("spec", SPECS)
def test_build_batch_1_and_dynamic(spec, weights, tmp_path, capsys):
    """build (TensorRT-RTX) for batch 1 and 1:4:8: the top-k outputs, the one-to-many branch and the training-only
    modules left unread by design (and said so), the metadata infer reads back."""
    task = _task(spec)
    flags = ["--family", "yolo26"] if spec == "yolo26n-cls" else []
    for batch in ("1", "1:4:8"):
        engine = tmp_path / f"{spec}-{batch.replace(':', '_')}.engine"
        argv = ["build", "-w", weights[spec], "-o", str(engine), "--imgsz", _imgsz(spec), "--batch", batch, *flags]
        rc, _, err = run_cli(argv, capsys)
        assert rc == 0, err
        meta = json.loads(Path(f"{engine}.json").read_text())
        assert engine.stat().st_size > 1_000_000 and meta["batch"]["max"] == (8 if batch == "1:4:8" else 1)
    u = meta["ultralytics"]
    assert (u["model"], u["task"]) == (spec, task)
    assert [o["name"] for o in meta["outputs"]] == (["boxes", "scores"] if spec == "yolo12n" else TASK_OUTPUTS[task])
    unused = meta["unused_weights"]
    if task == "cls":
        assert unused == []
        return
    assert u["head"] == ("one2many" if spec == "yolo12n" else "one2one")
    assert u["postprocess"]["nms"] == ("after-engine" if spec == "yolo12n" else "none")
    shape = {o["name"]: o["shape"] for o in meta["outputs"]}
    assert shape.get("det_boxes", [-1, 300, 4]) == [-1, 300, 4]  # k = max_det
    branches = {k.split(".")[2] for k in unused}
    expected = {"yolo26n": {"cv2", "cv3"}, "yolo26n-seg": {"cv2", "cv3", "cv4", "proto"},
                "yolo26n-pose": {"cv2", "cv3", "cv4", "cv4_kpts", "cv4_sigma", "one2one_cv4_sigma", "flow_model"},
                "yolo26n-obb": {"cv2", "cv3", "cv4"}, "yolov10n": {"cv2", "cv3"}, "yolo12n": set()}[spec]  # fmt: skip
    assert branches == expected, branches
    assert "not read by design (the one-to-many branch of an end-to-end head" in err or not expected
    assert "warning" not in err, err
    from_meta = NETDEF.configure(argparse.Namespace(command="infer"), None, meta)  # infer -e
    assert (from_meta.end2end, from_meta.num_classes) == (spec != "yolo12n", 80)


#: modules whose layers must be among the compared ones (the blocks these generations add)
MODULES = {
    "yolo26n": ["model.9", "model.10.m.0.attn", "model.22.m.0", "model.22.m.0.1.attn", "model.23.one2one_cv2.0",
                "model.23.one2one_cv3.2"],
    "yolo26n-seg": ["model.23.proto.cv3", "model.23.proto.feat_fuse", "model.23.proto.feat_refine.1",
                    "model.23.one2one_cv4.0"],
    "yolo26n-pose": ["model.23.one2one_cv4.1", "model.23.one2one_cv4_kpts.2"],
    "yolo26n-obb": ["model.23.one2one_cv4.0"],
    "yolo26n-cls": ["model.9.m.0.attn", "model.10.linear"],
    "yolov10n": ["model.5", "model.7", "model.10", "model.10.attn", "model.22.m.0", "model.22.m.0.cv1.2",
                 "model.23.one2one_cv3.0", "model.23.dfl"],
    "yolo12n": ["model.6", "model.6.m.0.0.attn", "model.6.m.1", "model.8.m.0.1.attn", "model.11.m.0", "model.21.dfl",
                "model.21.cv3.2"],
}  # fmt: skip


@pytest.mark.parametrize("spec", SPECS)
def test_check_every_module_and_the_detections_on_bus_and_zidane(spec, weights):
    """bus.jpg and zidane.jpg in one batch: every module-named layer and the outputs within 1e-4 of the ultralytics
    model (the end-to-end heads: the one-to-one branch's candidates; the one-to-many branch is not built), and the
    detections -- the in-network top-k run by the reference executor, and ultralytics' own end-to-end output --
    both a top-k of PyTorch's candidates under the shared tie-aware comparison (YOLO12: after the host NMS, as
    YOLO11). conf: the 80th percentile of PyTorch's best scores (random weights score ~1e-4)."""
    import cv2

    net, cfg, w = _net(weights[spec], imgsz=_imgsz(spec), **_flags(spec))
    feeds, _ = app.preprocess([cv2.imread(BUS), cv2.imread(ZIDANE)], cfg)
    result = check.compare(net, torch_side.torch_model(cfg, w), feeds, forward=torch_side.torch_forward)
    assert result.passed, result.table()[-3000:]
    rows = {r.name: r for r in result.layers if r.passed is not None}
    assert all(name in rows for name in MODULES[spec]), [n for n in MODULES[spec] if n not in rows]
    assert len(rows) > (80 if cfg.task == "cls" else 250)
    assert max(r.max_rel_err for r in [*rows.values(), *result.outputs] if r.max_rel_err is not None) <= 1e-4
    if cfg.task == "cls":
        extras = torch_side.check_extra(cfg, result.network_outputs, result.expected_outputs)
        assert all(passed for _, passed, _ in extras) and len(extras) == 4
        return
    if cfg.end2end:
        assert not any(n.startswith(("model.23.cv2.", "model.23.cv3.")) for n in rows)  # not built
    cfg.conf = float(result.expected_outputs["scores"].max(-1).values.quantile(0.8))
    extras = torch_side.check_extra(cfg, result.network_outputs, result.expected_outputs)
    names = ["end-to-end detections", "ultralytics' end-to-end output"]
    if not cfg.end2end:
        names = ["detections after NMS", "ultralytics' non_max_suppression"]
    assert [name for name, _, _ in extras] == names
    for name, passed, message in extras:
        assert passed and "identical" in message and not message.startswith("0 "), (name, message)
    ours = app.detect({k: v.numpy() for k, v in result.network_outputs.items()}, cfg)
    assert all(len(d) > 5 for d in ours)
    if cfg.end2end:  # the network's top-k ran in the reference executor: its rows, best first, above conf
        unordered = [r for r in result.outputs if r.passed is None]
        assert sorted(r.name for r in unordered) == sorted(n for n in TASK_OUTPUTS[cfg.task] if n != "proto")
        assert all(np.all(np.diff(d.scores) <= 0) and np.all(d.scores > cfg.conf) for d in ours)


def test_one2many_head_runs_nms(weights):
    """--head one2many: YOLO26's other branch, decoded to (cx, cy, w, h) and selected by NMS after the engine,
    as YOLO11; the one-to-one branch is then the one left unread by design."""
    net, cfg, w = _net(weights["yolo26n"], imgsz="160", head="one2many")
    assert not cfg.end2end and [net.network.get_output(i).name for i in range(net.network.num_outputs)] == [
        "boxes",
        "scores",
    ]
    import cv2

    feeds, _ = app.preprocess([cv2.imread(BUS)], cfg)
    result = check.compare(net, torch_side.torch_model(cfg, w), feeds, forward=torch_side.torch_forward)
    assert result.passed and "model.23.cv3.0" in {r.name for r in result.layers}, result.table()[-2000:]
    cfg.conf = float(result.expected_outputs["scores"].max(-1).values.quantile(0.8))
    extras = torch_side.check_extra(cfg, result.network_outputs, result.expected_outputs)
    assert [e[0] for e in extras] == ["detections after NMS", "ultralytics' non_max_suppression"]
    assert all(e[1] for e in extras), extras
    reason = NETDEF.unused_reason(cfg, "model.23.one2one_cv2.0.0.conv.weight")
    assert reason and "--head one2one" in reason


def _a2c2f_check(block, area: int, attention: str = "matmul") -> check.CheckResult:
    """ultralytics' A2C2f alone on N(0, 1) features against the netdef's a2c2f. In a random-weight YOLO12 the
    features reaching the area attention hardly vary from one position to the next, so its attention is all but
    uniform there whatever the areas; here it attends."""
    import torch

    state = {k: v.detach().numpy().reshape(-1).copy() for k, v in block.state_dict().items()}
    net = Net(wts.WeightMap(state))
    net.meta["ultralytics"] = {"bn_eps": 1e-5, "attention": attention}  # a bare module keeps PyTorch's eps
    net.output(model.a2c2f(net, net.input("x", (-1, 128, 8, 8)), "0", area=area), "y")
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 128, 8, 8)).astype(np.float32)}
    with torch.no_grad():
        return check.compare(net, block, feeds, forward=lambda m, f: {"y": m(f["x"])})


@pytest.fixture(scope="module")
def a2c2f_block():
    import torch

    sources.prepare_environment()
    with sources.quiet():
        from ultralytics.nn.modules.block import A2C2f

    torch.manual_seed(0)
    block = torch.nn.Sequential(A2C2f(128, 128, n=1, a2=True, area=4)).eval()
    sources.randomize_norms(block, 0)
    return block


def test_area_attention_checks_and_a_wrong_area_is_named_first_divergent(a2c2f_block):
    """YOLO12's A2C2f (two ABlocks, area attention over 4 horizontal strips) passes check; built with one area
    instead of four, q, k, v and the positional conv still match and the projection after the attention
    product is the first layer that does not."""
    result = _a2c2f_check(a2c2f_block, area=4)
    assert result.passed and "0.m.0.0.attn" in {r.name for r in result.layers}, result.table()[-2000:]
    result = _a2c2f_check(a2c2f_block, area=1)
    rows = {r.name: r for r in result.layers}
    assert not result.passed and result.first_divergent == "0.m.0.0.attn.proj.conv", result.table()[-2000:]
    assert rows["0.m.0.0.attn.qkv"].passed and rows["0.m.0.0.attn.pe"].passed and not rows["0.m.0.0.attn"].passed


def test_area_attention_layer_option(a2c2f_block, weights, tmp_path, capsys):
    """--attention trt: TensorRT-RTX builds yolo12n's area attention with IAttention (batch 1:4:8); where the
    reference executor runs ATTENTION layers, an A2C2f built so checks like the matmul form."""
    engine = tmp_path / "yolo12n-sdpa.engine"
    rc, _, err = run_cli(["build", "-w", weights["yolo12n"], "-o", str(engine), "--imgsz", "160", "--attention",
                          "trt", "--batch", "1:4:8"], capsys)  # fmt: skip
    assert rc == 0, err
    assert json.loads(Path(f"{engine}.json").read_text())["ultralytics"]["attention"] == "trt"
    result = _a2c2f_check(a2c2f_block, area=4, attention="trt")
    assert result.passed, result.table()[-2000:]


@pytest.mark.parametrize("spec", ["yolo26n", "yolo12n"])
def test_fp16_engine_builds_and_checks(spec, weights, tmp_path, capsys):
    """fp16: built by TensorRT-RTX with the fp32 policy kept (attention softmax, decode, top-k scores in fp32),
    and check passes at fp16's documented tolerance (relative RMS error <= 1e-2 per output and layer)."""
    engine = tmp_path / f"{spec}-fp16.engine"
    rc, _, err = run_cli(["build", "-w", weights[spec], "-o", str(engine), "--imgsz", "160", "--precision", "fp16"],
                         capsys)  # fmt: skip
    assert rc == 0 and "computes in fp16" not in err, err
    assert json.loads(Path(f"{engine}.json").read_text())["precision"] == "fp16"
    rc, out, _ = run_cli(["check", "-w", weights[spec], "--image", ZIDANE, "--imgsz", "160", "--precision", "fp16",
                          "--json"], capsys)  # fmt: skip
    result = json.loads(out)
    assert rc == 0 and result["passed"], out[-3000:]
    compared = [r for r in result["outputs"] if r["passed"] is not None]
    assert compared and all(r["rms_rel_err"] < 1e-2 for r in compared)


@pytest.mark.parametrize("spec", ["yolo26n-seg", "yolo26n-obb"])
def test_infer_writes_pictures_and_coco_json(spec, weights, tmp_path, capsys):
    """infer --backend reference: the in-network top-k (k = --max-det 20), the rows above --conf, drawn and written
    as JSON."""
    import cv2

    out_dir = tmp_path / "out"
    rc, out, err = run_cli(["infer", "-w", weights[spec], BUS, ZIDANE, "-o", str(out_dir), "--imgsz", "160",
                            "--conf", "0.0001", "--max-det", "20"], capsys)  # fmt: skip
    assert rc == 0, err
    for name, path in (("bus", BUS), ("zidane", ZIDANE)):
        assert cv2.imread(str(out_dir / f"{name}.jpg")).shape == cv2.imread(path).shape
        dets = json.loads((out_dir / f"{name}.json").read_text())["detections"]
        assert 0 < len(dets) <= 20 and all(d["score"] > 0.0001 for d in dets)
        if spec.endswith("-seg"):
            assert all("segmentation" in d for d in dets)
        else:
            assert all(len(d["rbox"]) == 5 and len(d["polygon"]) == 8 for d in dets)


@pytest.mark.parametrize(
    "spec, flags, message",
    [
        ("yolo12n", {"head": "one2one"}, "--head one2one: yolo12n (stem 16 channels"),
        ("yolov10n", {"postprocess": "plugin"}, "--postprocess plugin runs NMS"),
        ("yolo26n", {"max_det": 5000}, "--max-det 5000: an end-to-end head's top-k keeps 1 to 3840"),
        ("yolo26n", {"family": "yolo11"}, "--family yolo11, but the weights contain yolo26n"),
        ("yolo26n-cls", {"family": "yolov8"}, "--family yolov8, but the weights contain yolo11n-cls"),
    ],
)
def test_flags_that_contradict_the_weights(spec, flags, message, weights):
    with pytest.raises(NetdefError) as info:
        config.configure(argparse.Namespace(command="build", **flags), wts.load(weights[spec]))
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_checkpoint_fused_for_one_branch(weights):
    """Weights that hold only one branch of an end-to-end head (ultralytics' fuse() drops the other): the other
    --head is refused in one line, auto takes the one there."""
    loaded = wts.load(weights["yolov10n"])
    state = {k: loaded[k] for k in loaded}
    one2one = wts.WeightMap({k: v for k, v in state.items() if not k.startswith(("model.23.cv2.", "model.23.cv3."))})
    assert config.configure(argparse.Namespace(command="build"), one2one).head == "one2one"
    with pytest.raises(NetdefError, match="--head one2many: the weights have no model.23.cv2"):
        config.configure(argparse.Namespace(command="build", head="one2many"), one2one)
    one2many = wts.WeightMap({k: v for k, v in state.items() if ".one2one_" not in k})
    assert config.configure(argparse.Namespace(command="build"), one2many).head == "one2many"


@pytest.mark.gpu
@pytest.mark.parametrize("spec", ["yolo26n", "yolo26n-pose", "yolov10n"])
def test_engine_on_the_gpu_is_a_topk_of_pytorch(spec, weights, tmp_path, capsys):
    """Where this machine's backend executes engines: the engine (batch 1:4:8, 320) on bus.jpg + zidane.jpg, fed
    from the host and from a torch CUDA tensor (its outputs read as CUDA tensors): the same detections, a top-k of
    PyTorch's candidates (tolerance 2e-3 of the box / score scale: TensorRT's fp32 convolutions may use TF32)."""
    import cv2
    import torch

    from netdefs.detection.compare import compare_topk
    from trtx import runtime
    from trtx_base import backend

    ok, why = backend.get().can_execute()
    if not ok:
        pytest.skip(why)
    path = tmp_path / f"{spec}.engine"
    rc, _, err = run_cli(["build", "-w", weights[spec], "-o", str(path), "--imgsz", "320", "--batch", "1:4:8"], capsys)
    assert rc == 0, err
    _, cfg, w = _net(weights[spec], imgsz="320")
    feeds, _ = app.preprocess([cv2.imread(BUS), cv2.imread(ZIDANE)], cfg)
    engine = runtime.Engine(path)
    host = engine.infer(feeds)
    on_gpu = engine.run({"images": torch.from_numpy(feeds["images"]).cuda()})
    engine.synchronize()
    cuda = {k: torch.as_tensor(v, device="cuda") for k, v in on_gpu.items()}
    with torch.no_grad():
        expected = torch_side.torch_forward(
            torch_side.torch_model(cfg, w), {"images": torch.from_numpy(feeds["images"])}
        )
    theirs = app.candidates({k: v.numpy() for k, v in expected.items() if not isinstance(v, check.Unordered)}, cfg)
    cfg.conf = float(np.quantile(np.concatenate([t.scores for t in theirs]), 0.8))
    ours = app.detect(host, cfg)
    passed, message = compare_topk(ours, theirs, min(cfg.max_det, len(theirs[0])), cfg.conf, 2e-3)
    assert passed and all(len(d) > 5 for d in ours), message
    for a, b in zip(ours, app.detect(cuda, cfg)):
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.boxes, b.boxes)
