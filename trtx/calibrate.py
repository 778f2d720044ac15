"""INT8 calibration: run images through the fp32 network on the reference executor, collect ranges.

The fp32 network is defined by the same ``define`` as the int8 one; every tensor the int8 network
quantizes (``net.quant_inputs``: inputs of conv/linear) is observed on each calibration image (the netdef's
own preprocessing), and turned into an amax by :mod:`trtx.quant`. Results are cached as JSON keyed by
tensor name and invalidated when the weights file changes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from trtx.build import file_sha256
from trtx.net import Net, NetdefError
from trtx.quant import CalibrationError, Calibrator, load_cache, save_cache

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def calibration_images(source: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Images in a folder (sorted by name, so runs are repeatable), or a single image file."""
    path = Path(source)
    if path.is_file():
        images = [path]
    elif path.is_dir():
        images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise NetdefError(f"--calib {source}: no such folder or image")
    if not images:
        raise NetdefError(f"--calib {source}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images[:limit] if limit else images


def collect(
    define: Callable[[Net], None],
    weights,
    feeds_iter,
    *,
    method: str = "entropy",
    percentile: float = 99.99,
    device: str = "cpu",
    total: int | None = None,
) -> dict[str, float]:
    """Run ``feeds_iter`` through the fp32 network ``define`` builds and return amax per quantized tensor."""
    from tqdm import tqdm

    from trtx import reference

    net = Net(weights, precision="fp32", name="calibration")
    define(net)
    points = list(net.quant_inputs)
    calibrator = Calibrator(method, percentile=percentile)
    for feeds in tqdm(
        feeds_iter,
        total=total,
        desc=f"calibrating ({method})",
        unit="img",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    ):
        values = reference.execute(net.network, feeds, device=device, keep=points)
        for name in points:
            calibrator.observe(name, values[name])
    if not calibrator.histograms:
        raise CalibrationError("calibration saw no data")
    return calibrator.amaxes()


def for_netdef(
    nd: ModuleType,
    cfg: Any,
    weights,
    weights_path: str | None,
    *,
    calib: str | None,
    method: str = "entropy",
    images: int | None = None,
    cache: str | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Calibration ranges for a netdef: from ``cache`` when it matches the weights, else computed and cached."""
    sha = file_sha256(weights_path) if weights_path else ""
    if cache and Path(cache).exists():
        try:
            amax = load_cache(cache, weights_sha256=sha, method=method)
            print(f"calibration: {len(amax)} ranges from {cache}", file=sys.stderr)
            return amax
        except CalibrationError as exc:
            if not calib:
                raise
            print(f"calibration: {exc}", file=sys.stderr)
    if not calib:
        raise NetdefError("--precision int8 needs calibration images (--calib DIR) or a matching --calib-cache FILE")
    if not hasattr(nd, "preprocess"):
        raise NetdefError(f"{nd.NAME} has no preprocess(): it cannot calibrate from images")
    paths = calibration_images(calib, images)

    def feeds() -> Sequence[dict]:
        import cv2

        for p in paths:
            image = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if image is None:
                raise NetdefError(f"calibration image {p} is not readable")
            yield nd.preprocess([image], cfg)[0]

    amax = collect(lambda net: nd.define(net, cfg), weights, feeds(), method=method, device=device, total=len(paths))
    if cache:
        save_cache(cache, amax, weights_sha256=sha, method=method, images=len(paths))
        print(f"calibration: {len(amax)} ranges from {len(paths)} images cached in {cache}", file=sys.stderr)
    return amax
