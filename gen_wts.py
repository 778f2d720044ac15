"""Write PyTorch weights as a tensorrtx ``.wts`` (or ``.safetensors``) file.

From a checkpoint (a state_dict, or an ultralytics/yolov5 checkpoint with a ``model``/``ema`` entry)::

    python gen_wts.py -w resnet18.pth -o resnet18.wts
    python gen_wts.py -w Resnet50_Final.pth --model retinaface:r50 -o retinaface.wts
    python gen_wts.py -w yolov5s.pt --unsafe-pickle -o yolov5s.wts   # pickled full model: trusted files only

From an installed model source, with random weights (tests, benchmarks; nothing is downloaded)::

    python gen_wts.py --model yolov5:yolov5s --random-init --seed 0 -o yolov5s.wts

Every state_dict entry is written (integer buffers such as ``num_batches_tracked`` as float, like
tensorrtx). YOLOv5 detect/seg models also get tensorrtx's ``anchor_grid`` and ``strides`` entries on
the Detect layer, so files made here and by tensorrtx's gen_wts.py are interchangeable; ultralytics models get
``kpt_shape`` (pose) and a checkpoint's class ``names`` on their head (netdefs/ultralytics/source.py).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from netdefs import sources as model_sources
from trtx_base.cli import ArgumentParser, non_negative_int, run
from trtx_base.errors import UserError
from trtx_base.files import check_input, check_output

SPEC_HELP = (
    "build the PyTorch model from an installed source: torchvision:<arch>, "
    "yolov5:<yolov5n|s|m|l|x, n6..x6, NAME-cls, NAME-seg>, ultralytics:<yaml stem, e.g. yolov8n>, "
    "retinaface:<mnet|r50>, netdef:<module>[:<arch>]. With -w, the checkpoint is loaded into this model "
    "first (for state_dict-only files of known architectures); without -w, --random-init is required"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="gen_wts.py",
        description="Convert PyTorch weights to a tensorrtx .wts file (or .safetensors, by the output suffix).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "-w",
        "--weights",
        metavar="CKPT",
        action="append",
        help="checkpoint: a state_dict or a dict with 'model'/'ema'. A pipeline of several networks takes one per "
        "submodule of its --model, as PREFIX=CKPT, repeated (-w pnet=pnet.pt -w rnet=rnet.pt ...)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output file (.wts, or .safetensors) or directory; default: CKPT with .wts, or NAME.wts for --model; "
        "never the checkpoint itself",
    )
    parser.add_argument("-m", "--model", metavar="SOURCE:NAME", help=SPEC_HELP)
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="write the --model's randomly initialized weights (never mistake them for trained ones)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        help="seed of --random-init (default 0); the same seed gives the same file",
    )
    parser.add_argument(
        "-t",
        "--type",
        choices=["detect", "cls", "seg"],
        default=None,
        help="YOLOv5 model type: detect/seg add tensorrtx's anchor_grid and strides entries (default: from "
        "--model, else detect/seg when the model has a YOLOv5 Detect head)",
    )
    parser.add_argument(
        "--unsafe-pickle",
        action="store_true",
        help="allow checkpoints holding pickled Python objects (full nn.Module checkpoints such as yolov5 .pt "
        "files). Unpickling runs arbitrary code: only for files you trust",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    args = parser.parse_args(argv)
    if args.random_init and not args.model:
        parser.error("--random-init needs --model SOURCE:NAME")
    if not args.weights and not args.model:
        parser.error("give -w CKPT, or --model SOURCE:NAME --random-init")
    if args.model and not args.weights and not args.random_init:
        parser.error(
            "--random-init is required when no -w is given, so random weights are never taken for trained ones"
        )
    if args.random_init and args.weights:
        parser.error("--random-init and -w exclude each other")
    if args.seed is not None and not args.random_init:
        parser.error("--seed only applies to --random-init")
    if args.model:
        try:
            model_sources.parse_spec(args.model)
        except UserError as exc:
            parser.error(f"--model: {exc}")
    args.parts = {}
    for item in args.weights or ():
        prefix, sep, path = item.rpartition("=")
        try:
            check_input(path, "checkpoint")
        except UserError as exc:
            parser.error(str(exc))
        if sep and not prefix:
            parser.error(f"-w {item}: empty PREFIX before '='")
        if prefix in args.parts:
            parser.error(f"-w: {'PREFIX ' + prefix if prefix else 'a checkpoint'} given twice")
        args.parts[prefix] = path
    if len(args.parts) > 1 and "" in args.parts:
        parser.error("several -w: give each as PREFIX=CKPT")
    if len(args.parts) > 1 or (args.parts and "" not in args.parts):
        if not args.model:
            parser.error("-w PREFIX=CKPT loads into the submodules of a --model (e.g. --model netdef:mtcnn)")
    args.weights = args.parts.get("")  # None with PREFIX=CKPT parts: the output is named after the model
    args.output = output_path(args)
    try:
        check_output(args.output, "output (-o)", list(args.parts.values()))
    except UserError as exc:
        parser.error(str(exc))
    return args


def output_path(args: argparse.Namespace) -> Path:
    if args.weights:
        default_name = Path(args.weights).with_suffix(".wts").name
    else:
        default_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.model.split(":", 1)[1]) + ".wts"
    if not args.output:
        return Path(args.weights).with_suffix(".wts") if args.weights else Path(default_name)
    out = Path(args.output)
    return out / default_name if out.is_dir() else out


def collect_state(args: argparse.Namespace) -> tuple[dict, int | None]:
    """(name -> flat float32 array to write, number of trainable parameters if a model is known)."""
    import torch

    from trtx import sources

    model = None
    if args.model:
        seed = (0 if args.seed is None else args.seed) if args.random_init else None
        model = model_sources.build_model(args.model, seed=seed)
    if not args.weights and args.parts:  # one checkpoint per submodule: their keys under its prefix
        state = {}
        for prefix, path in args.parts.items():
            ckpt = model_sources.load_checkpoint(path, unsafe_pickle=args.unsafe_pickle)
            ckpt = ckpt.state_dict() if isinstance(ckpt, torch.nn.Module) else ckpt
            state.update({f"{prefix}.{k}": v for k, v in ckpt.items()})
        sources.load_state(model, state)
    elif args.weights:
        ckpt = model_sources.load_checkpoint(args.weights, unsafe_pickle=args.unsafe_pickle)
        if model is None and isinstance(ckpt, torch.nn.Module):
            model = ckpt
        elif model is not None:
            state = ckpt.state_dict() if isinstance(ckpt, torch.nn.Module) else ckpt
            sources.load_state(model, state, ignore=model_sources.extra_keys(model))
        else:
            if args.type in ("detect", "seg"):
                raise sources.SourceError(
                    f"--type {args.type} adds anchor_grid/strides, which needs the model: add --model yolov5:<name>"
                )
            state = {k: v.detach().float().reshape(-1).numpy() for k, v in ckpt.items()}
            return state, None
    spec = args.model if args.model else None
    state = model_sources.state_dict_for_wts(model, spec, task=args.type)
    n_params = sum(p.numel() for p in model.parameters())
    return state, n_params


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run(lambda: _write(args))


def _write(args: argparse.Namespace) -> int:
    import wts

    state, n_params = collect_state(args)
    progress = not args.quiet and sys.stderr.isatty()
    n_values = wts.save(state, args.output, progress=progress)
    if not args.quiet:
        what = f"random weights of {args.model} (seed {args.seed or 0})" if args.random_init else "weights"
        params = f", {n_params:,} parameters" if n_params is not None else ""
        print(
            f"wrote {what} to {args.output}: {len(state)} tensors, {n_values:,} values{params}, "
            f"{human_size(os.path.getsize(args.output))}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
