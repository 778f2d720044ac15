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
