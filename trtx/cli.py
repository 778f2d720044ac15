"""The command line every netdef shares: ``build check inspect infer bench``.

A netdef module declares itself once (``NETDEF = trtx.netdef.Netdef(...)``, see docs/netdefs.md) and ends with
``if __name__ == "__main__": sys.exit(trtx.cli.main(NETDEF))``. Everything here reads that declaration's
fields: ``configure``/``define`` for every command, ``torch`` for ``check``, ``app`` for ``infer``/``bench``,
``add_arguments``/``commands`` for the netdef's own options and subcommands.
"""

from __future__ import annotations

import argparse
import json
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
    resolve_gpu_archs,
    save_engine,
)
from trtx.net import PRECISIONS, Net, NetdefError
from trtx.netdef import Netdef, Network, seeded_normal_feeds
from trtx_base.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class UsageError(NetdefError):
    pass


# ---- argument parsing ---------------------------------------------------------------------------------
def _parser(nd: Netdef) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=nd.script or f"python -m netdefs {nd.name}", description=nd.description)
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
    if nd.networks and command in ("check", "inspect"):
        names = [n.name for n in nd.networks]
        p.add_argument(
            "--network",
            choices=names,
            action="append",
            help=f"only this network of the pipeline; repeatable (default: all of {', '.join(names)})",
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
        q.add_argument("--calib-images", type=int, metavar="N", help="use at most N calibration images")
        q.add_argument(
            "--calib-cache", metavar="FILE", help="JSON cache of the ranges; reused while the weights file is unchanged"
        )
        q.add_argument("--calib-device", default="cpu", help="device the calibration runs on (cpu|cuda)")
        q.add_argument(
            "--int8-fallback",
            type=int,
            default=0,
            metavar="N",
            help="keep the N quantized tensors whose int8 rounding changes the outputs most in fp16 (a sensitivity "
            "pass on the first 4 calibration images ranks them; cached with the ranges). Default: 0",
        )
    if command == "build":
        p.add_argument(
            "-o",
            "--output",
            help="engine path (default: <arch>.engine); metadata goes to <engine>.json"
            + (". Several networks: <stem>.<network>.engine each, and <stem>.json naming them" if nd.networks else ""),
        )
        p.add_argument("--batch", default="1", help="fixed batch N or dynamic profile MIN:OPT:MAX (default: 1)")
        p.add_argument("--workspace", type=int, metavar="MIB", help="builder workspace limit in MiB")
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
        p.add_argument("--batch", type=int, default=1, help="batch size of the check input (default: 1)")
        p.add_argument("--seed", type=int, default=0, help="seed of the random input (default: 0)")
        p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default: precision-dependent)")
        p.add_argument(
            "--rtol",
            type=float,
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
        p.add_argument(
            "-e",
            "--engine",
            help="serialized engine (with its .json metadata) for --backend trt"
            + ("; several networks: the pipeline's .json that names their engines" if nd.networks else ""),
        )
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
        p.add_argument("-o", "--outdir", default="out/infer", help="where annotated images and JSON go")
        p.add_argument("--batch", type=int, default=1, help="images per inference call (default: 1)")
        p.add_argument("--json", action="store_true", help="print each image's results as one line of JSON")
    if command == "bench":
        p.add_argument("--image", help="image to bench with (default: the netdef's example input)")
        p.add_argument("--batch", default="1", help="batch sizes to time, comma separated (default: 1)")
        p.add_argument("--iters", type=int, default=10, help="timed iterations per batch size (default: 10)")
        p.add_argument("--warmup", type=int, default=2, help="untimed warm-up iterations (default: 2)")


# ---- shared steps -------------------------------------------------------------------------------------
def load_weights(path: str | None):
    if path is None:
        return None
    import wts

    if not Path(path).exists():
        raise UsageError(f"weights file {path} does not exist (write one with gen_wts.py)")
    return wts.load(path)


def make_net(nd: Netdef, args: argparse.Namespace, weights, cfg, network: Network | None = None) -> Net:
    """The network of ``nd`` (of a multi-network netdef: ``network``) defined on ``weights``."""
    calibration = None
    if args.precision == "int8" and nd.networks:
        raise UsageError(f"{nd.name}: int8 calibration of a multi-network pipeline is not supported; use fp32/fp16")
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
    net = Net(
        weights,
        precision=args.precision,
        io_dtype=args.io_dtype,
        calibration=calibration,
        int8_fallback=getattr(calibration, "fallback", ()),
        name=model_name(nd, args) + (f".{network.name}" if network is not None else ""),
    )
    (network.define if network is not None else nd.define)(net, cfg)
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
    nd: Netdef,
    shapes: dict[str, Sequence[int]],
    cfg,
    image: str | None,
    batch: int,
    seed: int = 0,
    network: Network | None = None,
) -> dict[str, np.ndarray]:
    """The netdef's example input (an image through its preprocessing) or a seeded standard-normal input."""
    feeds = (network or nd.network(None)).feeds
    if feeds is not None:
        return feeds(cfg, image, batch, seed)
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
def _networks(nd: Netdef, args: argparse.Namespace) -> list[Network | None]:
    """The networks a command works on: [None] for a one-network netdef, else those ``--network`` names (all)."""
    if not nd.networks:
        return [None]
    chosen = vars(args).get("network") or [n.name for n in nd.networks]
    return [nd.network(name) for name in chosen]


