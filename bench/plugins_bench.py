"""yolo_decode + nms (our kernels) versus a torch decode + torchvision.ops.batched_nms, same inputs, same run.

The head is YOLOv5s at 640x640: three levels [B, 255, 80/40/20, 80/40/20], 80 classes, the v7.0 anchors.
Objectness logits are N(-5.2, 2) so about 2% of the 25200 anchors per image pass conf 0.25 (a busy street
scene); class logits N(0, 2). Both pipelines run end to end from Python: every launch, allocation and the
final synchronization are inside the timed region. The baseline is YOLOv5 v7.0's: Detect's sigmoid/grid
decode, then per image the confidence filter, xywh->xyxy and torchvision.ops.batched_nms, max_det 300.
The last column replays our pipeline as a CUDA graph: its GPU time alone, without Python's launch overhead
(as inside a TensorRT engine).

    python bench/plugins_bench.py --batch 1 8 --out /tmp/plugins_bench.md   # recorded: bench/results/plugins_h100.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.ops.nms import Nms  # noqa: E402
from plugins.ops.yolo_decode import YoloDecode  # noqa: E402

ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
STRIDES = (8, 16, 32)
NC, NA, CONF, IOU, MAX_DET = 80, 3, 0.25, 0.45, 300


def heads(batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    out = []
    for stride in STRIDES:
        n = 640 // stride
        x = torch.randn(batch, NA, 5 + NC, n, n, device="cuda", generator=g) * 2
        x[:, :, 4] -= 5.2
        out.append(x.view(batch, NA * (5 + NC), n, n).contiguous())
    return out


class Ours:
    def __init__(self) -> None:
        self.decoders = [
            YoloDecode(num_classes=NC, anchors=a, stride=s, conf_threshold=CONF, max_det=1000, level=i)
            for i, (a, s) in enumerate(zip(ANCHORS, STRIDES))
        ]
        self.nms = Nms(iou_threshold=IOU, score_threshold=CONF, max_det=MAX_DET)

    def decode(self, xs):
        records = []
        for decoder, x in zip(self.decoders, xs):
            records += decoder.execute([x], poison=False)
        return records

    def __call__(self, xs):
        return self.nms.execute(self.decode(xs), poison=False)


class Torch:
    """YOLOv5 v7.0: Detect's inference decode, then non_max_suppression's per-image filter + batched_nms."""

    def __init__(self) -> None:
        self.grids, self.anchor_grids = [], []
        for anchors, stride in zip(ANCHORS, STRIDES):
            n = 640 // stride
            y, x = torch.meshgrid(torch.arange(n, device="cuda"), torch.arange(n, device="cuda"), indexing="ij")
            self.grids.append(torch.stack((x, y), 2).view(1, 1, n, n, 2).float() - 0.5)
            self.anchor_grids.append(torch.tensor(anchors, device="cuda", dtype=torch.float32).view(1, NA, 1, 1, 2))

    def decode(self, xs):
        z = []
        for x, grid, anchor_grid, stride in zip(xs, self.grids, self.anchor_grids, STRIDES):
            b, _, ny, nx = x.shape
            y = x.view(b, NA, 5 + NC, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
            xy, wh, conf = y.split((2, 2, NC + 1), 4)
            z.append(torch.cat(((xy * 2 + grid) * stride, (wh * 2) ** 2 * anchor_grid, conf), 4).view(b, -1, 5 + NC))
        return torch.cat(z, 1)

    def nms(self, pred):
        out = []
        for x in pred:
            x = x[x[:, 4] > CONF]
            x[:, 5:] *= x[:, 4:5]
            conf, j = x[:, 5:].max(1)
            box = torch.cat((x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2), 1)
            keep = conf > CONF
            box, conf, j = box[keep], conf[keep], j[keep]
            i = torchvision.ops.batched_nms(box, conf, j, IOU)[:MAX_DET]
            out.append(torch.cat((box[i], conf[i, None], j[i, None].float()), 1))
        return out

    def __call__(self, xs):
        return self.nms(self.decode(xs))


def timed(fn, xs, iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn(xs)
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(xs)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def graph_time(fn, xs, iters: int) -> float | None:
    """Median GPU time of ``fn(xs)`` replayed as a CUDA graph (no Python or launch overhead); None if not capturable."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn(xs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn(xs)
    except Exception as exc:  # noqa: BLE001
        print(f"CUDA graph capture failed: {exc}", file=sys.stderr)
        return None
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def summary(times: list[float]) -> str:
    q = statistics.quantiles(times, n=10)
    return f"{statistics.median(times):.3f} ms (p10 {q[0]:.3f}, p90 {q[-1]:.3f})"


def compare_row(ours, base, x, records, suppress, args) -> str:
    """The timing cells of one table row, from "kept/img" on: ours (``ours(x)`` -> (num, dets), ``ours.decode``,
    ``suppress(records)``) against a baseline (``base(x)`` -> kept per image, ``base.decode``, ``base.nms``) on the
    same input, and ours as one CUDA graph."""
    num, _ = ours(x)
    kept_base = [len(o) for o in base(x)]
    agree = num.tolist() == kept_base
    t_ours, t_base = timed(ours, x, args.iters, args.warmup), timed(base, x, args.iters, args.warmup)
    t_od = timed(ours.decode, x, args.iters, args.warmup)
    t_on = timed(suppress, records, args.iters, args.warmup)
    pred = base.decode(x)
    t_bd = timed(base.decode, x, args.iters, args.warmup)
    t_bn = timed(base.nms, pred, args.iters, args.warmup)
    gpu = graph_time(ours, x, args.iters)
    ratio = statistics.median(t_base) / statistics.median(t_ours)
    kept = f"{float(num.float().mean()):.1f} / {sum(kept_base) / len(kept_base):.1f}{'' if agree else ' (differ)'}"
    return (
        f"{kept} | {summary(t_ours)} | {summary(t_base)} | **{ratio:.2f}x** "
        f"| {statistics.median(t_od):.3f} ms | {statistics.median(t_on):.3f} ms "
        f"| {statistics.median(t_bd):.3f} ms | {statistics.median(t_bn):.3f} ms "
        f"| {'n/a' if gpu is None else f'{gpu:.3f} ms'} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--iters", type=int, default=100, help="timed iterations per measurement (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed iterations first (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random heads (default 0)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA device", file=sys.stderr)
        return 2
    ours, base = Ours(), Torch()
    lines = [
        f"# yolo_decode + nms vs torch decode + torchvision.ops.batched_nms ({dt.date.today().isoformat()})",
        "",
        f"- card: {torch.cuda.get_device_name()}; torch {torch.__version__}, torchvision {torchvision.__version__}",
        f"- command: `python3 {' '.join(['bench/plugins_bench.py', *(argv or sys.argv[1:])])}`",
        f"- head: YOLOv5s 640x640 (3 levels, 80 classes), conf {CONF}, IoU {IOU}, max_det {MAX_DET}; "
        f"median of {args.iters} calls after {args.warmup} warm-up, wall clock incl. final synchronize",
        "",
        "| batch | candidates/img | kept/img ours / torch | ours (decode+nms) | torch (decode+batched_nms) "
        "| torch / ours | ours decode only | ours nms only | torch decode only | torch nms only "
        "| ours as CUDA graph (GPU time) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for batch in args.batch:
        xs = heads(batch, args.seed)
        records = ours.decode(xs)
        candidates = sum(int(n.sum()) for n in records[0::2]) / batch
        row = compare_row(ours, base, xs, records, lambda r: ours.nms.execute(r, poison=False), args)
        lines.append(f"| {batch} | {candidates:.0f} | {row}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
