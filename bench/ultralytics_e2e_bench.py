"""YOLO26n's NMS-free post-processing vs YOLO11n's NMS path, on one GPU, on the same image batch, in one run.

bus.jpg and zidane.jpg, letterboxed to 640x640 and repeated to the batch, go through both models (random weights,
seed 0: their scores sit near 1e-4, so each model's confidence threshold is the score that 1% of bus.jpg's anchors
exceed -- some 84 candidates per image, a busy scene). Each model's post-processing runs on its own prediction on
the GPU; median wall time per batch, the final synchronize included:

* ultralytics (torch): YOLO11n -- ``non_max_suppression`` (torchvision's NMS); YOLO26n -- its end-to-end
  ``Detect.postprocess`` (the two top-k) then ``non_max_suppression(end2end=True)`` (the conf filter);
* ours: YOLO11n -- ``app.gpu_detect``, what ``infer`` runs on CUDA outputs (each anchor's record, the ``nms``
  plugin's kernels, the kept rows to the host); YOLO26n -- the network's top-k (``decode.end2end_outputs``) alone
  as a TensorRT engine on the same decoded candidates, then ``app.end2end_detections`` (k rows to the host, the conf
  filter);
* whole engines (input on the GPU): YOLO11n's engine (decoded candidates) + ``app.gpu_detect`` vs YOLO26n's engine
  (the top-k inside) + ``app.end2end_detections``.

The TensorRT columns need a backend that executes engines on this GPU; ``--device cpu`` is a smoke run of the
torch columns, with the top-k network in the reference executor instead of an engine.

    python bench/ultralytics_e2e_bench.py --device cuda --batch 1 8 --out bench/results/ultralytics_e2e_h200.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netdefs import sources as model_sources  # noqa: E402
from trtx import letterbox as lb  # noqa: E402
from trtx import sources  # noqa: E402
from trtx_base import backend  # noqa: E402

SIZE, IOU, MAX_DET = 640, 0.7, 300


def timed(fn, iters: int, warmup: int, gpu: bool) -> float:
    """Median ms of ``fn()`` (CUDA synchronized after each call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if gpu:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class Model:
    """One ultralytics model (random weights, seed 0) on the device, its netdef configuration, and its
    post-processing the two ways."""

    def __init__(self, spec: str, device: str) -> None:
        import wts
        from netdefs.ultralytics import config

        torch_model = model_sources.build_model(f"ultralytics:{spec}", seed=0)
        self.weights = model_sources.state_dict_for_wts(torch_model, f"ultralytics:{spec}")
        self.cfg = config.configure(argparse.Namespace(command="bench", imgsz=str(SIZE)), wts.WeightMap(self.weights))
        self.head = torch_model.model[-1]
        if self.cfg.end2end:
            torch_model.end2end = True
        self.model = torch_model.to(device).eval()
        self.spec, self.device = spec, device

    def prediction(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 4 + nc, A]: the decoded candidates ultralytics' post-processing takes (YOLO26n: its one-to-one
        branch's, corners)."""
        with torch.no_grad():
            y, preds = self.model(x)
            return self.head._inference(preds["one2one"]) if self.cfg.end2end else y

    def ultralytics_post(self, pred: torch.Tensor, conf: float) -> list[torch.Tensor]:
        from ultralytics.utils.nms import non_max_suppression

        with torch.no_grad():
            if self.cfg.end2end:
                return non_max_suppression(self.head.postprocess(pred.permute(0, 2, 1)), conf, IOU, max_det=MAX_DET,
                                           end2end=True)  # fmt: skip
            return non_max_suppression(pred, conf, IOU, max_det=MAX_DET)

    def network(self, command: str = "build"):
        """The whole network as the netdef defines it for ``command`` (YOLO26n: ending in its top-k)."""
        import wts
        from netdefs.ultralytics import config, decode
        from trtx.net import Net

        weights = wts.WeightMap(self.weights)
        cfg = config.configure(argparse.Namespace(command=command, imgsz=str(SIZE)), weights)
        net = Net(weights, name=self.spec)
        decode.define(net, cfg)
        return net


def topk_network(cfg):
    """decode.end2end_outputs alone: inputs the decoded candidates ``boxes`` [B, 4, A] and ``scores`` [B, nc, A]."""
    from netdefs.ultralytics import decode
    from trtx.net import Net

    a = sum((SIZE // s) ** 2 for s in cfg.strides)
    net = Net({}, name="topk")
    pred = {"boxes": net.input("boxes", (-1, 4, a)), "scores": net.input("scores", (-1, cfg.num_classes, a))}
    decode.end2end_outputs(net, pred, SimpleNamespace(num_classes=cfg.num_classes, max_det=MAX_DET, candidates=False),
                           "topk")  # fmt: skip
    return net


def engine_of(net, max_batch: int, folder: Path):
    from trtx import runtime
    from trtx.build import BatchSpec, BuildOptions, build_serialized, metadata, save_engine

    options = BuildOptions(batch=BatchSpec(1, max_batch, max_batch), progress=False)
    path = folder / f"{net.network.name}.engine"
    save_engine(path, build_serialized(net, options), metadata(net, options, netdef="ultralytics"))
    return runtime.Engine(path)


def threshold(model: Model, x: torch.Tensor) -> float:
    """The score that 1% of the image's anchors exceed (their best class)."""
    scores = model.prediction(x[:1])[0, 4:].max(0).values.float().cpu().numpy()
    scores = np.sort(scores)[::-1]
    return float(np.nextafter(scores[len(scores) // 100], np.float32(0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--iters", type=int, default=50, help="timed iterations per measurement (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first (default 5)")
    parser.add_argument("--device", default="cuda", help="cuda[:N] (the benchmark) or cpu (a smoke run; default cuda)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print("ultralytics_e2e_bench: needs a CUDA device (or --device cpu for a smoke run)", file=sys.stderr)
        return 2
    if gpu:
        torch.cuda.set_device(torch.device(args.device).index or 0)  # 'cuda' alone names no index
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import cv2

    from netdefs.ultralytics import app

    sources.prepare_environment()
    v11, v26 = Model("yolo11n", args.device), Model("yolo26n", args.device)
    assets = sources.sample_images()
    frames = [cv2.imread(str(assets / "bus.jpg")), cv2.imread(str(assets / "zidane.jpg"))]
    first = torch.from_numpy(lb.letterbox_batch(frames[:1], (SIZE, SIZE))[0]).to(args.device)
    v11.cfg.conf, v26.cfg.conf = threshold(v11, first), threshold(v26, first)
    try:
        ok, why = backend.get().can_execute() if gpu else (False, "--device cpu")
    except backend.BackendUnavailable as exc:
        ok, why = False, f"no TensorRT module ({exc})"
    engines = {}
    with tempfile.TemporaryDirectory(prefix="ultralytics_e2e_bench_") as tmp:
        if ok:
            top = max(args.batch)
            engines = {"topk": engine_of(topk_network(v26.cfg), top, Path(tmp)),
                       "yolo11n": engine_of(v11.network(), top, Path(tmp)),
                       "yolo26n": engine_of(v26.network(), top, Path(tmp))}  # fmt: skip
        rows = [measure(b, frames, v11, v26, engines, args, gpu, app) for b in args.batch]
    text = report(args, v11, v26, rows, why if not ok else "")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


def measure(b: int, frames, v11: Model, v26: Model, engines: dict, args, gpu: bool, app) -> dict:
    """One batch: every column's median ms, and what each side kept."""
    x = torch.from_numpy(lb.letterbox_batch([frames[i % 2] for i in range(b)], (SIZE, SIZE))[0]).to(args.device)
    p11, p26 = v11.prediction(x), v26.prediction(x)
    t = lambda fn: timed(fn, args.iters, args.warmup, gpu)  # noqa: E731
    row = {"batch": b, "cand11": float((p11[:, 4:].max(1).values > v11.cfg.conf).sum()) / b}
    row["u11"] = t(lambda: v11.ultralytics_post(p11, v11.cfg.conf))
    row["u26"] = t(lambda: v26.ultralytics_post(p26, v26.cfg.conf))
    row["kept_u11"] = sum(map(len, v11.ultralytics_post(p11, v11.cfg.conf))) / b
    row["kept_u26"] = sum(map(len, v26.ultralytics_post(p26, v26.cfg.conf))) / b
    native = {"boxes": p11[:, :4].transpose(1, 2).contiguous(), "scores": p11[:, 4:].transpose(1, 2).contiguous()}
    candidates = {"boxes": p26[:, :4].contiguous(), "scores": p26[:, 4:].contiguous()}
    if gpu:
        row["o11"] = t(lambda: app.gpu_detect(native, v11.cfg))
        row["kept_o11"] = sum(map(len, app.gpu_detect(native, v11.cfg))) / b
    if "topk" in engines:
        engine = engines["topk"]

        def ours26():
            outputs = engine.run(candidates)
            return app.end2end_detections({k: torch.as_tensor(v, device=x.device) for k, v in outputs.items()},
                                          v26.cfg)  # fmt: skip

        row["o26"] = t(ours26)
        row["kept_o26"] = sum(map(len, ours26())) / b
        e11, e26 = engines["yolo11n"], engines["yolo26n"]

        def whole11():
            out = {k: torch.as_tensor(v, device=x.device) for k, v in e11.run({"images": x}).items()}
            return app.gpu_detect(out, v11.cfg)

        def whole26():
            out = {k: torch.as_tensor(v, device=x.device) for k, v in e26.run({"images": x}).items()}
            return app.end2end_detections(out, v26.cfg)

        row["w11"], row["w26"] = t(whole11), t(whole26)
    elif not gpu:  # the smoke run: the top-k network in the reference executor
        from trtx import reference

        net = topk_network(v26.cfg)

        def ref26():
            return app.end2end_detections(reference.execute(net.network, candidates), v26.cfg)

        row["o26"] = t(ref26)
        row["kept_o26"] = sum(map(len, ref26())) / b
    return row


def report(args, v11: Model, v26: Model, rows: list[dict], why: str) -> str:
    gpu = args.device.startswith("cuda")
    device = torch.cuda.get_device_name() if gpu else "CPU, a smoke run (ours: the reference executor)"
    import ultralytics

    f = lambda r, k: f"{r[k]:.3f}" if k in r else "-"  # noqa: E731
    kept = lambda r, k: f"{r[k]:.1f}" if k in r else "-"  # noqa: E731
    ratio = lambda r, a, b: f"**{r[a] / r[b]:.2f}x**" if a in r and b in r else "-"  # noqa: E731
    lines = [
        f"# YOLO26n NMS-free post-processing vs YOLO11n NMS ({dt.date.today().isoformat()})",
        "",
        f"- device: {device}; torch {torch.__version__}, ultralytics {ultralytics.__version__}"
        + (f"; TensorRT columns: {why}" if why else ""),
        f"- command: `python3 bench/ultralytics_e2e_bench.py {' '.join(argv_of(args))}`",
        f"- bus.jpg + zidane.jpg at {SIZE}x{SIZE} (8400 anchors), random weights (seed 0); conf: 1% of bus.jpg's "
        f"anchors pass (YOLO11n {v11.cfg.conf:.4g}, YOLO26n {v26.cfg.conf:.4g}); IoU {IOU}, max_det / top-k {MAX_DET}",
        f"- ms per batch, median of {args.iters} after {args.warmup} warm-up, synchronized; ratio = YOLO11n's NMS / "
        "YOLO26n's top-k, the same implementation side, the same run",
        "",
        "| batch | YOLO11n candidates/img | kept/img 11n ultralytics / ours | kept/img 26n ultralytics / ours "
        "| ultralytics: 11n NMS | ultralytics: 26n top-k | ratio | ours: 11n nms kernels | ours: 26n TensorRT "
        "top-k | ratio | engine + post: 11n | engine + post: 26n | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['cand11']:.0f} | {r['kept_u11']:.1f} / {kept(r, 'kept_o11')} "
            f"| {r['kept_u26']:.1f} / {kept(r, 'kept_o26')} | {f(r, 'u11')} | {f(r, 'u26')} | {ratio(r, 'u11', 'u26')} "
            f"| {f(r, 'o11')} | {f(r, 'o26')} | {ratio(r, 'o11', 'o26')} | {f(r, 'w11')} | {f(r, 'w26')} "
            f"| {ratio(r, 'w11', 'w26')} |"
        )
    return "\n".join(lines) + "\n"


def argv_of(args) -> list[str]:
    out = ["--device", args.device, "--batch", *map(str, args.batch), "--iters", str(args.iters)]
    return out + (["--out", str(args.out)] if args.out else [])


if __name__ == "__main__":
    sys.exit(main())
