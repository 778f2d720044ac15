"""INT8 calibration math: activation ranges from histograms, weight ranges per output channel, the cache.

TensorRT 11 has no calibrators: an INT8 network carries explicit Quantize/Dequantize layers whose scales the
builder of the network computes. This module computes them the way TensorRT's calibrators did:

* ``entropy``  — IInt8EntropyCalibrator2's algorithm: a histogram of |x|; for every candidate clipping bin
  the clipped distribution P (outliers folded into the last bin) is compared with its 128-level quantized
  version Q by KL divergence; the threshold is the edge of the candidate with the smallest divergence.
* ``percentile`` — the given percentile of |x| (default 99.99 %).
* ``minmax``   — the largest |x| seen.

Scales are symmetric: ``scale = amax / 127``; int8 values are clamp(round_half_even(x / scale), -128, 127).
Histograms keep a fixed bin width chosen from the first batch and double their number of bins when a later
batch exceeds the range, so every value lands in a bin without re-reading earlier batches.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from trtx.files import atomic_write

METHODS = ("entropy", "percentile", "minmax")
QUANT_LEVELS = 128  # |x| levels of a signed 8-bit value
CACHE_VERSION = 1


class CalibrationError(ValueError):
    """Calibration cannot proceed (no data, stale cache, unknown method)."""


@dataclass
class Histogram:
    """Histogram of |x| with a fixed bin width; grows by doubling its bin count."""

    bins: int = 2048
    counts: np.ndarray | None = None
    width: float = 0.0
    amax: float = 0.0

    def add(self, x: np.ndarray) -> None:
        a = np.abs(np.asarray(x, dtype=np.float32).reshape(-1))
        if a.size == 0:
            return
        if not np.all(np.isfinite(a)):
            raise CalibrationError("non-finite activation values during calibration")
        batch_max = float(a.max())
        self.amax = max(self.amax, batch_max)
        if self.counts is None:
            self.width = (batch_max or 1e-8) / self.bins
            self.counts = np.zeros(self.bins, dtype=np.int64)
        while batch_max >= self.width * len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros_like(self.counts)])
        idx = np.minimum((a / self.width).astype(np.int64), len(self.counts) - 1)
        self.counts += np.bincount(idx, minlength=len(self.counts))

    @property
    def edges(self) -> np.ndarray:
        return np.arange(len(self.counts) + 1, dtype=np.float64) * self.width


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    if np.any(q[mask] == 0):
        return float("inf")
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def entropy_amax(hist: Histogram, start_bin: int = QUANT_LEVELS) -> float:
    """The clipping threshold that minimizes KL(P || Q) over candidate bins (TensorRT entropy calibration)."""
    counts = hist.counts.astype(np.float64)
    used = int(np.nonzero(counts)[0].max()) + 1 if counts.any() else 0
    if used <= start_bin:  # fewer distinct magnitudes than int8 levels: no clipping helps
        return hist.amax
    best_i, best_div = used, float("inf")
    for i in range(start_bin, used + 1):
        p = counts[:i].copy()
        p[i - 1] += counts[i:].sum()
        # Q: merge the first i bins into 128 levels, spread each level's mass evenly over its nonzero bins
        level = (np.arange(i) * QUANT_LEVELS) // i
        nonzero = counts[:i] > 0
        level_mass = np.bincount(level, weights=counts[:i], minlength=QUANT_LEVELS)
        level_nonzero = np.bincount(level, weights=nonzero.astype(np.float64), minlength=QUANT_LEVELS)
        q = np.where(nonzero, level_mass[level] / np.maximum(level_nonzero[level], 1), 0.0)
        div = _kl(p / p.sum(), q / q.sum()) if q.sum() > 0 else float("inf")
        if div <= best_div:  # the last minimum, as TensorRT's calibrator picks
            best_i, best_div = i, div
    return float(min(best_i * hist.width, hist.amax))


def percentile_amax(hist: Histogram, percentile: float = 99.99) -> float:
    cdf = np.cumsum(hist.counts) / hist.counts.sum()
    i = int(np.searchsorted(cdf, percentile / 100.0))
    return float(min((i + 1) * hist.width, hist.amax))


@dataclass
class Calibrator:
    """Collects per-tensor histograms and turns them into amax values by the chosen method."""

    method: str = "entropy"
    percentile: float = 99.99
    bins: int = 2048
    histograms: dict[str, Histogram] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"calibration method {self.method!r} is not one of {', '.join(METHODS)}")

    def observe(self, name: str, values) -> None:
        if hasattr(values, "detach"):  # a torch tensor
            values = values.detach().float().cpu().numpy()
        self.histograms.setdefault(name, Histogram(self.bins)).add(values)

    def amax(self, name: str) -> float:
        hist = self.histograms.get(name)
        if hist is None or hist.counts is None:
            raise CalibrationError(f"no calibration data for tensor {name!r}")
        if self.method == "minmax":
            value = hist.amax
        elif self.method == "percentile":
            value = percentile_amax(hist, self.percentile)
        else:
            value = entropy_amax(hist)
        return max(value, 1e-8)

    def amaxes(self) -> dict[str, float]:
        return {name: self.amax(name) for name in sorted(self.histograms)}


def weight_amax(w: np.ndarray, axis: int = 0) -> np.ndarray:
    """Per-output-channel max |w| along ``axis`` (the channel axis is kept), never zero."""
    w = np.abs(np.asarray(w, dtype=np.float32))
    reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
    return np.maximum(w.max(axis=reduce_axes), 1e-8)


def fake_quantize(x: np.ndarray, scale: np.ndarray | float, axis: int | None = None) -> np.ndarray:
    """Q then DQ as TensorRT defines it: clamp(round_half_even(x / scale), -128, 127) · scale."""
    x = np.asarray(x, dtype=np.float32)
    s = np.asarray(scale, dtype=np.float32)
    if axis is not None and s.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    return np.clip(np.rint(x / s), -128, 127) * s


# ---- cache ---------------------------------------------------------------------------------------------
def save_cache(
    path: str | os.PathLike, amaxes: dict[str, float], *, weights_sha256: str, method: str, images: int
) -> None:
    doc = {
        "version": CACHE_VERSION,
        "weights_sha256": weights_sha256,
        "method": method,
        "images": images,
        "amax": {k: float(v) for k, v in sorted(amaxes.items())},
    }
    atomic_write(path, json.dumps(doc, indent=1) + "\n")


def load_cache(path: str | os.PathLike, *, weights_sha256: str, method: str | None = None) -> dict[str, float]:
    """The cached amax values; raises CalibrationError (with the reason) when the cache does not apply."""
    try:
        doc = json.loads(open(path).read())
    except (OSError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"calibration cache {path}: unreadable ({exc})") from None
    if doc.get("version") != CACHE_VERSION or not isinstance(doc.get("amax"), dict):
        raise CalibrationError(f"calibration cache {path}: not a trtx cache (version {doc.get('version')})")
    if doc.get("weights_sha256") != weights_sha256:
        raise CalibrationError(
            f"calibration cache {path} was computed for other weights (sha256 {str(doc.get('weights_sha256'))[:12]}…, "
            f"these are {weights_sha256[:12]}…): recalibrating"
        )
    if method is not None and doc.get("method") != method:
        raise CalibrationError(f"calibration cache {path} used method {doc.get('method')}, not {method}: recalibrating")
    return {k: float(v) for k, v in doc["amax"].items()}