def _build_options(args: argparse.Namespace) -> BuildOptions:
    return BuildOptions(
        batch=BatchSpec.parse(args.batch),
        workspace_mib=args.workspace,
        optimization_level=args.opt_level,
        verbose=args.verbose,
        gpu_archs=resolve_gpu_archs(args.gpu_arch),
    )


def cmd_build(nd: Netdef, args: argparse.Namespace) -> int:
    weights = load_weights(args.weights)
    cfg = configure(nd, args, weights)
    options = _build_options(args)
    out = Path(args.output or f"{model_name(nd, args)}.engine")
    engines = {}
    nets = [(network, make_net(nd, args, weights, cfg, network)) for network in _networks(nd, args)]
    _warn_unused(nets[-1][1], nd, cfg)  # one weights file for all the networks: read once they are all defined
    for network, net in nets:
        path = out if network is None else out.with_name(f"{out.stem}.{network.name}{out.suffix or '.engine'}")
        print(
            f"building {net.network.name}: {net.network.num_layers} layers, precision {net.precision}, "
            f"batch {options.batch} ({net.backend.name} {net.backend.version})",
            file=sys.stderr,
        )
        engine = build_serialized(net, options)
        extra = {"arch": vars(args).get("arch"), "unused_weights": net.unused_weights()}
        if network is not None:
            extra["network"] = network.name
        meta = metadata(net, options, netdef=nd.name, weights_path=args.weights, extra=extra)
        engine_path, meta_path = save_engine(path, engine, meta)
        engines[network.name if network is not None else None] = engine_path
        print(f"engine   {engine_path} ({len(engine) / 1e6:.1f} MB, built in {net.build_seconds:.1f} s)")
        print(f"metadata {meta_path}")
    if nd.networks:
        pipeline = out.with_suffix(".json")
        save_pipeline(pipeline, nd, args, nets, engines)
        print(f"pipeline {pipeline}")
    return 0


def save_pipeline(path: Path, nd: Netdef, args: argparse.Namespace, nets, engines: dict) -> None:
    """The metadata of a multi-network build: the netdef, the facts its networks recorded, and their engines
    (relative to ``path``'s folder), which ``infer -e`` reads."""
    from trtx_base.files import atomic_write

    meta = {"netdef": nd.name, "arch": vars(args).get("arch"), "precision": args.precision}
    for _, net in nets:
        meta.update(net.meta)
    meta["engines"] = {name: Path(p).name for name, p in engines.items()}
    atomic_write(path, json.dumps(meta, indent=2) + "\n")


