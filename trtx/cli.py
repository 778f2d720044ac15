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
from trtx.netdef import Netdef, Network, seeded_normal_feeds
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
        p.add_argument(
            "-o",
            "--output",
            help="engine path (default: <arch>.engine); metadata goes to <engine>.json"
            + (". Several networks: <stem>.<network>.engine each, and <stem>.json naming them" if nd.networks else ""),
        )
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
        p.add_argument(
            "-o",
            "--outdir",
            default="out/infer",
            help="folder for the annotated images and JSON, one of each per input image, named after it; never "
            "an input's own folder when that would write over the image (default: %(default)s)",
        )
        p.add_argument("--batch", type=positive_int, default=1, help="images per inference call (default: 1)")
        p.add_argument("--json", action="store_true", help="print each image's results as one line of JSON")
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


def make_net(nd: Netdef, args: argparse.Namespace, weights, cfg, network: Network | None = None) -> Net:
    """The network of ``nd`` (of a multi-network netdef: ``network``) defined on ``weights``, and checked."""
    net = new_net(nd, args, weights, cfg, network)
    define_network(net, network.define if network is not None else nd.define, cfg)
    return finish_net(net, args)


def new_net(nd: Netdef, args: argparse.Namespace, weights, cfg, network: Network | None = None) -> Net:
    """An empty :class:`Net` for ``args`` (int8: with its calibration ranges), for the netdef to define."""
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
    return Net(
        weights,
        precision=args.precision,
        io_dtype=args.io_dtype,
        calibration=calibration,
        int8_fallback=getattr(calibration, "fallback", ()),
        name=model_name(nd, args) + (f".{network.name}" if network is not None else ""),
    )


def finish_net(net: Net, args: argparse.Namespace) -> Net:
    """After the netdef defined it: every weight it read is finite; record int8's quantized tensors; warn about
    layers off the fp32 policy."""
    net.check_weights_finite()
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
        batch=args.batch,
        workspace_mib=args.workspace,
        optimization_level=args.opt_level,
        verbose=args.verbose,
        gpu_archs=resolve_gpu_archs(args.gpu_arch),
    )


def cmd_build(nd: Netdef, args: argparse.Namespace) -> int:
    weights = load_weights(args.weights)
    cfg = configure(nd, args, weights)
    options = _build_options(args)
    out = build_output(nd, args)
    engines = {}
    nets = [(network, make_net(nd, args, weights, cfg, network)) for network in _networks(nd, args)]
    _warn_unused(nets[-1][1], nd, cfg)  # one weights file for all the networks: read once they are all defined
    for network, net in nets:
        path = engine_path_of(out, network)
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
        pipeline = pipeline_path(out)
        save_pipeline(pipeline, nd, args, nets, engines)
        print(f"pipeline {pipeline}")
    return 0


def build_output(nd: Netdef, args: argparse.Namespace) -> Path:
    return Path(args.output or f"{model_name(nd, args)}.engine")


def engine_path_of(out: Path, network: Network | None) -> Path:
    """Where ``build -o out`` writes the engine of ``network`` (None: the netdef's only network)."""
    return out if network is None else out.with_name(f"{out.stem}.{network.name}{out.suffix or '.engine'}")


def pipeline_path(out: Path) -> Path:
    return out.with_suffix(".json")


def build_outputs(nd: Netdef, args: argparse.Namespace) -> list[tuple[Path, str]]:
    """Every file ``build`` writes, with what it is: the engines, their metadata, a pipeline's .json."""
    out = build_output(nd, args)
    files = []
    for network in _networks(nd, args):
        engine = engine_path_of(out, network)
        files += [(engine, "-o"), (metadata_path(engine), "-o's metadata")]
    if nd.networks:
        files.append((pipeline_path(out), "-o's pipeline metadata"))
    return files


def graph_path(graph: str, network: Network | None) -> Path:
    """Where ``inspect --graph`` draws ``network`` (a multi-network netdef: one picture per network)."""
    path = Path(graph)
    return path if network is None else path.with_name(f"{path.stem}.{network.name}{path.suffix}")


def load_pipeline(path: str | os.PathLike) -> dict[str, Any]:
    """A multi-network build's ``.json`` (``infer -e``), every engine it names verified with its own metadata;
    errors name the file."""
    from trtx.build import EngineMetadataError

    path = check_input(path, "-e pipeline metadata")
    try:
        meta = json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:  # ValueError: not JSON, not UTF-8
        raise EngineMetadataError(f"{path}: not a pipeline metadata file ({str(exc)[:80]})") from None
    engines = meta.get("engines") if isinstance(meta, dict) else None
    if not isinstance(engines, dict) or not all(isinstance(f, str) for f in engines.values()):
        raise EngineMetadataError(f"{path}: not a pipeline metadata file (no 'engines'); build writes one")
    for file in engines.values():
        load_metadata(path.parent / file)
    return meta


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
            written = tinspect.write_graph(net.network, str(graph_path(args.graph, network)))
            print(f"graph    {written}", file=sys.stderr)
    if args.json:
        print(json.dumps(docs[next(iter(docs))] if not nd.networks else docs, indent=1))
    return 0


