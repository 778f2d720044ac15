"""The command line every netdef shares: ``build check inspect infer bench``.

A netdef module declares itself once (``NETDEF = trtx.netdef.Netdef(...)``, see docs/netdefs.md) and ends with
``if __name__ == "__main__": sys.exit(trtx.cli.main(NETDEF))``. Everything here reads that declaration's
fields: ``configure``/``define`` for every command, ``torch`` for ``check``, ``app`` for ``infer``/``bench``,
``add_arguments``/``commands`` for the netdef's own options and subcommands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trtx.build import (
    BatchSpec,
    BuildOptions,
    build_serialized,
    load_metadata,
    metadata,
    metadata_path,
    resolve_gpu_archs,
    save_engine,
)
from trtx.net import PRECISIONS, Net, NetdefError, define_network
from trtx.netdef import Netdef, seeded_normal_feeds
from trtx_base import cli as base_cli
from trtx_base.cli import non_negative_float, non_negative_int, positive_int, positive_int_list
from trtx_base.errors import UserError
from trtx_base.files import check_input, check_output, same_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class UsageError(NetdefError):
    pass


# ---- argument parsing ---------------------------------------------------------------------------------
def _parser(nd: Netdef) -> argparse.ArgumentParser:
    parser = base_cli.ArgumentParser(prog=nd.script or f"python -m netdefs {nd.name}", description=nd.description)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "build": "build a serialized TensorRT engine (+ .json metadata) from a .wts file",
        "check": "compare the network (reference executor) with the PyTorch model, output and every named layer",
        "inspect": "print the layer table and totals; optionally draw the graph",
        "infer": "run images through an engine (--backend trt) or the reference executor (--backend reference)",
        "bench": "time preprocessing, inference and postprocessing",
    }
    for command, text in helps.items():
        p = sub.add_parser(command, help=text, description=text)
        _common_arguments(p, nd, command)
        if nd.add_arguments is not None:
            nd.add_arguments(p, command)
    for command, extra in nd.commands.items():
        extra.add_arguments(sub.add_parser(command, help=extra.help, description=extra.help))
    return parser


def _common_arguments(p: argparse.ArgumentParser, nd: Netdef, command: str) -> None:
    if nd.archs:
        p.add_argument(
            "--arch",
            default=nd.default_arch,
            choices=nd.archs,
            help="architecture (default: " + ("%(default)s)" if nd.default_arch else "what the weights contain)"),
        )
    needs_weights = command in ("build", "check", "inspect")
    p.add_argument(
        "-w",
        "--weights",
        required=needs_weights,
        help=".wts or .safetensors file written by gen_wts.py"
        + ("" if needs_weights else " (infer/bench with --backend reference)"),
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="compute precision of the network (default: %(default)s)",
    )
    p.add_argument(
        "--io-dtype",
        choices=("fp32", "fp16"),
        default="fp32",
        help="dtype of network inputs/outputs; casts are added inside the network (default: fp32)",
    )
    if command in ("build", "check", "inspect", "infer", "bench"):
        q = p.add_argument_group("int8 calibration (with --precision int8)")
        q.add_argument("--calib", metavar="DIR", help="folder of calibration images (the netdef's preprocessing)")
        q.add_argument(
            "--calib-method",
            choices=("entropy", "percentile", "minmax"),
            default="entropy",
            help="activation range method (default: entropy, TensorRT's IInt8EntropyCalibrator2)",
        )
        q.add_argument(
            "--calib-images", type=positive_int, metavar="N", help="use at most N calibration images (default: all)"
        )
        q.add_argument(
            "--calib-cache", metavar="FILE", help="JSON cache of the ranges; reused while the weights file is unchanged"
        )
        q.add_argument("--calib-device", default="cpu", help="device the calibration runs on (cpu|cuda)")
        q.add_argument(
            "--int8-fallback",
            type=non_negative_int,
            default=0,
            metavar="N",
            help="keep the N quantized tensors whose int8 rounding changes the outputs most in fp16 (a sensitivity "
            "pass on the first 4 calibration images ranks them; cached with the ranges). Default: 0",
        )
    if command == "build":
        p.add_argument("-o", "--output", help="engine path (default: <arch>.engine); metadata goes to <engine>.json")
        p.add_argument(
            "--batch",
            type=_batch_spec,
            default=BatchSpec(),
            help="fixed batch N or dynamic profile MIN:OPT:MAX (default: 1)",
        )
        p.add_argument("--workspace", type=positive_int, metavar="MIB", help="builder workspace limit in MiB")
        p.add_argument("--opt-level", type=int, choices=range(6), help="builder optimization level 0-5")
        p.add_argument(
            "--gpu-arch",
            metavar="ARCHS",
            help="GPU archs the engine is for, e.g. sm_86,sm_89,sm_120, "
            "or current (this machine's GPU); default: the backend's (python -m trtx doctor lists them)",
        )
        p.add_argument("--verbose", action="store_true", help="print every builder message")
    if command == "check":
        p.add_argument("--image", help="check on this image (netdef preprocessing) instead of a seeded random input")
        p.add_argument("--batch", type=positive_int, default=1, help="batch size of the check input (default: 1)")
        p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random input (default: 0)")
        p.add_argument(
            "--atol", type=non_negative_float, default=None, help="absolute tolerance (default: precision-dependent)"
        )
        p.add_argument(
            "--rtol",
            type=non_negative_float,
            default=None,
            help="tolerance relative to each tensor's max |value| (default: 1e-4 for fp32)",
        )
        p.add_argument("--no-layers", action="store_true", help="compare outputs only, not every named layer")
        p.add_argument("--device", default="cpu", help="device for the reference executor and PyTorch (cpu|cuda)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    if command == "inspect":
        p.add_argument("--graph", metavar="PATH", help="draw the graph to PATH (.svg, .png or .dot)")
        p.add_argument("--json", action="store_true", help="print the layer table as JSON")
    if command in ("infer", "bench"):
        p.add_argument("-e", "--engine", help="serialized engine (with its .json metadata) for --backend trt")
        p.add_argument(
            "--backend",
            choices=("trt", "reference"),
            default=None,
            help="trt: run the engine with TensorRT; reference: run the network with the reference "
            "executor (works on any machine). Default: trt with -e, reference with -w",
        )
        p.add_argument("--device", default="cpu", help="device for the reference executor (cpu|cuda)")
    if command == "infer":
        p.add_argument("sources", nargs="+", help="images or folders of images")
        p.add_argument(
            "-o",
            "--outdir",
            default="out/infer",
            help="folder for the annotated images and JSON, one of each per input image, named after it; never "
            "an input's own folder when that would write over the image (default: %(default)s)",
        )
        p.add_argument("--batch", type=positive_int, default=1, help="images per inference call (default: 1)")
    if command == "bench":
        p.add_argument("--image", help="image to bench with (default: the netdef's example input)")
        p.add_argument(
            "--batch",
            type=positive_int_list,
            default=(1,),
            help="batch sizes to time, comma separated (default: 1)",
        )
        p.add_argument("--iters", type=positive_int, default=10, help="timed iterations per batch size (default: 10)")
        p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed warm-up iterations (default: 2)")


def _batch_spec(text: str) -> BatchSpec:
    try:
        return BatchSpec.parse(text)
    except NetdefError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--batch {text!r}: ")) from None


# ---- shared steps -------------------------------------------------------------------------------------
def load_weights(path: str | None):
    if path is None:
        return None
    import wts

    if not Path(path).exists():
        raise UsageError(f"weights file {path} does not exist (write one with gen_wts.py)")
    check_input(path, "-w weights")
    return wts.load(path)


def make_net(nd: Netdef, args: argparse.Namespace, weights, cfg) -> Net:
    """The netdef's network for ``args`` (precision, I/O dtype, int8 calibration), defined and checked."""
    net = new_net(nd, args, weights, cfg)
    define_network(net, nd.define, cfg)
    return finish_net(net, args)


