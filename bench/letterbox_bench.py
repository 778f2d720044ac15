"""The fused letterbox kernel on a 1920x1080 frame -> 640x640, against its bandwidth floor and two baselines.

* kernel: trtx/kernels/letterbox.cu on a device-resident BGR frame (CUDA events around the launches only);
* floor: the bytes the kernel must move -- the source rows its bilinear taps touch, plus the fp32 output --
  divided by the device-to-device copy bandwidth measured in the same run (torch copy of 256 MiB);
* baselines, same run: OpenCV's letterbox on the CPU (what ultralytics does), and a torch GPU letterbox
  (permute, F.interpolate(bilinear), pad, /255 -- four kernels and temporaries);
* host frame: the same kernel fed from a numpy frame (upload included, pageable memory).

    python bench/letterbox_bench.py [--iters 200] [--batch 1 4] [--out bench/results/letterbox_h100.md]
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trtx import letterbox as lb  # noqa: E402

SRC = (1080, 1920)
DST = (640, 640)


def cuda_time(fn, iters: int, warmup: int = 10) -> float:
    """Median ms per call, CUDA events around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def wall_time(fn, iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth(iters: int) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    a = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = cuda_time(lambda: b.copy_(a), iters)
    return 2 * a.numel() / (ms * 1e-3)


def touched_source_bytes(geometry: lb.Letterbox) -> int:
    """Source rows the bilinear taps of the resized area read (the kernel's source_coord), times the row size."""
    h, w = geometry.src
    scale = np.float32(h / geometry.new[1])
    f = (np.arange(geometry.new[1], dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    i0 = np.clip(np.floor(f).astype(np.int64), 0, h - 1)
    rows = np.unique(np.concatenate([i0, np.minimum(i0 + 1, h - 1)]))
    return int(rows.size) * w * 3


def torch_letterbox(frames: torch.Tensor, geometry: lb.Letterbox) -> torch.Tensor:
    x = frames.permute(0, 3, 1, 2).flip(1).float()
    x = F.interpolate(x, size=(geometry.new[1], geometry.new[0]), mode="bilinear", align_corners=False)
    bottom = geometry.dst[0] - geometry.new[1] - geometry.top
    right = geometry.dst[1] - geometry.new[0] - geometry.left
    x = F.pad(x, (geometry.left, right, geometry.top, bottom), value=114.0)
    return x / 255.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", help="also write the result table (markdown) here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("letterbox_bench: needs a CUDA device", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*SRC, 3), dtype=np.uint8)
    geometry = lb.Letterbox.fit(SRC, DST)
    bandwidth = copy_bandwidth(50)
    lines = [
        f"# letterbox {SRC[1]}x{SRC[0]} -> {DST[1]}x{DST[0]}",
        "",
        f"- card: {torch.cuda.get_device_name()}, date {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"torch {torch.__version__}",
        f"- command: python bench/letterbox_bench.py --iters {args.iters} --batch {' '.join(map(str, args.batch))}",
        f"- measured device copy bandwidth: {bandwidth / 1e9:.0f} GB/s (read + write)",
        "",
        "| batch | kernel ms/frame | floor ms/frame | kernel / floor | torch GPU ms/frame | OpenCV CPU ms/frame "
        "| host frame (upload incl.) ms/frame | max diff vs OpenCV (x255) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch in args.batch:
        frames = [frame] * batch
        device_frames = torch.from_numpy(np.stack(frames)).cuda()
        views = [device_frames[i] for i in range(batch)]
        out = torch.full((batch, 3, *DST), float("nan"), device="cuda")
        gpu = lb.GpuLetterbox(DST)
        gpu(views, out=out)  # uploads the per-image parameters; the timed part is the launch alone

        def launch(gpu=gpu, out=out, batch=batch):
            lb.launch(gpu.params_ptr, out, batch, DST, stream=torch.cuda.current_stream().cuda_stream)

        kernel_ms = cuda_time(launch, args.iters) / batch
        floor_bytes = touched_source_bytes(geometry) + 3 * DST[0] * DST[1] * 4
        floor_ms = floor_bytes / bandwidth * 1e3
        torch_ms = cuda_time(lambda df=device_frames: torch_letterbox(df, geometry), args.iters) / batch
        cv_ms = statistics.median(
            [_cpu_time(lambda frames=frames: lb.letterbox_batch(frames, DST)) for _ in range(max(5, args.iters // 20))]
        ) / batch  # fmt: skip
        host_ms = wall_time(lambda gpu=gpu, frames=frames, out=out: gpu(frames, out=out), max(20, args.iters // 5))
        host_ms /= batch
        gpu(views, out=out)
        torch.cuda.synchronize()
        expected, _ = lb.letterbox_batch(frames, DST)
        diff = float(np.abs(out.cpu().numpy() - expected).max()) * 255
        lines.append(
            f"| {batch} | {kernel_ms:.4f} | {floor_ms:.4f} | {kernel_ms / floor_ms:.2f} | {torch_ms:.4f} | "
            f"{cv_ms:.3f} | {host_ms:.3f} | {diff:.3f} |"
        )
    lines += [
        "",
        f"floor: {floor_bytes / 1e6:.2f} MB per frame (source rows touched {touched_source_bytes(geometry) / 1e6:.2f}"
        f" MB + fp32 output {3 * DST[0] * DST[1] * 4 / 1e6:.2f} MB) at the measured copy bandwidth.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _cpu_time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


if __name__ == "__main__":
    sys.exit(main())
