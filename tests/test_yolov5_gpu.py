"""YOLOv5 on a GPU (marker ``gpu``; run by the lead on an H100).

The NMS that runs right after engines ending at the decoded boxes (trtx.nms.gpu_non_max_suppression, the nms
plugin's kernels) needs torch with CUDA and cuda-python only. The pipeline tests (GPU letterbox -> reference
executor on CUDA -> GPU NMS, check and bench on CUDA) also need a TensorRT Python module (to define the network;
netdefs/ imports it) and the yolov5 package; without them they skip, saying which is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random

import numpy as np
import pytest
import torch

from trtx import nms, sources

pytestmark = pytest.mark.gpu
SEED = random.randrange(2**31)


def _outputs(batch: int, n: int, *, seed: int, distinct: bool = False) -> dict[str, torch.Tensor]:
    """Native outputs (cx, cy, w, h / score / class) on the GPU: clusters of overlapping boxes, 6 classes, scores
    spread over (0, 1) with exact ties (or all distinct), some boxes far outside the image."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(batch, n // 20 + 1, 2, generator=g) * 800 - 80
    cxcy = centers.repeat_interleave(20, 1)[:, :n] + torch.randn(batch, n, 2, generator=g) * 6
    wh = torch.rand(batch, n, 2, generator=g) * 120 + 4
    scores = torch.rand(batch, n, generator=g)
    if distinct:
        scores = (torch.randperm(batch * n, generator=g).float() / (batch * n)).view(batch, n)
    else:
        scores = (scores * 2000).round() / 2000  # exact ties
    classes = torch.randint(0, 6, (batch, n), generator=g, dtype=torch.int32)
    return {"boxes": torch.cat([cxcy, wh], -1).cuda(), "scores": scores.cuda(), "classes": classes.cuda()}


@pytest.mark.parametrize("batch, n, distinct", [(1, 25200, False), (4, 25200, False), (2, 40000, True)])
def test_gpu_nms_equals_exact_cpu_nms(batch, n, distinct):
    """gpu_non_max_suppression (nms plugin kernels; outputs poisoned before the launch) = trtx.nms exactly per
    class: same boxes, same order, same bits. 40000 boxes exceed the kernels' 32768 rows: the best 30000
    (yolov5's max_nms) go in, as on the CPU."""
    out = _outputs(batch, n, seed=SEED + batch, distinct=distinct)
    num, records = nms.gpu_non_max_suppression(out["boxes"], out["scores"], out["classes"], conf_threshold=0.3,
                                               iou_threshold=0.45, max_det=300)  # fmt: skip
    torch.cuda.synchronize()
    xywh = out["boxes"].cpu().numpy()
    half = xywh[..., 2:] / np.float32(2)
    xyxy = np.concatenate([xywh[..., :2] - half, xywh[..., :2] + half], -1)
    scores, classes = out["scores"].cpu().numpy(), out["classes"].cpu().numpy()
    kept = nms.batched_non_max_suppression(
        xyxy, scores, classes, conf_threshold=0.3, iou_threshold=0.45, max_det=300, class_offset=None
    )
    for b, k in enumerate(kept):
        assert len(k) > 20 and int(num[b]) == len(k), f"image {b}, seed {SEED}"
        got = records[b, : len(k)].cpu().numpy()
        np.testing.assert_array_equal(got[:, 7].astype(np.int64), k, err_msg=f"image {b}, seed {SEED}")
        np.testing.assert_array_equal(got[:, :4], xywh[b][k], err_msg=f"image {b}, seed {SEED}")
        assert not np.isnan(records[b, len(k) :].cpu().numpy()).any()


# ---- the pipeline: needs a TensorRT module (network definition) and the yolov5 package ----------------------
def _needs_network() -> None:
    from trtx_base import backend

    try:
        backend.get()
    except backend.BackendUnavailable as exc:
        pytest.skip(f"needs a TensorRT Python module to define the network: {exc}")
    if importlib.util.find_spec("yolov5") is None or importlib.util.find_spec("ultralytics") is None:
        pytest.skip("needs the yolov5 and ultralytics packages (pip install --no-deps yolov5==7.0.14 ultralytics)")


