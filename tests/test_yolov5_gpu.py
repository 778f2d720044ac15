"""YOLOv5 on a GPU (marker ``gpu``; run by the lead on an H100): NMS after the engine with the nms plugin's
kernels, the GPU letterbox in the pipeline, check and bench with the reference executor on CUDA."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import gen_wts
from netdefs import yolov5
from trtx import cli
from trtx.net import Net

pytestmark = pytest.mark.gpu
ASSETS = Path(next(iter(importlib.util.find_spec("ultralytics").submodule_search_locations))) / "assets"
BUS, ZIDANE = str(ASSETS / "bus.jpg"), str(ASSETS / "zidane.jpg")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("yolov5_gpu") / "yolov5n.wts"
    assert gen_wts.main(["-m", "yolov5:yolov5n", "--random-init", "-o", str(path), "-q"]) == 0
    return str(path)


def _net(path: str, **flags):
    import wts

    w = wts.load(path)
    cfg = yolov5.configure(argparse.Namespace(command="infer", **flags), w)
    net = Net(w)
    yolov5.define(net, cfg)
    return net, cfg


def _images():
    import cv2

    return [cv2.imread(BUS), cv2.imread(ZIDANE), cv2.imread(BUS)[::-1, ::2].copy()]


def test_gpu_nms_equals_exact_cpu_nms(weights):
    """gpu_detections (nms plugin kernels) = trtx.nms exactly per class: same boxes, order and bits."""
    import torch

    from trtx import reference

    net, cfg = _net(weights, imgsz="320", conf=1e-4)
    feeds, _ = yolov5.preprocess(_images(), cfg)
    out = reference.execute(net.network, feeds)
    cpu = yolov5.detections_from_outputs({k: v.numpy() for k, v in out.items()}, cfg, class_offset=None)
    gpu = yolov5.gpu_detections({k: v.cuda() for k, v in out.items()}, cfg)
    assert isinstance(gpu[0], np.ndarray) and all(len(d) for d in cpu)
    for c, g in zip(cpu, gpu):
        np.testing.assert_array_equal(g, c)
    assert torch.cuda.is_available()


def test_gpu_pipeline_matches_cpu_pipeline(weights):
    """--device cuda: GPU letterbox -> reference executor on CUDA -> GPU NMS gives the CPU pipeline's detections
    on the original images (the letterboxes differ by <= 1/255, so up to tie swaps)."""
    from trtx import reference

    images = _images()
    net, cpu_cfg = _net(weights, imgsz="320", conf=1e-4)
    _, gpu_cfg = _net(weights, imgsz="320", conf=1e-4, device="cuda")
    cpu_feeds, cpu_ctx = yolov5.preprocess(images, cpu_cfg)
    gpu_feeds, gpu_ctx = yolov5.preprocess(images, gpu_cfg)
    assert gpu_feeds["images"].is_cuda
    assert np.abs(gpu_feeds["images"].cpu().numpy() - cpu_feeds["images"]).max() <= 1 / 255 + 1e-6
    cpu_res = yolov5.postprocess(
        {k: v.numpy() for k, v in reference.execute(net.network, cpu_feeds).items()}, cpu_ctx, cpu_cfg
    )
    gpu_res = yolov5.postprocess(reference.execute(net.network, gpu_feeds, device="cuda"), gpu_ctx, gpu_cfg)
    for c, g in zip(cpu_res, gpu_res):
        as_rows = lambda r: np.concatenate([r["boxes"], r["scores"][:, None], r["classes"][:, None]], 1)  # noqa: E731
        passed, message = yolov5.compare_detections([as_rows(g)], [as_rows(c)], cpu_cfg.iou, rtol=1e-2,
                                                    max_det=cpu_cfg.max_det)  # fmt: skip
        assert passed, message


def test_check_on_cuda(weights, capsys):
    rc = cli.main(yolov5, ["check", "-w", weights, "--image", BUS, "--conf", "0.0001", "--device", "cuda", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["passed"] and result["max_rel_err"] <= 1e-4


def test_bench_reference_on_cuda(weights, capsys):
    rc = cli.main(yolov5, ["bench", "-w", weights, "--backend", "reference", "--device", "cuda", "--image", BUS,
                           "--batch", "1,16", "--iters", "5", "--warmup", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in ("1", "16")]
    assert [r[0] for r in rows] == ["1", "16"] and all(float(r[-1]) > 0 for r in rows)
    print(out)
