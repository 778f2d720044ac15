"""Shared fixtures and the `gpu` marker: GPU tests are skipped where no CUDA device is present."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

# model sources must never reach for the network or write into $HOME
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="trtx-yolo-cfg-"))


@pytest.fixture(scope="session")
def make_calibration_folder() -> Callable[[Path], Path]:
    """``make(parent)`` -> ``parent/calib`` holding ultralytics' two photos (bus.jpg, zidane.jpg): INT8
    calibration images for tests (session-scoped so module fixtures can use it too)."""
    from trtx import sources

    def make(parent: Path) -> Path:
        folder = parent / "calib"
        folder.mkdir()
        for name in ("bus.jpg", "zidane.jpg"):
            shutil.copy(sources.sample_images() / name, folder / name)
        return folder

    return make


@pytest.fixture(scope="session")
def make_tiny_engine() -> Callable[..., Path]:
    """``make(path, batch="1:2:4", gpu_archs=())`` -> ``path``: a conv + ReLU network (input ``x`` [B, 3, 16, 16],
    output ``y``) built by the real builder and saved with its metadata, for tests about engines, not models."""
    import numpy as np

    from trtx.build import BatchSpec, BuildOptions, build_serialized, metadata, save_engine
    from trtx.net import Net

    def make(path: Path, batch: str = "1:2:4", gpu_archs: tuple[str, ...] = ()) -> Path:
        rng = np.random.default_rng(0)
        net = Net({"c.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "c.bias": np.ones(8, np.float32)},
                  name="tiny")  # fmt: skip
        y = net.conv(net.input("x", (-1, 3, 16, 16)), "c", 3, padding=1).get_output(0)
        net.output(net.network.add_activation(y, net.trt.ActivationType.RELU).get_output(0), "y")
        options = BuildOptions(batch=BatchSpec.parse(batch), gpu_archs=gpu_archs, progress=False)
        save_engine(path, build_serialized(net, options), metadata(net, options, netdef="tiny"))
        return path

    return make


@pytest.fixture(scope="module")
def ultralytics_weights(tmp_path_factory):
    """{spec: path} of ``gen_wts.py --model ultralytics:<spec> --random-init``, written when a test of the module
    first asks for a spec, removed after the module."""
    import gen_wts

    folder = tmp_path_factory.mktemp("ultralytics_wts")

    class Lazy(dict):
        def __missing__(self, spec):
            path = folder / f"{spec}.wts"
            assert gen_wts.main(["-m", f"ultralytics:{spec}", "--random-init", "-o", str(path), "-q"]) == 0
            self[spec] = str(path)
            return self[spec]

    yield Lazy()
    shutil.rmtree(folder)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
