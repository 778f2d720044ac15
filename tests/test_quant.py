"""INT8 calibration math: entropy/percentile/minmax thresholds, Q/DQ rounding, the scale cache."""

from __future__ import annotations

import numpy as np
import pytest

from trtx.quant import (
    CalibrationError,
    Calibrator,
    Histogram,
    fake_quantize,
    load_cache,
    save_cache,
    weight_amax,
)


def test_histogram_grows_without_losing_counts():
    h = Histogram(bins=64)
    h.add(np.linspace(-1, 1, 1000))
    h.add(np.array([5.0, -7.5]))
    assert h.counts.sum() == 1002
    assert h.amax == 7.5
    assert h.edges[-1] > 7.5


def test_entropy_clips_rare_outliers_but_keeps_the_bulk():
    rng = np.random.default_rng()
    cal = Calibrator("entropy")
    for _ in range(4):
        x = rng.standard_normal(50_000).astype(np.float32)
        x[:5] = 60.0  # a handful of huge outliers
        cal.observe("t", x)
    amax = cal.amax("t")
    assert 2.5 < amax < 20.0, amax  # far below the outliers, above the bulk of N(0, 1)
    assert Calibrator("minmax", histograms=cal.histograms).amax("t") == pytest.approx(60.0)


def test_entropy_keeps_range_of_uniform_data():
    rng = np.random.default_rng()
    cal = Calibrator("entropy")
    cal.observe("u", rng.uniform(-3, 3, 200_000))
    assert cal.amax("u") > 0.9 * 3


def test_percentile_between_bulk_and_max():
    rng = np.random.default_rng()
    cal = Calibrator("percentile", percentile=99.0)
    x = rng.standard_normal(100_000)
    cal.observe("t", x)
    expected = np.percentile(np.abs(x), 99.0)
    assert cal.amax("t") == pytest.approx(expected, rel=0.01)


def test_unknown_method_and_missing_tensor():
    with pytest.raises(CalibrationError, match="method"):
        Calibrator("mse")
    with pytest.raises(CalibrationError, match="'nope'"):
        Calibrator().amax("nope")


def test_fake_quantize_rounds_half_to_even_and_clamps():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 200.0, -300.0], dtype=np.float32)
    np.testing.assert_array_equal(fake_quantize(x, 1.0), [0, 2, 2, -0, -2, 127, -128])


def test_weight_amax_is_per_output_channel():
    w = np.zeros((3, 2, 3, 3), np.float32)
    w[0, 1, 2, 2], w[1, 0, 0, 0], w[2] = -4.0, 2.0, 0.0
    np.testing.assert_allclose(weight_amax(w), [4.0, 2.0, 1e-8])


def test_cache_round_trip_and_invalidation(tmp_path):
    path = tmp_path / "calib.json"
    save_cache(path, {"a": 1.5, "b": 0.25}, weights_sha256="ab" * 32, method="entropy", images=8)
    assert load_cache(path, weights_sha256="ab" * 32) == {"a": 1.5, "b": 0.25}
    with pytest.raises(CalibrationError, match="other weights"):
        load_cache(path, weights_sha256="cd" * 32)
    with pytest.raises(CalibrationError, match="method"):
        load_cache(path, weights_sha256="ab" * 32, method="minmax")
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="unreadable"):
        load_cache(path, weights_sha256="ab" * 32)
