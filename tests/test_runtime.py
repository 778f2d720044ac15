"""trtx.runtime: what can be tested without a TensorRT that executes -- import cost, clear one-line refusals,
array interfaces -- and, on a GPU, device memory (torch + cuda-python only) and, where the backend executes
there, a real engine."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from trtx import runtime
from trtx_base import backend


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    """A real engine (conv + sigmoid, dynamic batch) built by the backend's builder, with its metadata."""
    try:
        backend.get()
    except backend.BackendUnavailable as exc:
        pytest.skip(str(exc))
    from trtx.build import BatchSpec, BuildOptions, build_serialized, metadata, save_engine
    from trtx.net import Net

    rng = np.random.default_rng(0)
    net = Net({"c.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "c.bias": np.ones(4, np.float32)})
    x = net.input("x", (-1, 3, 8, 8))
    y = net.conv(x, "c", 3, padding=1).get_output(0)
    net.output(net.network.add_activation(y, net.trt.ActivationType.SIGMOID).get_output(0), "y")
    options = BuildOptions(batch=BatchSpec.parse("1:2:4"), progress=False)
    path = tmp_path_factory.mktemp("runtime") / "tiny.engine"
    save_engine(path, build_serialized(net, options), metadata(net, options, netdef="tiny"))
    return path, net


def test_import_does_not_pull_torch():
    code = "import sys, trtx.runtime, trtx.letterbox, trtx.nms; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_engine_refuses_in_one_line_where_it_cannot_run(tiny_engine):
    path, _ = tiny_engine
    ok, why = backend.get().can_execute()
    if ok:
        pytest.skip(f"this machine can execute engines: {why}")
    with pytest.raises(runtime.EngineError) as info:
        runtime.Engine(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "cannot execute engines on this machine" in message
    assert why in message


def test_missing_engine_file(tmp_path):
    with pytest.raises(runtime.EngineError, match="no such engine file"):
        runtime.Engine(tmp_path / "nope.engine")


def test_cuda_array_interface_of_host_and_device_objects():
    assert runtime.cuda_array_interface(np.zeros(3)) is None

    class Fake:
        __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (1234, False), "version": 3}

    assert runtime.cuda_array_interface(Fake())["data"][0] == 1234


@pytest.mark.gpu
def test_device_array_roundtrip():
    import torch

    a = runtime.DeviceArray((3, 5), np.float32)
    host = np.arange(15, dtype=np.float32).reshape(3, 5)
    runtime.memcpy_htod(a.ptr, host)
    np.testing.assert_array_equal(a.numpy(), host)
    t = torch.as_tensor(a, device="cuda")  # no copy: the CUDA array interface
    assert t.data_ptr() == a.ptr and torch.equal(t.cpu(), torch.from_numpy(host))


@pytest.mark.gpu
def test_engine_runs_and_matches_reference(tiny_engine):
    """Where the backend executes on this GPU: numpy and torch CUDA inputs, batch 1 and 3, graph replay."""
    ok, why = backend.get().can_execute()
    if not ok:
        pytest.skip(why)
    import torch

    from trtx import reference

    path, net = tiny_engine
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    expected = reference.execute(net.network, {"x": x})["y"].numpy()
    engine = runtime.Engine(path)
    np.testing.assert_allclose(engine.infer({"x": x})["y"], expected, atol=1e-5)
    np.testing.assert_allclose(engine.infer({"x": x[:1]})["y"], expected[:1], atol=1e-5)
    out = engine.run({"x": torch.from_numpy(x).cuda()})["y"]
    engine.synchronize()
    np.testing.assert_allclose(torch.as_tensor(out, device="cuda").cpu().numpy(), expected, atol=1e-5)
    graphed = runtime.Engine(path, cuda_graph=True)
    for _ in range(3):
        np.testing.assert_allclose(graphed.infer({"x": x})["y"], expected, atol=1e-5)
