"""INT8 calibration math: activation ranges from histograms, weight ranges per output channel, the cache.

TensorRT 11 has no calibrators: an INT8 network carries explicit Quantize/Dequantize layers whose scales the
builder of the network computes. This module computes them the way TensorRT's calibrators did:

* ``entropy``  — IInt8EntropyCalibrator2's algorithm: a 2048-bin histogram of |x|; for every candidate
  clipping bin i = 128 … 2047 the clipped distribution P (outliers folded into the last bin) is compared with
  its 128-level quantized version Q by KL divergence; the threshold is (i + 0.5) bin widths for the candidate
  with the smallest divergence (:func:`entropy_amax` says which details come from where).
* ``percentile`` — the given percentile of |x| (default 99.99 %).
* ``minmax``   — the largest |x| seen.

Scales are symmetric: ``scale = amax / 127``; int8 values are clamp(round_half_even(x / scale), -128, 127).
Histograms have 2048 bins over a range the first batch sets; a later batch beyond it doubles the range (merging
bin pairs), as TensorRT's calibrators do, so every value lands in a bin without re-reading earlier batches.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from trtx_base.errors import UserError
from trtx_base.files import atomic_write

METHODS = ("entropy", "percentile", "minmax")
QUANT_LEVELS = 128  # |x| levels of a signed 8-bit value
ENTROPY_BINS = 2048  # histogram bins of TensorRT's entropy calibration
CACHE_VERSION = 1


class CalibrationError(UserError, ValueError):
    """Calibration cannot proceed (no data, stale cache, unknown method)."""


@dataclass
class Histogram:
    """``bins`` bins of |x| over [0, width · bins), as TensorRT's calibrators keep them.

    The first batch sets the range to its max. A later batch beyond the range doubles it -- neighbouring bins
    merge pairwise, the upper half starts empty -- as often as needed (TensorRT's developer guide, INT8
    calibration: "the histogram range is increased by a power of two to accommodate the new maximum value"). The
    result depends on the order of the batches, as TensorRT's does.
    """

    bins: int = ENTROPY_BINS
    counts: np.ndarray | None = None
    width: float = 0.0
    amax: float = 0.0

    def __post_init__(self) -> None:
        if self.bins < 2 or self.bins % 2:
            raise CalibrationError(f"histogram bins must be even and at least 2, not {self.bins}")

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
        while batch_max > self.width * self.bins:
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = np.concatenate([merged, np.zeros_like(merged)])
            self.width *= 2
        idx = np.minimum((a / self.width).astype(np.int64), self.bins - 1)
        self.counts += np.bincount(idx, minlength=self.bins)

    @property
    def edges(self) -> np.ndarray:
        return np.arange(len(self.counts) + 1, dtype=np.float64) * self.width


def entropy_divergences(
    counts: np.ndarray, start: int = QUANT_LEVELS, levels: int = QUANT_LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """KL(P || Q) for every candidate ``i`` in ``[start, len(counts))`` (the first ``i`` bins are kept).

    TensorRT's entropy calibration (GTC 2017, "8-bit Inference with TensorRT", entropy calibration pseudocode):
    P = bins 0..i-1 with the outliers (bins i..) added to bin i-1; Q = the same i bins (without outliers) merged
    into ``levels`` (128) levels (bin j -> level floor(levels j / i)), each level's count spread evenly over its
    nonzero bins; both normalized. Computed for all candidates at once from prefix sums (each level is a
    contiguous bin range), O(levels) per candidate instead of O(i). ``counts[0]`` must already be prepared (see
    :func:`entropy_amax`). Returns ``(candidates, divergences)``; a candidate whose P has mass where Q has none
    gets ``inf``.
    """
    c = np.asarray(counts, dtype=np.float64)
    n = len(c)
    if n <= start:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    total = c.sum()
    cs = np.concatenate([[0.0], np.cumsum(c)])
    nz = np.concatenate([[0.0], np.cumsum(c > 0)])
    clogc = np.concatenate([[0.0], np.cumsum(np.where(c > 0, c * np.log(np.where(c > 0, c, 1.0)), 0.0))])
    i = np.arange(start, n, dtype=np.int64)
    k = np.arange(levels + 1, dtype=np.int64)
    first = -((-k[None, :] * i[:, None]) // levels)  # first bin of level k: ceil(k i / levels)
    mass = cs[first[:, 1:]] - cs[first[:, :-1]]
    count = nz[first[:, 1:]] - nz[first[:, :-1]]
    log_q = np.log(np.where(mass > 0, mass, 1.0) / np.where(count > 0, count, 1.0))  # Q of a nonzero bin (unnormalized)
    sum_clogq = (mass * log_q).sum(axis=1)  # sum over bins j < i with c_j > 0 of c_j log Q_j
    last = i - 1
    c_last = c[last]
    log_q_last = log_q[np.arange(len(i)), (last * levels) // i]
    kept = cs[last]  # bins j < i-1, whose P is their own count
    s, sq = total, cs[i]  # normalizers of P and Q
    with np.errstate(divide="ignore", invalid="ignore"):
        body = (clogc[last] - kept * np.log(s) - (sum_clogq - c_last * log_q_last) + kept * np.log(sq)) / s
        p_last = c_last + (total - cs[i])
        tail = np.where(
            p_last > 0,
            np.where(c_last > 0, p_last / s * (np.log(p_last / s) - (log_q_last - np.log(sq))), np.inf),
            0.0,
        )
    return i, body + tail


def entropy_amax(hist: Histogram, start_bin: int = QUANT_LEVELS) -> float:
    """The clipping threshold of TensorRT's entropy calibration (IInt8EntropyCalibrator2's algorithm).

    Over the histogram's 2048 bins, candidates ``i`` = 128 … 2047; the threshold is ``(m + 0.5) · bin width`` for
    the candidate ``m`` with the smallest divergence (the last one on a tie), at most the max seen. One detail the
    pseudocode leaves open is taken from NVIDIA's own implementation of the same algorithm (pytorch-quantization,
    ``calib/histogram.py``): bin 0 gets bin 1's count, so the exact zeros of ReLU outputs (often half of all
    values) do not pin the threshold to the smallest candidates. A tensor seen with fewer values than bins keeps
    its max.
    """
    if hist.counts is None or hist.amax <= 0 or hist.counts.sum() < len(hist.counts):
        return hist.amax  # fewer values than bins (a pooled vector of a few images): no distribution to fit
    counts = hist.counts.astype(np.float64)
    counts[0] = counts[1]
    candidates, divergence = entropy_divergences(counts, start_bin)
    if not len(candidates) or not np.isfinite(divergence).any():
        return hist.amax
    m = candidates[len(divergence) - 1 - int(np.argmin(divergence[::-1]))]
    return float(min((m + 0.5) * hist.width, hist.amax))


def percentile_amax(hist: Histogram, percentile: float = 99.99) -> float:
    cdf = np.cumsum(hist.counts) / hist.counts.sum()
    i = int(np.searchsorted(cdf, percentile / 100.0))
    return float(min((i + 1) * hist.width, hist.amax))


@dataclass
class Calibrator:
    """Collects per-tensor histograms and turns them into amax values by the chosen method."""

    method: str = "entropy"
    percentile: float = 99.99
    bins: int = ENTROPY_BINS
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
    path: str | os.PathLike,
    amaxes: dict[str, float],
    *,
    weights_sha256: str,
    method: str,
    images: int,
    sensitivity: dict[str, float] | None = None,
) -> None:
    """Write the cache: amax by tensor name, and (when computed) each tensor's int8 sensitivity."""
    doc = {
        "version": CACHE_VERSION,
        "weights_sha256": weights_sha256,
        "method": method,
        "images": images,
        "amax": {k: float(v) for k, v in sorted(amaxes.items())},
    }
    if sensitivity is not None:
        doc["sensitivity"] = {k: float(v) for k, v in sorted(sensitivity.items())}
    atomic_write(path, json.dumps(doc, indent=1) + "\n")


