"""OCR (CRAFT + CRNN) and MTCNN end to end, images/s, against the original PyTorch pipelines in the same run.

* MTCNN: the netdef's pipeline (reference executor on ``--device``) vs ``facenet_pytorch.MTCNN(device=...).detect``
  on bus.jpg, zidane.jpg and scikit-image's astronaut.png;
* OCR: the netdef's pipeline vs ``easyocr.Reader(gpu=..., quantize=False).readtext`` on bus.jpg and scikit-image's
  text.png, page.png;
* the recognizer's LSTM: the loop form vs the unrolled form (a fixed width), each as a network in the reference
  executor on ``--device`` (and as an engine where this machine's TensorRT executes one): layers, build seconds,
  engine MB, ms per crop. Both need the reference executor's LOOP for the loop form.

Answers are compared too (same strings / same faces), so a fast wrong pipeline cannot look good.

    python bench/trained_pipelines_bench.py --device cuda [--iters 5] [--width 256] [--out bench/results/...md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gen_wts  # noqa: E402
import wts  # noqa: E402
from netdefs import mtcnn, ocr  # noqa: E402
from trtx import cli, sources  # noqa: E402
from trtx.build import BuildOptions, build_serialized  # noqa: E402
from trtx.net import Net  # noqa: E402
from trtx_base import backend  # noqa: E402


def timed(fn, iters: int, device: str) -> float:
    """Median seconds of ``fn()`` over ``iters`` runs after one warm-up (CUDA synchronized)."""
    fn()
    times = []
    for _ in range(iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def runners(netdef, weights: Path, device: str, *extra: str):
    args = cli._parser(netdef).parse_args(["infer", "-w", str(weights), "--device", device, *extra, "x.png"])
    run, cfg, _, _ = cli.make_runner(netdef, args)
    return run, cfg


def bench_mtcnn(folder: Path, device: str, iters: int) -> list[str]:
    from facenet_pytorch import MTCNN

    data = sources.package_dir("facenet_pytorch") / "data"
    weights = folder / "mtcnn.wts"
    parts = [a for n in ("pnet", "rnet", "onet") for a in ("-w", f"{n}={data / (n + '.pt')}")]
    gen_wts.main(["--model", "netdef:mtcnn", *parts, "-o", str(weights), "-q"])
    run, cfg = runners(mtcnn.NETDEF, weights, device)
    theirs = MTCNN(keep_all=True, device=torch.device(device))
    rows = ["| image | faces (ours / facenet) | trtx reference executor img/s | facenet-pytorch img/s | ratio |",
            "|---|---|---|---|---|"]  # fmt: skip
    for path in (sources.sample_images() / "bus.jpg", sources.sample_images() / "zidane.jpg",
                 sources.package_dir("skimage") / "data" / "astronaut.png"):  # fmt: skip
        bgr = cv2.imread(str(path))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        ours_n = len(mtcnn.run_pipeline(run, [bgr], cfg)[0]["scores"])
        boxes, _ = theirs.detect(rgb)
        t_ours = timed(lambda b=bgr: mtcnn.run_pipeline(run, [b], cfg), iters, device)
        t_theirs = timed(lambda r=rgb: theirs.detect(r), iters, device)
        rows.append(f"| {path.name} | {ours_n} / {0 if boxes is None else len(boxes)} | {1 / t_ours:.2f} | "
                    f"{1 / t_theirs:.2f} | {t_theirs / t_ours:.2f}x |")  # fmt: skip
    return rows


def bench_ocr(folder: Path, device: str, iters: int) -> tuple[list[str], Path]:
    import easyocr

    models = sources.package_dir("easyocr_en_models") / "models"
    weights = folder / "ocr.wts"
    gen_wts.main(["--model", "netdef:ocr", "-w", f"detector={models / 'craft_mlt_25k.pth'}",
                  "-w", f"recognizer={models / 'english_g2.pth'}", "-o", str(weights), "-q"])  # fmt: skip
    run, cfg = runners(ocr.NETDEF, weights, device)
    reader = easyocr.Reader(["en"], gpu=device.startswith("cuda"), quantize=False, model_storage_directory=str(models),
                            download_enabled=False, verbose=False)  # fmt: skip

    def theirs(bgr):
        rgb, grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        h, f = reader.detect(rgb, reformat=False)
        return reader.recognize(grey, h[0], f[0], reformat=False)

    rows = ["| image | boxes | same strings | trtx reference executor img/s | EasyOCR img/s | ratio |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    data = sources.package_dir("skimage") / "data"
    for path in (sources.sample_images() / "bus.jpg", data / "text.png", data / "page.png"):
        bgr = cv2.imread(str(path))
        ours = ocr.run_pipeline(run, [bgr], cfg)[0]
        same = [t for _, t, _ in ours] == [t for _, t, _ in theirs(bgr)]
        t_ours = timed(lambda b=bgr: ocr.run_pipeline(run, [b], cfg), iters, device)
        t_theirs = timed(lambda b=bgr: theirs(b), iters, device)
        rows.append(f"| {path.name} | {len(ours)} | {same} | {1 / t_ours:.2f} | {1 / t_theirs:.2f} | "
                    f"{t_theirs / t_ours:.2f}x |")  # fmt: skip
    return rows, weights


def bench_lstm(weights_path: Path, device: str, iters: int, width: int) -> list[str]:
    """The recognizer alone, loop vs unrolled, on one crop ``width`` wide."""
    from trtx import reference

    weights = wts.load(weights_path)
    crop = {"crop": np.random.default_rng(0).uniform(-1, 1, (1, 1, 64, width)).astype(np.float32)}
    rows = ["| LSTM form | layers | build s | engine MB | reference executor ms/crop | engine ms/crop |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    outputs = {}
    refused: list[str] = []
    can_run, _ = backend.get().can_execute()
    for form in ("loop", "unrolled"):
        cfg = ocr.configure(types.SimpleNamespace(lstm=form, width=width), weights)
        net = Net(weights)
        ocr.define_crnn(net, cfg)
        plan = reference.compile(net, device)
        outputs[form] = plan(crop)["preds"].float().cpu().numpy()
        t_ref = timed(lambda p=plan: p(crop), iters, device)
        t0 = time.perf_counter()
        try:
            engine = build_serialized(net, BuildOptions(progress=False))
        except Exception as exc:  # noqa: BLE001  -- TensorRT-RTX refuses to target some local GPUs (sm_90)
            refused.append(f"{form}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            rows.append(f"| {form} | {net.network.num_layers} | - | - | {t_ref * 1e3:.2f} | - |")
            continue
        build_s = time.perf_counter() - t0
        t_engine = "-"
        if can_run:
            from trtx import runtime

            with tempfile.NamedTemporaryFile(suffix=".engine") as f:
                f.write(engine)
                f.flush()
                e = runtime.Engine(f.name)
                t_engine = f"{timed(lambda e=e: e.infer(crop), iters, device) * 1e3:.2f}"
        rows.append(f"| {form} | {net.network.num_layers} | {build_s:.1f} | {len(engine) / 1e6:.1f} | "
                    f"{t_ref * 1e3:.2f} | {t_engine} |")  # fmt: skip
    diff = float(np.abs(outputs["loop"] - outputs["unrolled"]).max())
    rows.append(f"\nmax |loop - unrolled| of the class scores: {diff:.2e} (width {width}, {width // 4 - 1} steps)")
    rows += [f"\nno engine built here ({reason})" for reason in refused]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="device of the reference executor and the PyTorch pipelines (default: cuda if any)",
    )
    parser.add_argument("--iters", type=int, default=5, help="timed runs per image (default: 5)")
    parser.add_argument("--width", type=int, default=256, help="crop width of the LSTM comparison (default: 256)")
    parser.add_argument(
        "--pipelines",
        nargs="+",
        choices=("mtcnn", "ocr"),
        default=["mtcnn", "ocr"],
        help="which pipelines (default: both; ocr also times the LSTM forms)",
    )
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    command = (
        f"python bench/trained_pipelines_bench.py --device {args.device} --iters {args.iters} --width {args.width} "
        f"--pipelines {' '.join(args.pipelines)}"
    )
    lines = [f"# OCR and MTCNN pipelines, {name}, {dt.date.today()}", "",
             f"`{command}`; median of {args.iters} runs after a warm-up, batch 1, fp32 (TF32 off).", ""]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="trtx-bench-") as tmp:
        folder = Path(tmp)
        if "mtcnn" in args.pipelines:
            lines += ["## MTCNN", "", *bench_mtcnn(folder, args.device, args.iters), ""]
        if "ocr" in args.pipelines:
            rows, weights = bench_ocr(folder, args.device, args.iters)
            lines += ["## OCR", "", *rows, ""]
            lines += ["## The recognizer's LSTM: loop vs unrolled", "", *bench_lstm(weights, args.device, args.iters,
                                                                                  args.width), ""]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
