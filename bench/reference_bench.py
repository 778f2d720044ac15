"""The reference executor against PyTorch eager on the same model, same weights, same input, same run.

For each model and batch: the PyTorch model (eager, fp32, TF32 off, no grad) and the netdef's network run by
``trtx.reference.compile`` (and, with ``--plain``, by the plain executor: ``optimize=False``), timed interleaved
(one call of each in turn, so a load change hits all of them), median of ``--iters`` calls after ``--warmup``.
The plan's outputs are first compared with the plain executor's (bit-identical on the CPU) and with PyTorch's.

    python bench/reference_bench.py --device cpu  [--batch 1 4] [--iters 10] [--out bench/results/reference_cpu.md]
    python bench/reference_bench.py --device cuda [--batch 1 16] [--iters 50] [--out bench/results/reference_gpu.md]

Models: yolov5s (640, yolov5==7.0.14's model, random weights seed 0) and resnet50 (224, torchvision, random weights
seed 0). Ratios are reference time / eager time: < 1 means the reference is faster.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {"yolov5s": ("yolov5:yolov5s", 640, "images"), "resnet50": ("torchvision:resnet50", 224, None)}


def build(name: str, imgsz: int):
    """(PyTorch model, trtx Net, input name) for ``name``, weights random with seed 0."""
    import wts
    from netdefs import sources
    from trtx.net import Net

    spec, _, _ = MODELS[name]
    model = sources.build_model(spec, seed=0)
    weights = wts.WeightMap(sources.state_dict_for_wts(model, spec))
    net = Net(weights)
    if name == "yolov5s":
        from netdefs.yolov5 import config, decode

        decode.define(net, config.configure(argparse.Namespace(command="bench", imgsz=str(imgsz)), weights))
    else:
        from netdefs import resnet

        resnet.define(net, resnet.configure(argparse.Namespace(command="bench", arch="resnet50"), weights))
    return model, net, net.network.get_input(0).name


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict, iters: int, warmup: int, device: str, clock=time.perf_counter) -> dict[str, list[float]]:
    """ms per call of each function, called in turn ``iters`` times after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            _sync(device)
            t0 = clock()
            fn()
            _sync(device)
            times[name].append((clock() - t0) * 1e3)
    return times


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) if b.numel() else 0.0


def bench_one(name: str, batch: int, args) -> dict:
    from trtx import reference

    device = args.device
    _, imgsz, _ = MODELS[name]
    model, net, input_name = build(name, imgsz)
    model = model.to(device)
    x = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(batch)).to(device)
    feeds = {input_name: x}
    t0 = time.perf_counter()
    plan = reference.compile(net, device, cuda_graphs=not args.no_graphs)
    compile_s = time.perf_counter() - t0
    plain = reference.compile(net, device, optimize=False)
    with torch.no_grad():
        first = plan(feeds)
        again = plan(feeds)
        expected = plain(feeds)
    exact = all(torch.equal(first[k], expected[k]) and torch.equal(again[k], expected[k]) for k in expected)
    plan_vs_plain = max(_max_rel(again[k], expected[k]) for k in expected if expected[k].is_floating_point())

    def eager():
        with torch.no_grad():
            return model(x)

    fns = {"eager": eager, "reference": lambda: plan(feeds)}
    if plan.fast_math:  # the same plan without the fusions that change roundings
        exact_plan = reference.compile(net, device, cuda_graphs=not args.no_graphs, fast_math=False)
        fns["exact"] = lambda: exact_plan(feeds)
    if args.plain:
        fns["plain"] = lambda: plain(feeds)
    load_before = os.getloadavg()[0]
    clock = time.process_time if args.clock == "process" else time.perf_counter
    times = interleaved(fns, args.iters, args.warmup, device, clock)
    load_after = os.getloadavg()[0]
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "imgsz": imgsz,
        "batch": batch,
        "ms": med,
        "spread": {k: (min(v), max(v)) for k, v in times.items()},
        "ratio": med["reference"] / med["eager"],
        "plain_ratio": med["plain"] / med["eager"] if "plain" in med else None,
        "exact_ratio": med["exact"] / med["eager"] if "exact" in med else None,
        "exact": exact,
        "plan_vs_plain": plan_vs_plain,
        "compile_s": compile_s,
        "load": (load_before, load_after),
        "plan": plan.describe(),
    }


