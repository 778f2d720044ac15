"""INT8 calibration: run images through the fp32 network on the reference executor, collect ranges.

The fp32 network is defined by the same ``define`` as the int8 one; every tensor the int8 network
quantizes (``net.quant_inputs``: inputs of conv/deconv/linear and residual inputs of fused adds) is observed on
each calibration image (the netdef's own preprocessing), and turned into an amax by :mod:`trtx.quant`. Tensors
that a concatenation merges share one scale (:func:`tie_concat_scales`). Results are cached as JSON keyed by
tensor name and invalidated when the weights file changes.

Optionally (``fallback``), a sensitivity pass ranks the quantized tensors by how much quantizing each one alone
changes the network outputs (logits, for an output a softmax makes), and the most sensitive ones stay in fp16
(:func:`sensitivity`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from trtx.build import file_sha256
from trtx.net import Net, NetdefError, define_network
from trtx.netdef import Netdef
from trtx.quant import CalibrationError, Calibrator, cached_sensitivity, load_cache, save_cache

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
#: calibration images the sensitivity pass runs (each costs one network run per quantized tensor)
SENSITIVITY_IMAGES = 4
#: layers a Quantize commutes with, so a concatenation's scale reaches back through them (TensorRT moves Q
#: layers backwards across these; the int8 values then flow through unchanged)
_COMMUTES_WITH_Q = ("POOLING", "RESIZE", "SHUFFLE", "SLICE", "IDENTITY", "CONCATENATION")


class Calibration(dict):
    """Activation ranges (amax) by tensor name, plus the tensors left in fp16 and the sensitivity behind that."""

    def __init__(self, amax: dict[str, float], fallback: Sequence[str] = (), sensitivity: dict | None = None):
        super().__init__(amax)
        self.fallback = list(fallback)
        self.sensitivity = sensitivity


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


def _progress(iterable, total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", file=sys.stderr, disable=not sys.stderr.isatty())


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
    """Run ``feeds_iter`` through the fp32 network ``define`` builds and return amax per quantized tensor
    (tensors merged by a concatenation share one, see :func:`tie_concat_scales`)."""
    from trtx import reference

    net = Net(weights, precision="fp32", name="calibration")
    define(net)
    points = list(net.quant_inputs)
    calibrator = Calibrator(method, percentile=percentile)
    plan = reference.compile(net, device, keep=points)  # read once, run per batch
    for feeds in _progress(feeds_iter, total, f"calibrating ({method})"):
        values = plan(feeds)
        for name in points:
            calibrator.observe(name, values[name])
    if not calibrator.histograms:
        raise CalibrationError("calibration saw no data")
    return tie_concat_scales(net.network, calibrator.amaxes())


def concat_groups(network, points: Iterable[str]) -> list[tuple[list[str], list[str]]]:
    """Quantized tensors a concatenation merges: ``(concat outputs, member tensors)`` per group.

    A concatenation whose output is quantized lays its inputs side by side in the int8 output; TensorRT moves
    the output's Quantize back onto each input (and through max-pool, resize, reshape, slice, which commute with
    it). An input that is also quantized for another consumer then needs that same scale, or TensorRT keeps it in
    fp16 and requantizes (NVIDIA's yolov5/yolov7 Q/DQ guidance: concat inputs and output share one scale).
    Concatenations that share a tensor form one group.
    """
    from trtx import layers as layer_api

    points = set(points)
    producer: dict[str, Any] = {}
    concats = []
    for layer in layer_api.layers(network):
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer
        if layer_api.enum_name(layer_api.layer_type(layer)) == "CONCATENATION":
            concats.append(layer)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def reach_back(name: str) -> set[str]:
        """``name`` and the tensors it is a commuting view of, walking producers back."""
        seen, todo = set(), [name]
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            layer = producer.get(t)
            if layer is None:
                continue
            kind = layer_api.enum_name(layer_api.layer_type(layer))
            if kind in _COMMUTES_WITH_Q and _commutes(layer, kind):
                inputs = range(layer.num_inputs) if kind == "CONCATENATION" else [0]
                todo.extend(layer.get_input(k).name for k in inputs)
        return seen

    outputs_of: dict[str, list[str]] = {}
    for layer in concats:
        out = layer.get_output(0).name
        if out not in points:
            continue
        for k in range(layer.num_inputs):
            for t in reach_back(layer.get_input(k).name):
                if t in points and t != out:
                    parent[find(t)] = find(out)
        find(out)
        outputs_of.setdefault(out, [])
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for t in parent:
        root = find(t)
        g = groups.setdefault(root, ([], []))
        (g[0] if t in outputs_of else g[1]).append(t)
    return [(sorted(o), sorted(m)) for o, m in groups.values() if m]


def _commutes(layer, kind: str) -> bool:
    """Max-pooling and nearest resize commute with a Quantize; average pooling and interpolation do not."""
    from trtx import layers as layer_api

    if kind == "POOLING":  # a typed pooling layer's .type is its PoolingType
        return layer_api.enum_name(layer.type) == "MAX"
    if kind == "RESIZE":
        return layer_api.enum_name(layer.resize_mode) == "NEAREST"
    return True


def tie_concat_scales(network, amax: dict[str, float]) -> dict[str, float]:
    """``amax`` with every tensor of a :func:`concat_groups` group set to the largest amax of the group's
    concatenation outputs (the concatenation's own threshold, so none of its inputs is clipped more)."""
    tied = dict(amax)
    for outputs, members in concat_groups(network, amax):
        value = max(amax[o] for o in outputs)
        for t in outputs + members:
            tied[t] = value
    return tied


def sensitivity(
    define: Callable[[Net], None],
    weights,
    amax: dict[str, float],
    feeds: Sequence[dict],
    *,
    device: str = "cpu",
) -> dict[str, float]:
    """How much quantizing each tensor alone changes the outputs: for every quantization point, the int8 network
    with only that tensor (and its consumers' weights) quantized runs on ``feeds``. The value is the relative L2
    error ``||int8 - fp32|| / ||fp32||`` against the fp32 network, per image and float output, averaged. An output
    a softmax produces is compared before the softmax (logits), where every class counts, not just the top one."""
    import torch

    from trtx import reference

    fp32 = Net(weights, precision="fp32", name="sensitivity")
    define(fp32)
    points = list(fp32.quant_inputs)
    compared = _compared_outputs(fp32.network)
    reference_plan = reference.compile(fp32, device, keep=compared)
    try:  # one batch when the network takes one (a fixed batch-1 input does not)
        batched = _batched(feeds)
        expected = [reference_plan(f) for f in batched]
        feeds = batched
    except reference.ReferenceExecutionError:
        expected = [reference_plan(f) for f in feeds]
    result: dict[str, float] = {}
    for point in _progress(points, len(points), "int8 sensitivity"):
        net = Net(weights, precision="int8", calibration=amax, int8_fallback=set(points) - {point})
        define(net)
        errors = []
        plan = reference.compile(net, device, keep=compared)
        for f, want in zip(feeds, expected):
            got = plan(f)
            for name in compared:
                w = want[name].double().reshape(len(want[name]), -1)
                d = torch.linalg.vector_norm(got[name].double().reshape(w.shape) - w, dim=1)
                errors += (d / torch.linalg.vector_norm(w, dim=1).clamp_min(1e-30)).tolist()
        result[point] = sum(errors) / len(errors) if errors else 0.0
    return result


def _compared_outputs(network) -> list[str]:
    """The float outputs of the (fp32) network, each replaced by the input of the softmax producing it, if any."""
    from trtx import layers as layer_api
    from trtx_base import backend

    def kind(layer) -> str:
        return layer_api.enum_name(layer_api.layer_type(layer))

    producer = {
        layer.get_output(j).name: layer for layer in layer_api.layers(network) for j in range(layer.num_outputs)
    }
    floats = (backend.trt.DataType.FLOAT, backend.trt.DataType.HALF)
    names = []
    for t in (network.get_output(i) for i in range(network.num_outputs)):
        if t.dtype not in floats:
            continue
        layer = producer.get(t.name)
        while layer is not None and kind(layer) in ("CAST", "IDENTITY"):  # a cast to the I/O dtype
            layer = producer.get(layer.get_input(0).name)
        names.append(layer.get_input(0).name if layer is not None and kind(layer) == "SOFTMAX" else t.name)
    return names


def _cached_images(cache: str | None) -> int:
    import json

    try:
        return int(json.loads(Path(cache).read_text()).get("images", 0)) if cache else 0
    except (OSError, ValueError):
        return 0


def _batched(feeds: Sequence[dict]) -> list[dict]:
    """The feeds as one batch when their shapes allow it (one network run instead of one per image)."""
    import numpy as np

    feeds = list(feeds)
    if len(feeds) < 2 or any(set(f) != set(feeds[0]) for f in feeds):
        return feeds
    try:
        return [{k: np.concatenate([np.asarray(f[k]) for f in feeds]) for k in feeds[0]}]
    except ValueError:  # shapes differ beyond the batch axis
        return feeds


def most_sensitive(sens: dict[str, float], count: int) -> list[str]:
    """The ``count`` tensors with the largest sensitivity (ties: network order of the dict)."""
    return sorted(sens, key=lambda k: -sens[k])[: max(count, 0)]


def for_netdef(
    nd: Netdef,
    cfg: Any,
    weights,
    weights_path: str | None,
    *,
    calib: str | None,
    method: str = "entropy",
    images: int | None = None,
    cache: str | None = None,
    device: str = "cpu",
    fallback: int = 0,
) -> Calibration:
    """Calibration ranges for a netdef: from ``cache`` when it matches the weights and the network, else
    computed and cached. ``fallback`` > 0: that many most sensitive tensors stay in fp16 (the sensitivity is
    computed on the first calibration images once, and cached)."""

    def define(net: Net) -> None:
        define_network(net, nd.define, cfg)

    probe = Net(weights, precision="fp32", name="calibration")
    define(probe)
    points = list(probe.quant_inputs)
    if fallback >= len(points):
        raise NetdefError(
            f"--int8-fallback {fallback}: the network has {len(points)} quantized tensor(s), and keeping "
            f"{fallback} in fp16 would leave none in int8; use at most {len(points) - 1}"
        )
    sha = file_sha256(weights_path) if weights_path else ""
    amax = sens = None
    if cache and Path(cache).exists():
        try:
            amax = load_cache(cache, weights_sha256=sha, method=method)
            missing = [p for p in points if p not in amax]
            if missing:
                raise CalibrationError(
                    f"calibration cache {cache} has no range for {len(missing)} tensor(s) of this network "
                    f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}): recalibrating"
                )
            sens = cached_sensitivity(cache)
            print(f"calibration: {len(amax)} ranges from {cache}", file=sys.stderr)
        except CalibrationError as exc:
            if not calib:
                raise
            print(f"calibration: {exc}", file=sys.stderr)
            amax = None
    paths: list[Path] = []
    if amax is None or (fallback > 0 and (sens is None or any(p not in sens for p in points))):
        if not calib:
            what = "calibration images" if amax is None else "calibration images for the sensitivity pass"
            raise NetdefError(f"--precision int8 needs {what} (--calib DIR) or a matching --calib-cache FILE")
        if nd.app is None:
            raise NetdefError(f"{nd.name} declares no preprocess: it cannot calibrate from images")
        paths = calibration_images(calib, images)

    def feeds(selected: Sequence[Path]):
        import cv2

        for p in selected:
            image = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if image is None:
                raise NetdefError(f"calibration image {p} is not readable")
            yield nd.app.preprocess([image], cfg)[0]

    computed, n_images = False, _cached_images(cache) if amax is not None else len(paths)
    if amax is None:
        amax = collect(define, weights, feeds(paths), method=method, device=device, total=len(paths))
        sens, computed = None, True
    if fallback > 0 and (sens is None or any(p not in sens for p in points)):
        sens = sensitivity(define, weights, amax, list(feeds(paths[:SENSITIVITY_IMAGES])), device=device)
        computed = True
    if cache and computed:
        save_cache(cache, amax, weights_sha256=sha, method=method, images=n_images, sensitivity=sens)
        print(f"calibration: {len(amax)} ranges from {n_images} images cached in {cache}", file=sys.stderr)
    kept = most_sensitive(sens, fallback) if fallback > 0 and sens else []
    if kept:
        print(f"calibration: {len(kept)} most sensitive tensor(s) stay fp16: {', '.join(kept)}", file=sys.stderr)
    return Calibration(amax, kept, sens)
