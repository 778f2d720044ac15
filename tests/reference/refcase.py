"""Small networks for reference-executor conformance tests: build with the real builder, run the reference.

Every case network is handed to the real TensorRT builder (``trtx.build.build_serialized``) before the reference
runs it, so each test also proves TensorRT accepts the network it checks. Every case runs through the compiled
plan twice (the first run for an input shape, then the folded/replayed one; a third call replays the CUDA graph)
and through the plain executor (``optimize=False``): on the CPU all of them must agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trtx import reference
from trtx.build import BatchSpec, BuildOptions, build_serialized
from trtx.net import Net, trt_dtype
from trtx_base import backend

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


class Case:
    """A network under test: ``input``/``const``/``output`` to define it, ``run`` to build + execute."""

    def __init__(self, name: str = "case") -> None:
        self.net = Net({}, name=name)
        self.nw = self.net.network
        self.trt = backend.trt

    def input(self, name: str, shape, dtype=np.float32):
        return self.nw.add_input(name, trt_dtype(dtype), tuple(shape))

    def keep(self, array) -> np.ndarray:
        """Keep ``array`` alive until the build (0-D stays 0-D, unlike np.ascontiguousarray)."""
        array = np.array(array, copy=True, order="C")
        self.net._keep.append(array)
        return array

    def const(self, array, name: str | None = None):
        array = self.keep(array)
        layer = self.nw.add_constant(array.shape, self.trt.Weights(array))
        if name:
            layer.name = name
            layer.get_output(0).name = name
        return layer.get_output(0)

    def weights(self, array):
        return self.trt.Weights(self.keep(array))

    def output(self, tensor_or_layer, name: str = "y"):
        t = tensor_or_layer.get_output(0) if hasattr(tensor_or_layer, "get_output") else tensor_or_layer
        t.name = name
        self.nw.mark_output(t)
        return t

    def build(self, feeds) -> bytes:
        batch = 1
        for i in range(self.nw.num_inputs):
            t = self.nw.get_input(i)
            if -1 in tuple(t.shape):
                batch = max(batch, int(np.asarray(feeds[t.name]).shape[0]))
        engine = build_serialized(self.net, BuildOptions(batch=BatchSpec(1, batch, max(batch, 4)), progress=False))
        assert len(engine) > 0
        return engine

    def run(self, feeds, device: str = "cpu", keep=None, build: bool = True) -> dict[str, torch.Tensor]:
        # The builder's acceptance is proven by the cpu run of the same case; on a CUDA machine TensorRT-RTX's
        # builder targets the local GPU, which it may not support (it refuses sm_90).
        if build and device == "cpu":
            self.build(feeds)
        plan = reference.compile(self.nw, device, keep=keep)
        out = plan(feeds)
        runs = [plan(feeds), reference.compile(self.nw, device, keep=keep, optimize=False)(feeds)]
        if device != "cpu":
            runs.append(plan(feeds))  # the CUDA graph's replay
        for other in runs:
            assert list(other) == list(out)
            for name, value in out.items():
                same(other[name], value, exact=device == "cpu", what=name)
        return out


def same(actual: torch.Tensor, expected: torch.Tensor, exact: bool = True, what: str = "") -> None:
    """Bit-identical (``exact``: NaNs and signed zeros included), else within fp32 rounding."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (what, actual.dtype, expected.dtype)
    if exact:
        a, b = actual.reshape(-1).contiguous().cpu(), expected.reshape(-1).contiguous().cpu()
        if a.numel() and a.dtype.itemsize:
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)), f"{what}: not bit-identical"
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, equal_nan=True, msg=what)


def rand(*shape, dtype=np.float32, low=-2.0, high=2.0) -> np.ndarray:
    """Fresh random values each run (no fixed seed)."""
    return np.random.default_rng().uniform(low, high, size=shape).astype(dtype)


def t(array, device: str = "cpu", dtype=None) -> torch.Tensor:
    out = torch.as_tensor(np.asarray(array), device=device)
    return out.to(dtype) if dtype is not None else out


def assert_close(actual: torch.Tensor, expected, rtol: float = 1e-5, atol: float | None = None) -> None:
    """fp32 comparison: ``atol`` defaults to 1e-6 of the expected output's scale."""
    expected = torch.as_tensor(expected).to(actual.device)
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    if atol is None:
        atol = 1e-6 * max(float(expected.abs().max()) if expected.numel() else 0.0, 1.0)
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol)
