"""``python -m trtx export triton|deepstream``: the argument parsers and what each command does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trtx.export import ExportError, bundle


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` with its ``triton`` and ``deepstream`` subcommands to ``python -m trtx``'s subparsers."""
    text = "write a Triton model repository entry or a DeepStream nvinfer config from built engines"
    export = sub.add_parser("export", help=text, description=text)
    targets = export.add_subparsers(dest="target", required=True, metavar="TARGET")

    text = "REPO/NAME/config.pbtxt + REPO/NAME/1/model.plan (one plan per GPU arch for several engines)"
    t = targets.add_parser("triton", help=text, description=text)
    t.add_argument(
        "engines",
        nargs="+",
        metavar="ENGINE",
        help="engine built by trtx (its .json metadata beside it); several: one per GPU arch, same model",
    )
    t.add_argument("--repo", required=True, metavar="DIR", help="the Triton model repository (created if missing)")
    t.add_argument("--name", help="model name = folder name in the repository (default: the first engine's stem)")
    t.add_argument(
        "--instances",
        type=int,
        default=1,
        metavar="K",
        help="execution instances per GPU: instance_group count (default: 1)",
    )
    t.add_argument("--max-queue-delay-us", type=int, metavar="T",
                   help="dynamic batching: how long Triton waits to fill a batch, in microseconds (default: 100; "
                        "only for engines built with a dynamic batch profile 1:OPT:MAX)")  # fmt: skip

    text = "nvinfer config + labels file for a detector engine whose outputs are boxes, scores and classes"
    d = targets.add_parser("deepstream", help=text, description=text)
    d.add_argument("engine", metavar="ENGINE", help="detector engine built by trtx (its .json metadata beside it)")
    d.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="folder for config_infer_NAME.txt and labels_NAME.txt (created if missing)")  # fmt: skip
    d.add_argument("--name", help="NAME in the file names (default: the engine's stem)")
    d.add_argument("--parse-func", metavar="NAME", help="parse-bbox-func-name of your bbox parser (default: none, "
                   "the line is written commented out)")  # fmt: skip
    d.add_argument("--custom-lib", metavar="PATH", help="custom-lib-path: the .so holding that parser (default: none)")


def run(args: argparse.Namespace) -> int:
    if args.target == "triton":
        return _triton(args)
    return _deepstream(args)


def _triton(args: argparse.Namespace) -> int:
    from trtx.export import triton

    bundles = [bundle.load(e) for e in args.engines]
    name = args.name or Path(args.engines[0]).stem
    folder = triton.write_repository(
        bundles, args.repo, name, instances=args.instances, max_queue_delay_us=args.max_queue_delay_us
    )
    _warn(bundles, triton.SERVER)
    print(f"model    {folder} ({len(bundles)} plan{'s' if len(bundles) > 1 else ''})")
    print(f"config   {folder / 'config.pbtxt'}")
    print(f"serve    tritonserver --model-repository={Path(args.repo).resolve()}")
    return 0


def _deepstream(args: argparse.Namespace) -> int:
    from trtx.export import deepstream

    if bool(args.parse_func) != bool(args.custom_lib):
        raise ExportError("--parse-func and --custom-lib go together: the parser function and the library holding it")
    b = bundle.load(args.engine)
    config, labels = deepstream.write(
        b, args.out, args.name or Path(args.engine).stem, parse_func=args.parse_func, custom_lib=args.custom_lib
    )
    _warn([b], deepstream.SERVER)
    print(f"config   {config}")
    print(f"labels   {labels}")
    return 0


def _warn(bundles: list[bundle.Bundle], server: str) -> None:
    for b in bundles:
        for line in b.warnings(server):
            print(f"warning: {line}", file=sys.stderr)