def new_net(nd: Netdef, args: argparse.Namespace, weights, cfg) -> Net:
    """An empty :class:`Net` for ``args`` (int8: with its calibration ranges), for ``nd.define`` to fill."""
    calibration = None
    if args.precision == "int8":
        from trtx import calibrate

        calibration = calibrate.for_netdef(
            nd,
            cfg,
            weights,
            args.weights,
            calib=args.calib,
            method=args.calib_method,
            images=args.calib_images,
            cache=args.calib_cache,
            device=args.calib_device,
            fallback=args.int8_fallback,
        )
    return Net(
        weights,
        precision=args.precision,
        io_dtype=args.io_dtype,
        calibration=calibration,
        int8_fallback=getattr(calibration, "fallback", ()),
        name=model_name(nd, args),
    )


def finish_net(net: Net, args: argparse.Namespace) -> Net:
    """After ``define``: record int8's quantized tensors; warn about layers off the fp32 policy."""
    if net.precision == "int8":
        quantized = [p for p in net.quant_inputs if p not in net.int8_fallback]
        net.meta["int8"] = {"calibration": args.calib_method, "quantized_tensors": len(quantized),
                            "fp16_fallback": sorted(net.int8_fallback)}  # fmt: skip
    for line in net.fp32_policy_violations() if net.precision != "fp32" else []:
        print(f"warning: {line}", file=sys.stderr)
    return net