def cmd_inspect(nd: Netdef, args: argparse.Namespace) -> int:
    from trtx import inspect as tinspect

    weights = load_weights(args.weights)
    cfg = configure(nd, args, weights)
    docs = {}
    for network in _networks(nd, args):
        net = make_net(nd, args, weights, cfg, network)
        summary = tinspect.describe(net.network)
        if args.json:
            docs[net.network.name] = summary.to_json()
        else:
            print(summary.table() if network is None else f"== {net.network.name}\n{summary.table()}")
        if args.graph:
            graph = Path(args.graph)
            if network is not None:
                graph = graph.with_name(f"{graph.stem}.{network.name}{graph.suffix}")
            written = tinspect.write_graph(net.network, str(graph))
            print(f"graph    {written}", file=sys.stderr)
    if args.json:
        print(json.dumps(docs[next(iter(docs))] if not nd.networks else docs, indent=1))
    return 0


def cmd_check(nd: Netdef, args: argparse.Namespace) -> int:
    from trtx import check

    weights = load_weights(args.weights)
    cfg = configure(nd, args, weights)
    if nd.torch is None:
        raise UsageError(f"{nd.name} declares no PyTorch model to compare with: check is not available")
    model = nd.torch.model(cfg, weights)
    tolerances = {k: v for k, v in (("atol", args.atol), ("rtol", args.rtol)) if v is not None}
    results, passed = {}, True
    for network in _networks(nd, args):
        net = make_net(nd, args, weights, cfg, network)
        feeds = example_feeds(nd, input_shapes(net), cfg, args.image, args.batch, args.seed, network)
        result = check.compare(
            net.network,
            model,
            feeds,
            forward=(network or nd.network(None)).forward,
            device=args.device,
            layers=not args.no_layers,
            precision=args.precision,
            **tolerances,
        )
        if network is None and nd.torch.extra is not None:
            result.add_extra(nd.torch.extra(cfg, result.network_outputs, result.expected_outputs, args.precision))
        results[net.network.name] = result
        passed = passed and result.passed
        if not args.json:
            print(result.table() if network is None else f"== {net.network.name}\n{result.table()}")
    if args.json:
        docs = {name: r.to_json() for name, r in results.items()}
        print(json.dumps(docs if nd.networks else next(iter(docs.values())), indent=1))
    return 0 if passed else 1


