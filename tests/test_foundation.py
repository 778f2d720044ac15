"""The foundation: backend selection, doctor, and a real build with the (RTX) builder on this machine."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from trtx.build import BatchSpec, BuildError, BuildOptions, build_serialized
from trtx.net import Net, NetdefError
from trtx_base import backend


def _small_convnet(weights, precision="fp32") -> Net:
    net = Net(weights, precision=precision, name="tiny")
    x = net.input("x", (-1, 3, 8, 8))
    y = net.conv(x, "c", 3, padding=1).get_output(0)
    y = net.batchnorm(y, "bn").get_output(0)
    shuffle = net.network.add_shuffle(y)
    shuffle.reshape_dims = (0, -1)
    y = net.linear(shuffle.get_output(0), "fc").get_output(0)
    net.output(y, "logits")
    return net


@pytest.fixture
def weights():
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        "c.weight": f(8, 3, 3, 3),
        "c.bias": f(8),
        "bn.weight": f(8),
        "bn.bias": f(8),
        "bn.running_mean": f(8),
        "bn.running_var": np.abs(f(8)) + 0.1,
        "fc.weight": f(10, 512),
        "fc.bias": f(10),
    }


def test_backend_is_found_and_reports_capabilities():
    be = backend.get()
    assert be.name in ("tensorrt", "tensorrt_rtx")
    assert be.version.count(".") >= 2
    if be.is_rtx:
        assert be.strongly_typed_only and not be.has_plugin_layers and not be.has_nms_runner


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_builder_serializes_engine(weights, precision):
    engine = build_serialized(_small_convnet(weights, precision), BuildOptions(batch=BatchSpec.parse("1:2:4")))
    assert isinstance(engine, bytes) and len(engine) > 10_000


def test_builder_refusal_is_one_clear_error(weights):
    net = Net(weights, name="bad")
    x = net.input("x", (1, 3, 8, 8))
    net.network.mark_output(x)  # marking an input as output makes the builder fail
    with pytest.raises((BuildError, NetdefError)) as err:
        build_serialized(net)
    assert "bad" in str(err.value)


def test_wrong_weight_size_names_key_and_layer(weights):
    weights["c.weight"] = weights["c.weight"].reshape(-1)[:-1]
    with pytest.raises(NetdefError, match=r"'c\.weight'.*layer c"):
        _small_convnet(weights)


@pytest.mark.parametrize("text,expected", [("4", (4, 4, 4)), ("1:4:16", (1, 4, 16))])
def test_batch_spec(text, expected):
    b = BatchSpec.parse(text)
    assert (b.min, b.opt, b.max) == expected


@pytest.mark.parametrize("text", ["0", "4:2:8", "a", "1:2"])
def test_bad_batch_spec(text):
    with pytest.raises(NetdefError, match="--batch"):
        BatchSpec.parse(text)


def _doctor(env_extra):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-m", "trtx", "doctor"], capture_output=True, text=True, env=env)


def test_doctor_names_backend():
    r = _doctor({})
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    be = backend.get()
    assert be.name in first and be.version in first
    for row in ("build engines", "execute engines", "plugin layers", "compile kernels"):
        assert row in r.stdout


def test_doctor_missing_forced_backend_is_one_line():
    missing = next((m for m in backend.ORDER if m != backend.get().module_name and _not_importable(m)), None)
    if missing is None:
        pytest.skip("every backend module is importable here")
    r = _doctor({"TRTX_BACKEND": missing})
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "pip install" in r.stderr


def _not_importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None