def configure(nd: Netdef, args: argparse.Namespace, weights, meta: dict | None = None):
    return nd.configure(args, weights, meta)


def model_name(nd: Netdef, args: argparse.Namespace) -> str:
    """The model a command works on: ``--arch`` where the netdef has archs, else the netdef's name."""
    return vars(args).get("arch") or nd.name


def input_shapes(net: Net) -> dict[str, tuple[int, ...]]:
    inputs = (net.network.get_input(i) for i in range(net.network.num_inputs))
    return {t.name: tuple(t.shape) for t in inputs}


def example_feeds(
    nd: Netdef, shapes: dict[str, Sequence[int]], cfg, image: str | None, batch: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """The netdef's example input (an image through its preprocessing) or a seeded standard-normal input."""
    if nd.torch is not None and nd.torch.feeds is not None:
        return nd.torch.feeds(cfg, image, batch, seed)
    if image is not None:
        raise UsageError(f"{nd.name} has no image preprocessing; run without --image")
    return seeded_normal_feeds(shapes, batch, seed)


def _warn_unused(net: Net, nd: Netdef | None = None, cfg=None) -> None:
    """Report the weights the netdef never read: a note for those its ``unused_reason(cfg, key)`` explains
    (e.g. auxiliary heads that only run in training), a warning for the rest."""
    explain = nd.unused_reason if nd is not None else None
    by_reason: dict[str | None, list[str]] = {}
    for key in net.unused_weights():
        by_reason.setdefault(explain(cfg, key) if explain else None, []).append(key)
    for reason, keys in by_reason.items():
        shown = ", ".join(keys[:12]) + (f", … ({len(keys)} in all)" if len(keys) > 12 else "")
        if reason is None:
            print(f"warning: {len(keys)} weight(s) never read by the netdef: {shown}", file=sys.stderr)
        else:
            print(f"note: {len(keys)} weight(s) not read by design ({reason}): {shown}", file=sys.stderr)


# ---- commands ----------------------------------------------------------------------------------------
def cmd_build(nd: Netdef, args: argparse.Namespace) -> int:
    weights = load_weights(args.weights)
    cfg = configure(nd, args, weights)
    net = make_net(nd, args, weights, cfg)
    _warn_unused(net, nd, cfg)
    options = BuildOptions(
        batch=args.batch,
        workspace_mib=args.workspace,
        optimization_level=args.opt_level,
        verbose=args.verbose,
        gpu_archs=resolve_gpu_archs(args.gpu_arch),
    )
    print(
        f"building {net.network.name}: {net.network.num_layers} layers, precision {net.precision}, "
        f"batch {options.batch} ({net.backend.name} {net.backend.version})",
        file=sys.stderr,
    )
    engine = build_serialized(net, options)
    out = build_output(nd, args)
    meta = metadata(
        net,
        options,
        netdef=nd.name,
        weights_path=args.weights,
        extra={"arch": vars(args).get("arch"), "unused_weights": net.unused_weights()},
    )
    engine_path, meta_path = save_engine(out, engine, meta)
    print(f"engine   {engine_path} ({len(engine) / 1e6:.1f} MB, built in {net.build_seconds:.1f} s)")
    print(f"metadata {meta_path}")
    return 0


def cmd_inspect(nd: Netdef, args: argparse.Namespace) -> int:
    from trtx import inspect as tinspect

    weights = load_weights(args.weights)
    cfg = configure(nd, args, weights)
    net = make_net(nd, args, weights, cfg)
    summary = tinspect.describe(net.network)
    print(json.dumps(summary.to_json(), indent=1) if args.json else summary.table())
    if args.graph:
        written = tinspect.write_graph(net.network, args.graph)
        print(f"graph    {written}", file=sys.stderr)
    return 0


def cmd_check(nd: Netdef, args: argparse.Namespace) -> int:
    if nd.torch is None:
        raise UsageError(f"{nd.name} declares no PyTorch model to compare with: check is not available")
    weights = load_weights(args.weights)
    result = check_netdef(nd, args, weights, configure(nd, args, weights))
    print(json.dumps(result.to_json(), indent=1) if args.json else result.table())
    return 0 if result.passed else 1


def check_netdef(nd: Netdef, args: argparse.Namespace, weights, cfg):
    """``check``'s :class:`~trtx.check.CheckResult` for the netdef's network with ``weights`` and ``cfg``. When the
    netdef stops before its network is complete, the first layer whose shape already differs from PyTorch's is
    the first divergent one (:func:`trtx.check.diagnose`)."""
    from trtx import check

    net = new_net(nd, args, weights, cfg)
    try:
        define_network(net, nd.define, cfg)
    except UserError as exc:
        feeds = example_feeds(nd, input_shapes(net), cfg, args.image, args.batch, args.seed)
        return check.diagnose(net.network, nd.torch.model(cfg, weights), feeds, exc, forward=nd.torch.forward,
                              device=args.device, precision=args.precision)  # fmt: skip
    finish_net(net, args)
    model = nd.torch.model(cfg, weights)
    feeds = example_feeds(nd, input_shapes(net), cfg, args.image, args.batch, args.seed)
    tolerances = {k: v for k, v in (("atol", args.atol), ("rtol", args.rtol)) if v is not None}
    result = check.compare(
        net.network,
        model,
        feeds,
        forward=nd.torch.forward,
        device=args.device,
        layers=not args.no_layers,
        precision=args.precision,
        **tolerances,
    )
    if nd.torch.extra is not None:
        result.add_extra(nd.torch.extra(cfg, result.network_outputs, result.expected_outputs, args.precision))
    return result


def _images(sources: Sequence[str]) -> list[Path]:
    """The images named (files as given; folders: their files with an image suffix, sorted)."""
    found: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            try:
                found += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            except OSError as exc:
                raise UsageError(f"{s}: cannot list the folder: {exc.strerror}") from None
        elif p.exists():
            found.append(check_input(p, "image"))
        else:
            raise UsageError(f"{s}: no such image or folder")
    if not found:
        raise UsageError(f"no images in {', '.join(sources)}")
    return found


def _read_image(path: Path) -> np.ndarray | None:
    """The image as BGR uint8, or None when it cannot be read or decoded."""
    import cv2

    try:
        check_input(path, "image")
    except UserError:
        return None
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def _read_image_or_fail(path: Path) -> np.ndarray:
    image = _read_image(path)
    if image is None:
        raise UsageError(f"{path}: not a readable image")
    return image


def infer_outputs(nd: Netdef, args: argparse.Namespace, images: Sequence[Path]) -> dict[Path, list[Path]]:
    """Each input image -> the files infer writes for it (``-o``/NAME, ``-o``/STEM.json). Refuses, before anything
    runs, an output that is an input (the image itself, the weights, the engine) or that two images share."""
    app = nd.app
    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"-o {outdir} is a file; infer writes a folder of results there")
    inputs = [*images, *(p for p in (args.weights, args.engine) if p)]
    if args.engine:
        inputs.append(metadata_path(args.engine))
    planned: dict[Path, list[Path]] = {}
    owner: dict[str, Path] = {}
    for image in images:
        outs = []
        if app.render is not None:
            outs.append(outdir / image.name)
        if app.result_json is not None:
            outs.append(outdir / f"{image.stem}.json")
        for out in outs:
            key = os.path.normcase(os.path.abspath(out))
            if key in owner and not same_file(owner[key], image):
                raise UsageError(f"{owner[key]} and {image} would both be written to {out}; infer them into "
                                 "different -o folders")  # fmt: skip
            owner[key] = image
            for source in inputs:
                if same_file(out, source):
                    raise UsageError(f"infer would write {out} over the input {source}; choose another -o folder")
        planned.setdefault(image, outs)
    return planned


