"""``make demo``: the whole trtx loop on a small real netdef, on any machine.

PyTorch model (random init, clearly labelled) → .wts → engine built by the real TensorRT builder →
layer table and graph picture → check against PyTorch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtx.demo", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default="out", help="folder for the demo's artifacts (default: out)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    import wts
    from netdefs import lenet
    from trtx import cli, sources

    weights = out / "lenet5.wts"
    _step("weights: LeNet-5 from PyTorch with RANDOM weights (seed 0) - a demo, not a trained model")
    model = sources.build_model("netdef:lenet", seed=0)
    wts.save(sources.state_dict_for_wts(model, "netdef:lenet"), weights)
    print(f"weights  {weights}")

    engine = out / "lenet5.engine"
    _step("build: the netdef defines the network layer by layer; the TensorRT builder serializes it")
    if cli.main(lenet, ["build", "-w", str(weights), "-o", str(engine), "--batch", "1:4:8"]):
        return 1

    _step("inspect: what the builder saw")
    graph = out / "lenet5.svg"
    if cli.main(lenet, ["inspect", "-w", str(weights), "--graph", str(graph)]):
        return 1

    _step("check: reference executor vs the PyTorch model, output and every named layer")
    status = cli.main(lenet, ["check", "-w", str(weights), "--batch", "2"])

    print(
        f"\nartifacts in {out}/ ({time.perf_counter() - t0:.1f} s): {weights.name}, {engine.name} (+ .json), "
        f"{graph.name if graph.exists() else graph.with_suffix('.dot').name}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