def report(rows: list[dict], args) -> str:
    fused = any(r["exact_ratio"] is not None for r in rows)
    if args.device.startswith("cuda"):
        where = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    else:
        cpu = platform.processor() or platform.machine()
        where = f"CPU: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    lines = [
        f"# Reference executor vs PyTorch eager on {args.device}",
        "",
        f"- {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {where}; torch {torch.__version__}; fp32, TF32 off",
        f"- command: `python bench/reference_bench.py {' '.join(sys.argv[1:])}`",
        f"- median of {args.iters} calls after {args.warmup} warm-up rounds, interleaved; ms per call (min-max), "
        f"{'CPU time of this process' if args.clock == 'process' else 'wall time'}; torch threads "
        f"{torch.get_num_threads()}",
        "- ratio = reference / eager (lower is better); 'bit-identical' = the plan's outputs (1st and 2nd call) "
        "equal the plain executor's (optimize=False) bit for bit; 'no fusion' = the plan with fast_math=False "
        "(CUDA only; fast_math is off on the CPU)",
        "",
        "| model | batch | eager ms | reference ms | ratio | "
        + ("no fusion ms | ratio | " if fused else "")
        + ("plain ms | plain ratio | " if args.plain else "")
        + "bit-identical | plan vs plain max rel | compile s | load avg (before, after) |",
        "|---|---|---|---|---|" + "---|---|" * (fused + args.plain) + "---|---|---|---|",
    ]
    for r in rows:

        def cell(k: str, r: dict = r) -> str:
            return f"{r['ms'][k]:.2f} ({r['spread'][k][0]:.1f}-{r['spread'][k][1]:.1f})"

        plain = f"{cell('plain')} | {r['plain_ratio']:.2f}x | " if args.plain else ""
        exact = (f"{cell('exact')} | {r['exact_ratio']:.2f}x | " if r["exact_ratio"] else "- | - | ") if fused else ""
        lines.append(
            f"| {r['model']} {r['imgsz']} | {r['batch']} | {cell('eager')} | {cell('reference')} | "
            f"**{r['ratio']:.2f}x** | {exact}{plain}{'yes' if r['exact'] else 'no'} | {r['plan_vs_plain']:.1e} | "
            f"{r['compile_s']:.2f} | {r['load'][0]:.2f}, {r['load'][1]:.2f} |"
        )
    plan = rows[-1]["plan"] if rows else {}
    lines += ["", f"plan of the last row: {plan}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="default: all")
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: 1 4 on cpu, 1 16 on cuda)")
    parser.add_argument("--iters", type=int, default=None, help="timed calls (default: 10 on cpu, 50 on cuda)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default: 3)")
    parser.add_argument("--plain", action="store_true", help="also time the plain executor (optimize=False)")
    parser.add_argument("--no-graphs", action="store_true", help="CUDA: run the plan without CUDA graphs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, the number of cores)")
    parser.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="wall: elapsed time (default); process: this process's CPU time (steadier on a shared CPU with "
        "--threads 1)",
    )
    parser.add_argument("--out", help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print("reference_bench: --device cuda needs a CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    args.batch = args.batch or ([1, 16] if gpu else [1, 4])
    args.iters = args.iters or (50 if gpu else 10)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for name in args.models:
        for batch in args.batch:
            rows.append(bench_one(name, batch, args))
            r = rows[-1]
            print(f"{name} batch {batch}: eager {r['ms']['eager']:.2f} ms, reference {r['ms']['reference']:.2f} ms "
                  f"({r['ratio']:.2f}x), exact {r['exact']}", file=sys.stderr, flush=True)  # fmt: skip
    text = report(rows, args)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
