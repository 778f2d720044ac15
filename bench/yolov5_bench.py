"""YOLOv5s end to end on one GPU: preprocessing, inference, post-processing per image, batch 1 and max batch.

Every stage is timed with its baseline in the same run (median wall time, CUDA synchronized after each stage):

* preprocessing: OpenCV letterbox on the CPU + upload (ultralytics' way) vs the fused letterbox kernel
  (trtx.letterbox.GpuLetterbox, host images uploaded by it);
* inference: the yolov5 package's PyTorch model (eager fp32, TF32 off) vs the network in the reference executor
  on CUDA (only where a TensorRT Python module is installed to define it) vs the TensorRT engine (only where this
  machine's backend executes one);
* post-processing on the network's outputs as PyTorch computes them (cx, cy, w, h / score / class, on the GPU):
  yolov5's non_max_suppression (torchvision, on the GPU) on the PyTorch prediction vs trtx.nms (exact, CPU,
  after the device-to-host copy) vs trtx.nms.gpu_non_max_suppression (the nms plugin's kernels).

The main path needs torch with CUDA, cuda-python, OpenCV and the yolov5 package -- no TensorRT. The model has
random weights (seed 0): its scores are ~1e-4, so the confidence threshold is the score that 1% of bus.jpg's
anchors exceed (~250 candidates per 640x640 image, a busy scene).

    python bench/yolov5_bench.py [--imgsz 640] [--batch 1 16] [--iters 30] [--out bench/results/yolov5_h100.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netdefs import sources as model_sources
from trtx import letterbox as lb  # noqa: E402
from trtx import nms, sources  # noqa: E402
from trtx_base import backend

MAX_NMS, IOU, MAX_DET = 30000, 0.45, 300


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, iters: int, warmup: int = 3) -> float:
    """Median ms of ``fn()`` (CUDA synchronized after each call)."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def native_outputs(pred: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the engine outputs (--postprocess native, NMS after the engine), from Detect's prediction."""
    conf = pred[..., 5:] * pred[..., 4:5]
    scores, classes = conf.max(2)
    return {"boxes": pred[..., :4].contiguous(), "scores": scores.contiguous(), "classes": classes.int()}