def cmd_check(nd: Netdef, args: argparse.Namespace) -> int:
    if nd.torch is None:
        raise UsageError(f"{nd.name} declares no PyTorch model to compare with: check is not available")
    weights = load_weights(args.weights)
    cfg = configure(nd, args, weights)
    model = nd.torch.model(cfg, weights)
    results, passed = {}, True
    for network in _networks(nd, args):
        result = check_netdef(nd, args, weights, cfg, network, model)
        name = model_name(nd, args) + (f".{network.name}" if network is not None else "")
        results[name] = result
        passed = passed and result.passed
        if not args.json:
            print(result.table() if network is None else f"== {name}\n{result.table()}")
    if args.json:
        docs = {name: r.to_json() for name, r in results.items()}
        print(json.dumps(docs if nd.networks else next(iter(docs.values())), indent=1))
    return 0 if passed else 1


def check_netdef(nd: Netdef, args: argparse.Namespace, weights, cfg, network: Network | None = None, model=None):
    """``check``'s :class:`~trtx.check.CheckResult` for the netdef's network (of a multi-network netdef:
    ``network``) with ``weights`` and ``cfg``. When the netdef stops before its network is complete, the first layer
    whose shape already differs from PyTorch's is the first divergent one (:func:`trtx.check.diagnose`)."""
    from trtx import check

    model = nd.torch.model(cfg, weights) if model is None else model
    forward = (network or nd.network(None)).forward
    net = new_net(nd, args, weights, cfg, network)
    try:
        define_network(net, network.define if network is not None else nd.define, cfg)
    except UserError as exc:
        feeds = example_feeds(nd, input_shapes(net), cfg, args.image, args.batch, args.seed, network)
        return check.diagnose(net.network, model, feeds, exc, forward=forward, device=args.device,
                              precision=args.precision)  # fmt: skip
    finish_net(net, args)
    feeds = example_feeds(nd, input_shapes(net), cfg, args.image, args.batch, args.seed, network)
    tolerances = {k: v for k, v in (("atol", args.atol), ("rtol", args.rtol)) if v is not None}
    result = check.compare(
        net.network,
        model,
        feeds,
        forward=forward,
        device=args.device,
        layers=not args.no_layers,
        precision=args.precision,
        **tolerances,
    )
    if network is None and nd.torch.extra is not None and result.incomplete is None:
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
    """(run(feeds) -> outputs as numpy, cfg, input shapes, description) for --backend trt or reference.

    A multi-network netdef gets ``{network name: run}`` for ``run`` (and no input shapes)."""
    backend_kind = backend_of(args)
    if backend_kind == "trt":
        from trtx import runtime

        if nd.networks:
            meta = load_pipeline(args.engine)
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
            _infer_chunk(nd, args, cfg, run, readable, planned, cv2, atomic_write)
        readable = []
    if unreadable:
        shown = ", ".join(str(p) for p in unreadable[:5]) + (", …" if len(unreadable) > 5 else "")
        raise UsageError(f"{len(unreadable)} of {len(paths)} image(s) could not be read: {shown}")
    return 0


def _infer_chunk(nd: Netdef, args: argparse.Namespace, cfg, run, chunk, planned, cv2, atomic_write) -> None:
    app = nd.app
    results = _results(app, run, [image for _, image in chunk], cfg)
    for (path, image), result in zip(chunk, results):
        if args.json:
            doc = app.records(result, cfg) if app.records else app.result_json(result, cfg)
            print(json.dumps(doc))
        else:
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
    if nd.networks:  # a pipeline calls its networks itself: time it whole
        if image is None:
            raise UsageError(f"{nd.name} is a pipeline of several networks: bench it with --image")
        print(f"{'batch':>5} {'ms/img':>11} {'img/s':>9}")
        for b in args.batch:
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
    if args.command == "infer" and args.json and nd.app is not None and not (nd.app.records or nd.app.result_json):
        raise UsageError(f"--json: {nd.name} declares no JSON form of its results (App.result_json or records)")
    if args.command in ("infer", "bench"):
        if backend_of(args) == "trt":
            if nd.networks:  # the pipeline's .json and every engine it names, each verified with its metadata
                meta = load_pipeline(args.engine)
                engines = [Path(args.engine).parent / f for f in meta["engines"].values()]
                inputs += [args.engine, *map(str, engines), *(str(metadata_path(e)) for e in engines)]
            else:
                meta = load_metadata(args.engine)  # the engine and its .json, verified as a pair
                inputs += [args.engine, str(metadata_path(args.engine))]
            if meta.get("netdef") != nd.name:
                raise UsageError(f"-e {args.engine} was built by netdef {meta.get('netdef')}, not {nd.name}: use that")
    for flag, device in (("--device", getattr(args, "device", "cpu")), ("--calib-device", args.calib_device)):
        if device != "cpu":
            from trtx.sources import torch_device

            torch_device(device, flag)
    if args.command == "build":
        for path, what in build_outputs(nd, args):
            check_output(path, what, [*inputs, args.calib_cache])
    if args.command == "inspect" and args.graph:
        from trtx.graph import FORMATS

        if Path(args.graph).suffix.lower() not in FORMATS:
            raise UsageError(f"--graph {args.graph}: give a .svg, .png or .dot file name")
        for network in _networks(nd, args):
            graph = graph_path(args.graph, network)
            for path in (graph, graph.with_suffix(".dot")):  # .dot: where Graphviz is not installed
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
