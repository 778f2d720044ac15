"""Where the GPU time goes: CUDA kernel time per call of PyTorch eager and of the reference plan, by kernel.

    python bench/reference_profile.py [--model yolov5s] [--batch 16] [--iters 5]

Same model, weights and input as bench/reference_bench.py (fp32, TF32 off); the plan without CUDA graphs so the
profiler sees each kernel (a graph replays the same kernels). Prints the plan's fusion counts, then per side the
total kernel time per call and its largest kernels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_bench import MODELS, build  # noqa: E402


def kernel_times(fn, iters: int, top: int) -> tuple[float, list[str]]:
    """(ms of CUDA kernels per call, the ``top`` largest kernels as lines) over ``iters`` calls of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.self_device_time_total for e in events) / iters / 1e3
    lines = [f"{e.self_device_time_total / iters / 1e3:7.3f} ms {e.count // iters:4d}x {e.key[:110]}"
             for e in sorted(events, key=lambda e: -e.self_device_time_total)[:top]]  # fmt: skip
    return total, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--model", default="yolov5s", choices=list(MODELS), help="default: yolov5s")
    parser.add_argument("--batch", type=int, default=16, help="default: 16")
    parser.add_argument("--iters", type=int, default=5, help="profiled calls per side (default: 5)")
    parser.add_argument("--top", type=int, default=14, help="kernels listed per side (default: 14)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("reference_profile: needs a CUDA device", file=sys.stderr)
        return 2
    from trtx import reference

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    _, imgsz, _ = MODELS[args.model]
    model, net, name = build(args.model, imgsz)
    model = model.cuda()
    x = torch.rand(args.batch, 3, imgsz, imgsz, device="cuda")
    plan = reference.compile(net, "cuda", cuda_graphs=False)
    print(plan.describe())

    def eager():
        with torch.no_grad():
            return model(x)

    sides = {"eager": eager, "plan": lambda: plan({name: x})}
    for fn in sides.values():
        for _ in range(3):
            fn()
    for label, fn in sides.items():
        total, lines = kernel_times(fn, args.iters, args.top)
        print(f"== {label}: {total:.2f} ms of kernels per call", *lines, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
