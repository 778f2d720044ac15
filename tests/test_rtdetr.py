"""RT-DETR (netdefs/rtdetr): rtdetr-l at 640 through the shared CLI, and against ultralytics' own predictor.

Random weights from ``gen_wts.py --model netdef:rtdetr:rtdetr-l --random-init`` (ultralytics' initialization
with the parameters it sets to one value drawn at random, and enc_output's bias at zero so that query selection
does not fill with identical invalid anchors). The real builder (TensorRT-RTX) builds the dynamic profile
1:4:8 in fp32 and fp16; ``check`` on bus.jpg compares the outputs, every module-named layer within 1e-4 (fp16:
its tolerance) and the detections; and the detections of the network (reference executor, the netdef's
preprocessing and postprocess) equal, up to near-tied scores, what ultralytics' RTDETRPredictor finds with the
same weights on bus.jpg (the detection toolkit's comparison).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gen_wts
import wts
from netdefs import rtdetr
from netdefs.detection.boxes import Detections
from netdefs.detection.compare import compare_detections
from netdefs.detection.nms import NmsRule
from netdefs.rtdetr import app, model, torch_side
from trtx import cli, reference, sources
from trtx.net import Net

RTOL = 1e-4
BUS = sources.sample_images() / "bus.jpg"
#: random weights score every query near 0.04-0.06: this threshold keeps detections to compare on bus.jpg
CONF = "0.05"


@pytest.fixture(scope="module")
def rtdetr_l(tmp_path_factory):
    path = tmp_path_factory.mktemp("rtdetr-l") / "rtdetr-l.safetensors"
    assert gen_wts.main(["--model", "netdef:rtdetr:rtdetr-l", "--random-init", "-o", str(path), "-q"]) == 0
    yield path
    shutil.rmtree(path.parent)


def _cfg(weights, conf: float = float(CONF), **kw):
    args = SimpleNamespace(arch="rtdetr-l", imgsz=640, attention="matmul", conf=conf, **kw)
    return rtdetr.configure(args, weights)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_dynamic_batch(rtdetr_l, precision, tmp_path, capsys):
    engine = tmp_path / "rtdetr.engine"
    argv = ["build", "-w", str(rtdetr_l), "-o", str(engine), "--batch", "1:4:8", "--precision", precision]
    assert cli.main(rtdetr.NETDEF, argv) == 0
    err = capsys.readouterr().err
    assert "warning" not in err  # no fp32-policy warning, no unexpected unused weight
    assert "(denoising queries: training only)" in err and "training losses only" in err
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert [(t["name"], t["shape"], t["dtype"]) for t in meta["inputs"]] == [("images", [-1, 3, 640, 640], "float32")]
    assert [(o["name"], o["shape"], o["dtype"]) for o in meta["outputs"]] == [
        ("boxes", [-1, 300, 4], "float32"),
        ("scores", [-1, 300], "float32"),
        ("classes", [-1, 300], "int32"),
    ]
    assert meta["batch"] == {"min": 1, "opt": 4, "max": 8} and meta["precision"] == precision
    assert sorted(meta["unused_weights"]) == sorted(
        ["model.28.denoising_class_embed.weight"]
        + [f"model.28.dec_score_head.{i}.{p}" for i in range(5) for p in ("bias", "weight")]
    )
    cfg = rtdetr.configure(SimpleNamespace(arch="rtdetr-l"), None, meta)  # infer -e: from the metadata alone
    assert (cfg.imgsz, cfg.nc, cfg.head) == ((640, 640), 80, 28)


@pytest.mark.parametrize(("precision", "imgsz"), [("fp32", "640"), ("fp16", "320")])
def test_check_on_bus(rtdetr_l, precision, imgsz, capsys):
    """Outputs and every module-named layer within tolerance, with PyTorch following the network's picks where
    near-ties decide a top-k (check's top-k rows), and the detections above conf the same. fp16 at 320 (a
    quarter of the time; docs/transformers.md has 640 measured)."""
    argv = ["check", "-w", str(rtdetr_l), "--image", str(BUS), "--conf", CONF, "--precision", precision, "--json",
            "--imgsz", imgsz]  # fmt: skip
    code = cli.main(rtdetr.NETDEF, argv)
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["passed"] and doc["first_divergent"] is None
    rows = doc["outputs"] + doc["layers"]
    compared = [r for r in rows if r["passed"] is not None]
    assert len(compared) == len(rows) == 545 and all(r["passed"] for r in compared)
    # nn.MultiheadAttention returns (output, weights): compared as <module>:0
    names = {r["name"] for r in rows}
    assert {"model.11.ma:0"} | {f"model.28.decoder.layers.{i}.self_attn:0" for i in range(6)} <= names
    if precision == "fp32":
        assert max(r["max_rel_err"] for r in compared) <= RTOL
    extras = {e["name"]: e for e in doc["extras"]}
    assert {"top-k model.28.topk", "top-k model.28.post.topk", "detections (conf 0.05)"} <= set(extras)
    assert all(e["passed"] for e in extras.values())
    assert extras["detections (conf 0.05)"]["message"].startswith("300 identical")


def test_detections_equal_ultralytics_predictor_on_bus(rtdetr_l):
    """ultralytics' RTDETRPredictor (its LetterBox(scale_fill), its fused model, RTDETRPredictor.postprocess)
    and the network (reference executor) with the netdef's preprocess and postprocess find the same
    detections on bus.jpg, up to near-tied scores (netdefs.detection.compare)."""
    from ultralytics.models.rtdetr import RTDETRPredictor

    from trtx import check

    weights = wts.load(rtdetr_l)
    cfg = _cfg(weights)
    net = Net(weights, name="rtdetr-l")
    rtdetr.define(net, cfg)
    feeds, sizes = app.preprocess(app.load_images([BUS]), cfg)
    picks = check.topk_indices(net)
    got = reference.execute(net.network, feeds, keep=picks)
    outputs = {k: v.numpy() for k, v in got.items() if k not in picks}
    ours = app.detections(outputs, sizes, cfg)
    predictor = RTDETRPredictor(overrides={"conf": cfg.conf, "imgsz": 640, "save": False, "verbose": False,
                                           "device": "cpu"})  # fmt: skip
    # random weights score the encoder's anchors within rounding of each other: the query selection's top-k follows
    # the network's picks where PyTorch sees the picked scores as equal (what check does), not a coin toss
    with check.follow_topk(net, got) as topk:
        (r,) = predictor(source=str(BUS), model=torch_side.torch_model(cfg, weights))
    assert all(row.passed for row in topk.rows) and topk.rows, [(row.name, row.message) for row in topk.rows]
    theirs = Detections(r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), r.boxes.cls.numpy().astype(np.int64))
    passed, message = compare_detections(ours, [theirs], NmsRule(conf=cfg.conf, iou=1.0, max_det=300), RTOL)
    assert passed, message
    assert len(theirs) > 100 and len(ours[0]) == len(theirs), message


def test_infer_writes_detections(rtdetr_l, tmp_path, capsys):
    out = tmp_path / "infer"
    assert cli.main(rtdetr.NETDEF, ["infer", "-w", str(rtdetr_l), "--conf", CONF, "-o", str(out), str(BUS)]) == 0
    (line,) = [s for s in capsys.readouterr().out.splitlines() if s.startswith("bus.jpg: ")]
    doc = json.loads((out / "bus.json").read_text())
    assert doc["model"] == "rtdetr-l" and line.startswith(f"bus.jpg: {len(doc['detections'])} detections")
    assert all(d["score"] > float(CONF) and len(d["bbox"]) == 4 for d in doc["detections"])
    assert (out / "bus.jpg").stat().st_size > 10_000


def test_weights_of_another_arch_are_refused(rtdetr_l, tmp_path, capsys):
    argv = ["build", "--arch", "rtdetr-resnet50", "-w", str(rtdetr_l), "-o", str(tmp_path / "x.engine")]
    assert cli.main(rtdetr.NETDEF, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: weights have a hgnet backbone, the decoder at model.28 (rtdetr-l)")
    assert "(check --arch)" in err and not (tmp_path / "x.engine").exists()


def test_class_names_travel_with_the_weights(rtdetr_l, tmp_path, capsys):
    """A checkpoint's own class names (gen_wts.py writes them as ``model.28.names``) label the detections and are
    read, not reported unused."""
    from netdefs.detection.names import encode_names

    state = {k: np.asarray(v) for k, v in wts.load(rtdetr_l).items()}
    names = [f"thing {i}" for i in range(80)]
    state["model.28.names"] = encode_names(names)
    path = tmp_path / "named.safetensors"
    wts.save(state, path)
    weights = wts.load(path)
    cfg = _cfg(weights)
    assert cfg.names == names
    net = Net(weights, name="rtdetr-l")
    rtdetr.define(net, cfg)
    assert "model.28.names" not in net.unused_weights() and net.meta["rtdetr"]["names"] == names


def test_ultralytics_source_builds_offline(tmp_path):
    """``gen_wts.py --model ultralytics:rtdetr-l`` (ultralytics' RTDETR wrapper, YOLO_OFFLINE) writes weights the
    netdef defines its network from, reading all but the training-only ones."""
    path = tmp_path / "rtdetr-l.safetensors"
    assert gen_wts.main(["--model", "ultralytics:rtdetr-l", "--random-init", "-o", str(path), "-q"]) == 0
    weights = wts.load(path)
    cfg = _cfg(weights)
    net = Net(weights, name="rtdetr-l")
    rtdetr.define(net, cfg)
    assert all(rtdetr.unused_reason(cfg, k) for k in net.unused_weights()) and len(net.unused_weights()) == 11


def test_sincos_position_embedding_is_ultralytics():
    import torch
    from ultralytics.nn.modules.transformer import AIFI

    expected = AIFI.build_2d_sincos_position_embedding(20, 15, 256, like=torch.zeros(1)).numpy()
    # the same float32 arguments; numpy's and torch's float32 sin/cos differ by a few ulp (measured 4.8e-7)
    assert np.allclose(model.sincos_position_embedding(20, 15, 256), expected, rtol=0, atol=1e-6)


def test_anchors_are_ultralytics():
    import torch
    from ultralytics.nn.modules.head import RTDETRDecoder

    shapes = [(80, 80), (40, 40), (20, 20)]
    anchors, valid = RTDETRDecoder._generate_anchors(shapes, torch.zeros(1))
    ours, ours_valid = model.generate_anchors(shapes)
    assert np.array_equal(ours_valid.astype(bool), valid.numpy()) and 0 < valid.sum() < 8400
    # the same cells; numpy's and torch's float32 log differ by an ulp; +inf where invalid on both sides
    assert np.allclose(ours, anchors.numpy(), rtol=1e-6, atol=0)


@pytest.mark.slow
def test_resnet50_checks_at_320(tmp_path, capsys):
    """rtdetr-resnet50.yaml (ResNetLayer backbone) at 320x320: every layer and output within 1e-4."""
    path = tmp_path / "r50.safetensors"
    assert gen_wts.main(["--model", "netdef:rtdetr:rtdetr-resnet50", "--random-init", "-o", str(path), "-q"]) == 0
    code = cli.main(rtdetr.NETDEF, ["check", "--arch", "rtdetr-resnet50", "-w", str(path), "--imgsz", "320", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["passed"] and doc["max_rel_err"] <= RTOL
    assert len(doc["layers"]) > 400