def cached_sensitivity(path: str | os.PathLike) -> dict[str, float] | None:
    """The sensitivity a cache holds (None when it has none); call after :func:`load_cache` accepted it."""
    try:
        value = json.loads(open(path).read()).get("sensitivity")
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(value, dict) or not all(_is_number(v) for v in value.values()):
        return None  # none, or not numbers: the sensitivity pass runs again
    return {k: float(v) for k, v in value.items()}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_cache(path: str | os.PathLike, *, weights_sha256: str, method: str | None = None) -> dict[str, float]:
    """The cached amax values; raises CalibrationError (with the reason) when the cache does not apply."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise CalibrationError(f"calibration cache {path}: unreadable ({exc})") from None
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION or not isinstance(doc.get("amax"), dict):
        version = doc.get("version") if isinstance(doc, dict) else None
        raise CalibrationError(f"calibration cache {path}: not a trtx cache (version {version})")
    for name, value in doc["amax"].items():
        if not _is_number(value) or value <= 0:
            raise CalibrationError(
                f"calibration cache {path}: tensor {name!r} has amax {value!r}; a range must be a positive number "
                "(delete the cache to recalibrate)"
            )
    if doc.get("weights_sha256") != weights_sha256:
        raise CalibrationError(
            f"calibration cache {path} was computed for other weights (sha256 {str(doc.get('weights_sha256'))[:12]}…, "
            f"these are {weights_sha256[:12]}…): recalibrating"
        )
    if method is not None and doc.get("method") != method:
        raise CalibrationError(f"calibration cache {path} used method {doc.get('method')}, not {method}: recalibrating")
    return {k: float(v) for k, v in doc["amax"].items()}