def make_runner(nd: Netdef, args: argparse.Namespace) -> tuple[Callable[[dict], dict], Any, dict, str]:
    """(run(feeds) -> outputs as numpy, cfg, input shapes, description) for --backend trt or reference."""
    backend_kind = backend_of(args)
    if backend_kind == "trt":
        from trtx import runtime

        meta = load_metadata(args.engine)
        cfg = configure(nd, args, None, meta)
        engine = runtime.Engine(args.engine)
        shapes = {t["name"]: tuple(t["shape"]) for t in meta["inputs"]}
        return engine.infer, cfg, shapes, f"TensorRT engine {args.engine}"
    if not args.weights:
        raise UsageError("--backend reference needs -w WEIGHTS (it builds the network and runs it in PyTorch)")
    from trtx import reference

    weights = load_weights(args.weights)
    cfg = configure(nd, args, weights)
    net = make_net(nd, args, weights, cfg)
    network, device = net.network, args.device

    def run(feeds: dict) -> dict:
        out = reference.execute(network, feeds, device=device)
        return {k: v.detach().float().cpu().numpy() for k, v in out.items()}

    run.net = net  # keep the network (and its weights) alive
    return run, cfg, input_shapes(net), f"reference executor on {device}"


def cmd_infer(nd: Netdef, args: argparse.Namespace) -> int:
    import cv2

    from trtx_base.files import atomic_write

    app = nd.app
    if app is None:
        raise UsageError(f"{nd.name} declares no application (preprocess/postprocess): infer is not available")
    paths = _images(args.sources)
    planned = infer_outputs(nd, args, paths)  # before the model loads: a collision costs nothing
    run, cfg, _, what = make_runner(nd, args)
    outdir = Path(args.outdir)
    print(f"infer with {what}: {len(paths)} image(s) -> {outdir}", file=sys.stderr)
    unreadable: list[Path] = []
    readable = []
    for path in paths:
        image = _read_image(path)
        if image is None:
            unreadable.append(path)
            print(f"warning: {path}: not a readable image, skipped", file=sys.stderr)
        else:
            readable.append((path, image))
        if len(readable) < args.batch and path is not paths[-1]:
            continue
        if readable:
            _infer_chunk(nd, cfg, run, readable, planned, cv2, atomic_write)
        readable = []
    if unreadable:
        shown = ", ".join(str(p) for p in unreadable[:5]) + (", …" if len(unreadable) > 5 else "")
        raise UsageError(f"{len(unreadable)} of {len(paths)} image(s) could not be read: {shown}")
    return 0