def _images(sources: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise UsageError(f"{s}: no such image or folder")
    if not found:
        raise UsageError(f"no images in {', '.join(sources)}")
    return found


def _read_image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UsageError(f"{path}: not a readable image")
    return img


def make_runner(nd: Netdef, args: argparse.Namespace) -> tuple[Callable[[dict], dict], Any, dict, str]:
    """(run(feeds) -> outputs as numpy, cfg, input shapes, description) for --backend trt or reference.

    A multi-network netdef gets ``{network name: run}`` for ``run`` (and no input shapes)."""
    backend_kind = args.backend or ("trt" if args.engine else "reference")
    if backend_kind == "trt":
        if not args.engine:
            raise UsageError("--backend trt needs -e ENGINE")
        from trtx import runtime

        if nd.networks:
            meta = json.loads(Path(args.engine).read_text())
            if "engines" not in meta:
                raise UsageError(f"{args.engine}: not a pipeline metadata file (no 'engines'); build writes one")
            cfg = configure(nd, args, None, meta)
            folder = Path(args.engine).parent
            runs = {name: runtime.Engine(folder / file).infer for name, file in meta["engines"].items()}
            return runs, cfg, {}, f"TensorRT engines of {args.engine}"
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
    device = args.device

    def runner(net: Net) -> Callable[[dict], dict]:
        plan = reference.compile(net, device)  # read once; on CUDA each input shape's run becomes a CUDA graph

        def run(feeds: dict) -> dict:
            out = plan(feeds)
            return {k: v.detach().float().cpu().numpy() for k, v in out.items()}

        run.net = net  # keep the network (and its weights) alive
        return run

    if nd.networks:
        runs = {n.name: runner(make_net(nd, args, weights, cfg, n)) for n in nd.networks}
        return runs, cfg, {}, f"reference executor on {device}"
    net = make_net(nd, args, weights, cfg)
    return runner(net), cfg, input_shapes(net), f"reference executor on {device}"


def _results(app, run, images: list[np.ndarray], cfg) -> list[Any]:
    """One result per image: the netdef's pipeline, or preprocess -> the network -> postprocess."""
    if app.pipeline is not None:
        return app.pipeline(run, images, cfg)
    feeds, ctx = app.preprocess(images, cfg)
    return app.postprocess(run(feeds), ctx, cfg)


def cmd_infer(nd: Netdef, args: argparse.Namespace) -> int:
    import cv2

    app = nd.app
    if app is None:
        raise UsageError(f"{nd.name} declares no application (preprocess/postprocess): infer is not available")
    run, cfg, _, what = make_runner(nd, args)
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = _images(args.sources)
    print(f"infer with {what}: {len(paths)} image(s) -> {outdir}", file=sys.stderr)
    from trtx_base.files import atomic_write

    for start in range(0, len(paths), args.batch):
        chunk = paths[start : start + args.batch]
        images = [_read_image(p) for p in chunk]
        results = _results(app, run, images, cfg)
        for path, image, result in zip(chunk, images, results):
            if args.json:
                doc = app.records(result, cfg) if app.records else app.result_json(result, cfg)
                print(json.dumps(doc))
            else:
                print(f"{path.name}: {app.summary(result, cfg) if app.summary else result}")
            if app.render is not None:
                ok, buf = cv2.imencode(path.suffix or ".jpg", app.render(image, result, cfg))
                if ok:
                    atomic_write(outdir / path.name, buf.tobytes())
            if app.result_json is not None:
                doc = dict(app.result_json(result, cfg), image=str(path), height=image.shape[0], width=image.shape[1])
                atomic_write(outdir / f"{path.stem}.json", json.dumps(doc, indent=1) + "\n")
    return 0


def cmd_bench(nd: Netdef, args: argparse.Namespace) -> int:
    run, cfg, shapes, what = make_runner(nd, args)
    app = nd.app
    has_pre = app is not None and bool(args.image)
    image = _read_image(Path(args.image)) if has_pre else None
    print(f"bench {what}")
    if nd.networks:  # a pipeline calls its networks itself: time it whole
        if image is None:
            raise UsageError(f"{nd.name} is a pipeline of several networks: bench it with --image")
        print(f"{'batch':>5} {'ms/img':>11} {'img/s':>9}")
        for b in (int(x) for x in str(args.batch).split(",")):
            times = []
            for i in range(args.warmup + args.iters):
                t0 = time.perf_counter()
                _results(app, run, [image] * b, cfg)
                if i >= args.warmup:
                    times.append((time.perf_counter() - t0) / b)
            med = float(np.median(times)) * 1e3
            print(f"{b:>5} {med:>11.3f} {1e3 / med:>9.1f}")
        return 0
    print(f"{'batch':>5} {'pre ms/img':>11} {'infer ms/img':>13} {'post ms/img':>12} {'img/s':>9}")
    for b in (int(x) for x in str(args.batch).split(",")):
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


def main(netdef: Netdef, argv: Sequence[str] | None = None) -> int:
    """Run the shared CLI for ``netdef``; user errors become one line on stderr and exit status 2."""
    args = _parser(netdef).parse_args(argv)
    try:
        if args.command not in COMMANDS:
            return netdef.commands[args.command].run(args)
        return COMMANDS[args.command](netdef, args)
    except (UserError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
