"""YOLOv5s end to end on one GPU: preprocessing, inference, post-processing per image, batch 1 and max batch.

Every stage is timed with its baseline in the same run (median wall time, CUDA synchronized after each stage):

* preprocessing: OpenCV letterbox on the CPU + upload (ultralytics' way) vs the fused letterbox kernel
  (host images uploaded by it);
* inference: the yolov5 package's PyTorch model (eager fp32, TF32 off) vs the network in the reference executor
  on CUDA (where a TensorRT Python module is installed to define it) vs the TensorRT engine (where this
  machine's backend executes one), same weights;
* post-processing, on the network's outputs as PyTorch computes them (boxes, scores, classes on the GPU):
  yolov5's non_max_suppression (torchvision, on the GPU) on the PyTorch prediction vs trtx.nms (exact, CPU,
  after the device-to-host copy) vs the nms plugin's kernels on the device outputs.

The weights are random (gen_wts --random-init). Their scores are ~1e-4, so the confidence threshold is set to
the score that 1% of the anchors of the first batch exceed (~250 candidates per 640x640 image, a busy scene).

    python bench/yolov5_bench.py [--imgsz 640] [--batch 1 16] [--iters 30] [--out bench/results/yolov5_h100.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gen_wts  # noqa: E402
from netdefs import yolov5  # noqa: E402
from trtx import backend, reference  # noqa: E402
from trtx.net import Net  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--imgsz", default="640")
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

    import wts

    assets = Path(next(iter(importlib.util.find_spec("ultralytics").submodule_search_locations))) / "assets"
    frames = [cv2.imread(str(assets / "bus.jpg")), cv2.imread(str(assets / "zidane.jpg"))]
    path = Path(tempfile.mkdtemp(prefix="yolov5_bench_")) / "yolov5s.wts"
    assert gen_wts.main(["-m", "yolov5:yolov5s", "--random-init", "-o", str(path), "-q"]) == 0
    weights = wts.load(path)
    ns = argparse.Namespace(command="bench", imgsz=args.imgsz, conf=1e-4)
    cfg = yolov5.configure(ns, weights)
    gpu_cfg = yolov5.configure(argparse.Namespace(**vars(ns), device=args.device), weights)
    model = yolov5.torch_model(cfg, weights).to(args.device).eval()
    try:  # the network (reference executor, TensorRT) needs a TensorRT module to be defined
        net = Net(weights)
        yolov5.define(net, cfg)
    except backend.BackendUnavailable as exc:
        net, no_network = None, f"no TensorRT module ({exc})"
    if net is None:
        engine, why = None, no_network
    else:
        engine, why = _engine(net, path, max(args.batch)) if gpu else (None, "not on a GPU")

    rows = []
    for b in args.batch:
        images = [frames[i % 2] for i in range(b)]
        x = yolov5.preprocess(images, gpu_cfg)[0]["images"]
        x = x if gpu else torch.from_numpy(x)
        with torch.no_grad():
            # the network's outputs as PyTorch computes them (= the reference executor's, see check)
            out = {k: v.contiguous() for k, v in yolov5.torch_forward(model, {"images": x}).items()}
            if b == args.batch[0]:  # 1% of the anchors pass: a busy scene's candidate count
                cfg.conf = gpu_cfg.conf = float(torch.quantile(out["scores"][0].float().cpu(), 0.99))
            pred = model(x)[0]

        def pre_cpu(images=images):
            return torch.from_numpy(yolov5.preprocess(images, cfg)[0]["images"]).to(args.device)

        def infer_ref(x=x):
            with torch.no_grad():
                return reference.execute(net.network, {"images": x}, device=args.device)

        def infer_torch(x=x):
            with torch.no_grad():
                return model(x)

        def infer_trt(x=x):
            engine.run({"images": x})
            engine.synchronize()

        def post_cpu(out=out):
            return yolov5.detections_from_outputs({k: v.cpu().numpy() for k, v in out.items()}, cfg)

        stages = {
            "pre_cpu": pre_cpu,
            "infer_torch": infer_torch,
            "post_cpu": post_cpu,
            "post_yolov5": lambda pred=pred: non_max_suppression(pred, cfg.conf, cfg.iou, max_det=cfg.max_det),
        }
        if gpu:
            stages["pre_gpu"] = lambda images=images: yolov5.preprocess(images, gpu_cfg)
            stages["post_gpu"] = lambda out=out: yolov5.gpu_detections(out, gpu_cfg)
        if net is not None:
            stages["infer_ref"] = infer_ref
        if engine is not None:
            stages["infer_trt"] = infer_trt
        t = {name: timed(fn, args.iters, args.warmup) / b for name, fn in stages.items()}
        rows.append((b, float((out["scores"] > cfg.conf).sum()) / b, t))

    text = _report(args, cfg, rows, engine is not None, why)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _engine(net: Net, path: Path, max_batch: int):
    """A TensorRT engine of the network where this machine's backend executes, else (None, why not)."""
    ok, why = backend.get().can_execute()
    if not ok:
        return None, why
    from trtx import runtime
    from trtx.build import BatchSpec, BuildOptions, build_serialized, metadata, save_engine

    options = BuildOptions(batch=BatchSpec(1, max_batch, max_batch), progress=False)
    engine_path = path.with_suffix(".engine")
    save_engine(engine_path, build_serialized(net, options), metadata(net, options, netdef="yolov5"))
    return runtime.Engine(engine_path), why


def _report(args, cfg, rows, has_engine: bool, why: str) -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    lines = [
        f"# YOLOv5s {cfg.imgsz[1]}x{cfg.imgsz[0]} on {device}",
        "",
        f"- date {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
        f"backend {backend.get().name} {backend.get().version} (TensorRT engine: {'yes' if has_engine else why})",
        f"- command: python bench/yolov5_bench.py --imgsz {args.imgsz} --batch {' '.join(map(str, args.batch))} "
        f"--iters {args.iters} --device {args.device}",
        f"- conf threshold {cfg.conf:.4g} (1% of the anchors of the first batch), iou {cfg.iou}, max_det {cfg.max_det}",
        "- ms per image (median); ratios are against the baseline of the same stage, same run",
        "",
        "| batch | candidates/img | pre: OpenCV + upload | pre: letterbox kernel | ratio | infer: PyTorch eager "
        "| infer: reference executor | infer: TensorRT | post: yolov5 NMS | post: trtx.nms (CPU) | post: nms kernels "
        "| ratio | img/s (kernel pre + TensorRT, else reference, else PyTorch + kernel post) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda t, k: f"{t[k]:.3f}" if k in t else "-"  # noqa: E731
    for b, cand, t in rows:
        pre_ratio = f"{t['pre_cpu'] / t['pre_gpu']:.1f}x" if "pre_gpu" in t else "-"
        post_ratio = f"{t['post_yolov5'] / t['post_gpu']:.1f}x" if "post_gpu" in t else "-"
        infer = t.get("infer_trt", t.get("infer_ref", t["infer_torch"]))
        total = t.get("pre_gpu", t["pre_cpu"]) + infer + t.get("post_gpu", t["post_cpu"])
        lines.append(
            f"| {b} | {cand:.0f} | {fmt(t, 'pre_cpu')} | {fmt(t, 'pre_gpu')} | {pre_ratio} | {fmt(t, 'infer_torch')} "
            f"| {fmt(t, 'infer_ref')} | {fmt(t, 'infer_trt')} | {fmt(t, 'post_yolov5')} | {fmt(t, 'post_cpu')} "
            f"| {fmt(t, 'post_gpu')} | {post_ratio} | {1e3 / total:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