def _infer_chunk(nd: Netdef, cfg, run, chunk, planned, cv2, atomic_write) -> None:
    app = nd.app
    feeds, ctx = app.preprocess([image for _, image in chunk], cfg)
    results = app.postprocess(run(feeds), ctx, cfg)
    for (path, image), result in zip(chunk, results):
        print(f"{path.name}: {app.summary(result, cfg) if app.summary else result}")
        outs = iter(planned[path])
        if app.render is not None:
            out = next(outs)
            ok, buf = cv2.imencode(path.suffix if path.suffix.lower() in IMAGE_SUFFIXES else ".jpg",
                                   app.render(image, result, cfg))  # fmt: skip
            if ok:
                atomic_write(out, buf.tobytes())
        if app.result_json is not None:
            doc = dict(app.result_json(result, cfg), image=str(path), height=image.shape[0], width=image.shape[1])
            atomic_write(next(outs), json.dumps(doc, indent=1) + "\n")


def cmd_bench(nd: Netdef, args: argparse.Namespace) -> int:
    run, cfg, shapes, what = make_runner(nd, args)
    app = nd.app
    has_pre = app is not None and bool(args.image)
    image = _read_image_or_fail(Path(args.image)) if has_pre else None
    print(f"bench {what}")
    print(f"{'batch':>5} {'pre ms/img':>11} {'infer ms/img':>13} {'post ms/img':>12} {'img/s':>9}")
    for b in args.batch:
        timings = {"pre": [], "infer": [], "post": []}
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            if has_pre:
                feeds, ctx = app.preprocess([image] * b, cfg)
            else:
                feeds, ctx = example_feeds(nd, shapes, cfg, None, b), None
            t1 = time.perf_counter()
            outputs = run(feeds)
            t2 = time.perf_counter()
            if has_pre:
                app.postprocess(outputs, ctx, cfg)
            t3 = time.perf_counter()
            if i >= args.warmup:
                for k, v in zip(timings, (t1 - t0, t2 - t1, t3 - t2)):
                    timings[k].append(v / b)
        med = {k: float(np.median(v)) * 1e3 for k, v in timings.items()}
        total = sum(med.values())
        print(f"{b:>5} {med['pre']:>11.3f} {med['infer']:>13.3f} {med['post']:>12.3f} {1e3 / total:>9.1f}")
    return 0