@pytest.fixture(scope="module")
def yolov5():
    _needs_network()
    from netdefs import yolov5

    return yolov5


@pytest.fixture(scope="module")
def weights(tmp_path_factory, yolov5) -> str:
    import gen_wts

    path = tmp_path_factory.mktemp("yolov5_gpu") / "yolov5n.wts"
    assert gen_wts.main(["-m", "yolov5:yolov5n", "--random-init", "-o", str(path), "-q"]) == 0
    return str(path)


def _assets() -> tuple[str, str]:
    assets = sources.sample_images()
    return str(assets / "bus.jpg"), str(assets / "zidane.jpg")


def _net(yolov5, path: str, **flags):
    import wts
    from trtx.net import Net

    w = wts.load(path)
    cfg = yolov5.config.configure(argparse.Namespace(command="infer", **flags), w)
    net = Net(w)
    yolov5.decode.define(net, cfg)
    return net, cfg


def test_gpu_pipeline_matches_cpu_pipeline(yolov5, weights):
    """--device cuda: GPU letterbox -> reference executor on CUDA -> GPU NMS gives detections that are the CPU
    pipeline's candidates (the letterboxes differ by <= 1/255, so within 1e-2) and a greedy NMS of them up to
    near-tied scores; postprocess maps them onto the original images."""
    import dataclasses

    import cv2

    from netdefs.detection.compare import compare_detections
    from trtx import reference

    bus, zidane = _assets()
    images = [cv2.imread(bus), cv2.imread(zidane), cv2.imread(bus)[::-1, ::2].copy()]
    net, cpu_cfg = _net(yolov5, weights, imgsz="320", conf=1e-4)
    _, gpu_cfg = _net(yolov5, weights, imgsz="320", conf=1e-4, device="cuda")
    cpu_feeds, cpu_ctx = yolov5.app.preprocess(images, cpu_cfg)
    gpu_feeds, gpu_ctx = yolov5.app.preprocess(images, gpu_cfg)
    assert gpu_feeds["images"].is_cuda
    assert np.abs(gpu_feeds["images"].cpu().numpy() - cpu_feeds["images"]).max() <= 1 / 255 + 1e-6
    cpu_out = {k: v.numpy() for k, v in reference.execute(net.network, cpu_feeds).items()}
    gpu_out = reference.execute(net.network, gpu_feeds, device="cuda")
    gpu_dets = yolov5.app.gpu_detections(gpu_out, gpu_cfg)
    exactly_per_class = dataclasses.replace(cpu_cfg.rule, class_offset=None)  # the GPU kernel's NMS
    passed, message = compare_detections(gpu_dets, yolov5.torch_side.candidates(cpu_out), exactly_per_class, 1e-2)
    assert passed and all(len(d) for d in gpu_dets), message
    gpu_res = yolov5.app.postprocess(gpu_out, gpu_ctx, gpu_cfg)
    for d, r, image in zip(gpu_dets, gpu_res, images):
        assert len(r["scores"]) == len(d) and (r["boxes"][:, 2:] <= np.array(image.shape[1::-1])).all()


def test_check_on_cuda(yolov5, weights, capsys):
    from trtx import cli

    bus, _ = _assets()
    rc = cli.main(
        yolov5.NETDEF, ["check", "-w", weights, "--image", bus, "--conf", "0.0001", "--device", "cuda", "--json"]
    )
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["passed"] and result["max_rel_err"] <= 1e-4


def test_bench_reference_on_cuda(yolov5, weights, capsys):
    from trtx import cli

    bus, _ = _assets()
    rc = cli.main(yolov5.NETDEF, ["bench", "-w", weights, "--backend", "reference", "--device", "cuda", "--image", bus,
                           "--batch", "1,16", "--iters", "5", "--warmup", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in ("1", "16")]
    assert [r[0] for r in rows] == ["1", "16"] and all(float(r[-1]) > 0 for r in rows)
    print(out)
