"""The larger YOLOv8 / YOLO11 scales and reduced precisions (marker ``slow``): m, l and x built by TensorRT-RTX
and checked against the ultralytics model module by module; yolo11n at int8 with --int8-fallback (its
sensitivity pass runs the int8 network once per quantized tensor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gen_wts
from netdefs.ultralytics import NETDEF
from trtx import cli, sources

pytestmark = pytest.mark.slow
BUS = str(sources.sample_images() / "bus.jpg")


def _weights(spec: str, folder: Path) -> str:
    path = folder / f"{spec}.wts"
    assert gen_wts.main(["-m", f"ultralytics:{spec}", "--random-init", "-o", str(path), "-q"]) == 0
    return str(path)


@pytest.mark.parametrize("spec", [f"{f}{s}{t}" for f in ("yolov8", "yolo11") for s in "mlx" for t in ("", "-seg")])
def test_large_scales_build_and_check(spec, tmp_path, capsys):
    """m/l/x (YOLO11 m/l/x: every C3k2 holds C3k blocks, 512 max channels): built, then checked at 320."""
    w = _weights(spec, tmp_path)
    engine = tmp_path / f"{spec}.engine"
    assert cli.main(NETDEF, ["build", "-w", w, "-o", str(engine), "--imgsz", "320"]) == 0
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["ultralytics"]["scale"] == spec[len("yolov8") if spec.startswith("yolov8") else len("yolo11")]
    capsys.readouterr()
    rc = cli.main(NETDEF, ["check", "-w", w, "--image", BUS, "--imgsz", "320", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["passed"], json.dumps(result)[-3000:]
    compared = [r for r in result["layers"] if r["max_rel_err"] is not None]
    worst = max(compared, key=lambda r: r["max_rel_err"])
    print(f"\nRESULT {spec}: outputs max rel err {result['max_rel_err']:.2e}; {len(compared)} layers, max rel err "
          f"{worst['max_rel_err']:.2e} ({worst['name']})")  # fmt: skip
    assert result["max_rel_err"] <= 1e-4 and len(compared) > 250


def test_yolo11n_int8_with_fallback_builds(tmp_path, capsys, make_calibration_folder):
    w = _weights("yolo11n", tmp_path)
    engine = tmp_path / "yolo11n-int8.engine"
    argv = ["build", "-w", w, "-o", str(engine), "--imgsz", "128", "--precision", "int8", "--int8-fallback", "4",
            "--calib", str(make_calibration_folder(tmp_path))]  # fmt: skip
    assert cli.main(NETDEF, argv) == 0, capsys.readouterr().err
    meta = json.loads(Path(f"{engine}.json").read_text())
    assert meta["precision"] == "int8" and len(meta["int8"]["fp16_fallback"]) == 4
    assert meta["int8"]["quantized_tensors"] > 60