COMMANDS = {"build": cmd_build, "check": cmd_check, "inspect": cmd_inspect, "infer": cmd_infer, "bench": cmd_bench}


def backend_of(args: argparse.Namespace) -> str:
    """infer/bench: ``trt`` (an engine) or ``reference`` (weights); refuses flags the choice would ignore."""
    kind = args.backend or ("trt" if args.engine else "reference")
    if kind == "trt":
        if not args.engine:
            raise UsageError("--backend trt needs -e ENGINE")
        ignored = [flag for flag, given in _engine_ignores(args) if given]
        if ignored:
            raise UsageError(f"{', '.join(ignored)}: ignored with an engine (-e), which was built with its own "
                             "weights and precision; leave out, or use --backend reference -w WEIGHTS")  # fmt: skip
    else:
        if args.engine:
            raise UsageError("-e ENGINE is ignored by --backend reference, which runs -w WEIGHTS; leave one out")
        if not args.weights:
            raise UsageError("--backend reference needs -w WEIGHTS (it builds the network and runs it in PyTorch)")
    return kind


def _engine_ignores(args: argparse.Namespace) -> list[tuple[str, bool]]:
    return [
        ("-w", bool(args.weights)),
        ("--precision", args.precision != "fp32"),
        ("--io-dtype", args.io_dtype != "fp32"),
        ("--calib", args.calib is not None),
        ("--calib-cache", args.calib_cache is not None),
        ("--calib-images", args.calib_images is not None),
        ("--int8-fallback", args.int8_fallback != 0),
        ("--device", getattr(args, "device", "cpu") != "cpu"),
    ]


def build_output(nd: Netdef, args: argparse.Namespace) -> Path:
    return Path(args.output or f"{model_name(nd, args)}.engine")


def validate(nd: Netdef, args: argparse.Namespace) -> None:
    """Everything about the user's files and flags that can be checked before a model loads: inputs exist and can
    be read, outputs are no directory and never an input, devices exist, flags are not ignored."""
    if args.command not in COMMANDS:
        return
    inputs: list[str] = []
    if args.weights:
        check_input(args.weights, "-w weights")
        inputs.append(args.weights)
    if getattr(args, "image", None):
        check_input(args.image, "--image")
        inputs.append(args.image)
    if getattr(args, "calib", None) and not Path(args.calib).exists():
        raise UsageError(f"--calib {args.calib}: no such folder or image")
    if getattr(args, "calib_cache", None) and Path(args.calib_cache).exists():
        check_input(args.calib_cache, "--calib-cache")
    if args.precision != "int8" and any(given for flag, given in _engine_ignores(args)[3:7]):
        raise UsageError("--calib, --calib-cache, --calib-images and --int8-fallback apply to --precision int8 only")
    if args.command in ("infer", "bench"):
        if backend_of(args) == "trt":
            built_by = load_metadata(args.engine).get("netdef")  # the engine and its .json, verified as a pair
            if built_by != nd.name:
                raise UsageError(f"-e {args.engine} was built by netdef {built_by}, not {nd.name}: use that one")
            inputs += [args.engine, str(metadata_path(args.engine))]
    for flag, device in (("--device", getattr(args, "device", "cpu")), ("--calib-device", args.calib_device)):
        if device != "cpu":
            from trtx.sources import torch_device

            torch_device(device, flag)
    if args.command == "build":
        out = build_output(nd, args)
        for path, what in ((out, "-o"), (metadata_path(out), "-o's metadata")):
            check_output(path, what, [*inputs, args.calib_cache])
    if args.command == "inspect" and args.graph:
        from trtx.graph import FORMATS

        if Path(args.graph).suffix.lower() not in FORMATS:
            raise UsageError(f"--graph {args.graph}: give a .svg, .png or .dot file name")
        for path in (args.graph, Path(args.graph).with_suffix(".dot")):  # .dot: where Graphviz is not installed
            check_output(path, "--graph", inputs)
    if args.calib_cache:  # read and rewritten by design, but never one of the other inputs
        check_output(args.calib_cache, "--calib-cache", inputs)


def main(netdef: Netdef, argv: Sequence[str] | None = None) -> int:
    """Run the shared CLI for ``netdef``; user errors become one line on stderr and exit status 2."""
    args = _parser(netdef).parse_args(argv)

    def run() -> int:
        if args.command not in COMMANDS:
            return netdef.commands[args.command].run(args)
        validate(netdef, args)
        return COMMANDS[args.command](netdef, args)

    return base_cli.run(run)