def cpu_nms(out: dict[str, torch.Tensor], conf: float) -> list[np.ndarray]:
    """trtx.nms on the host copy of the outputs (yolov5's class-offset NMS, exact)."""
    xywh, scores, classes = (out[k].cpu().numpy() for k in ("boxes", "scores", "classes"))
    half = xywh[..., 2:] / np.float32(2)
    xyxy = np.concatenate([xywh[..., :2] - half, xywh[..., :2] + half], -1)
    return nms.batched_non_max_suppression(xyxy, scores, classes, conf_threshold=conf, iou_threshold=IOU,
                                           max_det=MAX_DET, max_nms=MAX_NMS)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke run: no kernels)")
    parser.add_argument("--out", help="also write the markdown report here")
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print("yolov5_bench: needs a CUDA device (or --device cpu for a smoke run)", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import cv2
    from yolov5.utils.general import non_max_suppression

    assets = sources.sample_images()
    frames = [cv2.imread(str(assets / "bus.jpg")), cv2.imread(str(assets / "zidane.jpg"))]
    size = (args.imgsz, args.imgsz)
    model = model_sources.build_model("yolov5:yolov5s", seed=0)
    network, why = _network(model, args)
    model = model.to(args.device)
    letterbox_kernel = lb.GpuLetterbox(size) if gpu else None
    first = torch.from_numpy(lb.letterbox_batch(frames[:1], size)[0]).to(args.device)
    with torch.no_grad():  # at least 1% of the anchors pass (ties included): a busy scene's candidate count
        scores = np.sort(native_outputs(model(first)[0])["scores"][0].float().cpu().numpy())[::-1]
    conf = float(np.nextafter(scores[len(scores) // 100], np.float32(0)))

    rows = []
    for b in args.batch:
        images = [frames[i % 2] for i in range(b)]

        def pre_cpu(images=images):
            return torch.from_numpy(lb.letterbox_batch(images, size)[0]).to(args.device)

        def pre_gpu(images=images):
            out = torch.empty((len(images), 3, *size), device=args.device)
            return letterbox_kernel(images, out=out, stream=torch.cuda.current_stream())

        x = pre_gpu() if gpu else pre_cpu()
        with torch.no_grad():
            pred = model(x)[0]
        out = native_outputs(pred)

        def infer_torch(x=x):
            with torch.no_grad():
                return model(x)

        stages = {
            "pre_cpu": pre_cpu,
            "infer_torch": infer_torch,
            "post_yolov5": lambda pred=pred, conf=conf: non_max_suppression(pred, conf, IOU, max_det=MAX_DET),
            "post_cpu": lambda out=out, conf=conf: cpu_nms(out, conf),
        }
        if gpu:
            stages["pre_gpu"] = pre_gpu
            stages["post_gpu"] = lambda out=out, conf=conf: nms.gpu_non_max_suppression(
                out["boxes"], out["scores"], out["classes"], conf_threshold=conf, iou_threshold=IOU, max_det=MAX_DET
            )
        if network is not None:
            stages.update(network(x))
        t = {name: timed(fn, args.iters, args.warmup) / b for name, fn in stages.items()}
        rows.append((b, float((out["scores"] > conf).sum()) / b, t))

    text = _report(args, conf, rows, why)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _network(model, args):
    """(x -> {stage: fn}) timing the reference executor (and TensorRT where it executes), or (None, why not)."""
    try:
        backend.get()
    except backend.BackendUnavailable as exc:
        return None, f"no TensorRT module to define the network ({exc})"
    import wts
    from netdefs.yolov5 import config, decode
    from trtx import reference
    from trtx.net import Net

    weights = wts.WeightMap(model_sources.state_dict_for_wts(model, "yolov5:yolov5s"))
    cfg = config.configure(argparse.Namespace(command="bench", imgsz=str(args.imgsz)), weights)
    net = Net(weights)
    decode.define(net, cfg)
    engine, why = None, "not on a GPU"
    if args.device.startswith("cuda"):
        engine, why = _engine(net, max(args.batch))

    def stages(x):
        def infer_ref():
            with torch.no_grad():
                return reference.execute(net.network, {"images": x}, device=args.device)

        result = {"infer_ref": infer_ref}
        if engine is not None:
            result["infer_trt"] = lambda: (engine.run({"images": x}), engine.synchronize())
        return result

    return stages, why


def _engine(net, max_batch: int):
    """A TensorRT engine of the network where this machine's backend executes one, else (None, why not)."""
    import tempfile

    ok, why = backend.get().can_execute()
    if not ok:
        return None, why
    from trtx import runtime
    from trtx.build import BatchSpec, BuildOptions, build_serialized, metadata, save_engine

    options = BuildOptions(batch=BatchSpec(1, max_batch, max_batch), progress=False)
    with tempfile.TemporaryDirectory(prefix="yolov5_bench_") as tmp:  # Engine reads the file when made
        path = Path(tmp) / "yolov5s.engine"
        save_engine(path, build_serialized(net, options), metadata(net, options, netdef="yolov5"))
        return runtime.Engine(path), why


def _report(args, conf: float, rows, why: str) -> str:
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    lines = [
        f"# YOLOv5s {args.imgsz}x{args.imgsz} on {device}",
        "",
        f"- date {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}; "
        f"reference executor / TensorRT columns: {why}",
        f"- command: python bench/yolov5_bench.py --imgsz {args.imgsz} --batch {' '.join(map(str, args.batch))} "
        f"--iters {args.iters} --device {args.device}",
        f"- conf threshold {conf:.4g} (at least 1% of bus.jpg's anchors pass), iou {IOU}, max_det {MAX_DET}",
        "- ms per image (median); ratios are against the baseline of the same stage, same run",
        "",
        "| batch | candidates/img | pre: OpenCV + upload | pre: letterbox kernel | ratio | infer: PyTorch eager "
        "| infer: reference executor | infer: TensorRT | post: yolov5 NMS | post: trtx.nms (CPU) | post: nms kernels "
        "| ratio | img/s (kernel pre + TensorRT, else PyTorch + kernel post) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda t, k: f"{t[k]:.3f}" if k in t else "-"  # noqa: E731
    for b, cand, t in rows:
        pre_ratio = f"{t['pre_cpu'] / t['pre_gpu']:.1f}x" if "pre_gpu" in t else "-"
        post_ratio = f"{t['post_yolov5'] / t['post_gpu']:.1f}x" if "post_gpu" in t else "-"
        infer = t.get("infer_trt", t["infer_torch"])
        total = t.get("pre_gpu", t["pre_cpu"]) + infer + t.get("post_gpu", t["post_cpu"])
        lines.append(
            f"| {b} | {cand:.0f} | {fmt(t, 'pre_cpu')} | {fmt(t, 'pre_gpu')} | {pre_ratio} | {fmt(t, 'infer_torch')} "
            f"| {fmt(t, 'infer_ref')} | {fmt(t, 'infer_trt')} | {fmt(t, 'post_yolov5')} | {fmt(t, 'post_cpu')} "
            f"| {fmt(t, 'post_gpu')} | {post_ratio} | {1e3 / total:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
