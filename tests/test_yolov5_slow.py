"""The large YOLOv5 variants and the full 640 input (marker ``slow``; recorded in bench/results/yolov5_cpu.md):
m/l/x and n6..x6 built by the real builder and checked against PyTorch on bus.jpg; yolov5s at 640 in all three
tasks; ``make demo`` within its five minutes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import gen_wts
from netdefs import yolov5
from trtx import cli, sources

pytestmark = pytest.mark.slow
ASSETS = sources.sample_images()
BUS = str(ASSETS / "bus.jpg")


def _build_and_check(spec: str, tmp_path: Path, capsys, imgsz: str, build_imgsz: str | None = None) -> dict:
    w = tmp_path / f"{spec}.wts"
    assert gen_wts.main(["-m", f"yolov5:{spec}", "--random-init", "-o", str(w), "-q"]) == 0
    engine = tmp_path / f"{spec}.engine"
    assert cli.main(yolov5.NETDEF, ["build", "-w", str(w), "-o", str(engine), "--imgsz", build_imgsz or imgsz]) == 0
    capsys.readouterr()
    assert engine.stat().st_size > 1_000_000
    rc = cli.main(
        yolov5.NETDEF, ["check", "-w", str(w), "--image", BUS, "--imgsz", imgsz, "--conf", "0.0001", "--json"]
    )
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["passed"], json.dumps(result)[-3000:]
    assert result["max_rel_err"] <= 1e-4
    compared = [r for r in result["layers"] if r["max_rel_err"] is not None]
    worst = max(compared, key=lambda r: r["max_rel_err"])
    extras = "; ".join(f"{e['name']}: {e['message']}" for e in result["extras"])
    print(f"\nRESULT {spec} build {build_imgsz or imgsz} check {imgsz}: outputs max rel err "
          f"{result['max_rel_err']:.2e}; {len(compared)} layers, max rel err {worst['max_rel_err']:.2e} "
          f"({worst['name']}); {extras}")  # fmt: skip
    return result


@pytest.mark.parametrize("spec", ["yolov5m", "yolov5l", "yolov5x"])
def test_p5_variants_build_and_check(spec, tmp_path, capsys):
    result = _build_and_check(spec, tmp_path, capsys, "640")
    head = [r for r in result["layers"] if r["name"].startswith("model.24.m.")]
    assert len(head) == 3 and all(r["passed"] for r in head)


@pytest.mark.parametrize("spec", ["yolov5n6", "yolov5s6", "yolov5m6", "yolov5l6", "yolov5x6"])
def test_p6_variants_build_1280_and_check(spec, tmp_path, capsys):
    """P6: four output levels (model.33.m.0-3), built at their default 1280, checked at 640."""
    result = _build_and_check(spec, tmp_path, capsys, "640", build_imgsz="1280")
    head = [r for r in result["layers"] if r["name"].startswith("model.33.m.")]
    assert len(head) == 4 and all(r["passed"] for r in head)


@pytest.mark.parametrize("spec", ["yolov5s", "yolov5s-seg", "yolov5s-cls"])
def test_yolov5s_at_full_size(spec, tmp_path, capsys):
    _build_and_check(spec, tmp_path, capsys, "224" if spec.endswith("-cls") else "640")


def test_make_demo_under_five_minutes(tmp_path, capsys):
    import demo

    t0 = time.perf_counter()
    assert demo.main(["--out", str(tmp_path)]) == 0
    elapsed = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "check PASSED" in out and elapsed < 300, f"{elapsed:.0f} s"
    for name in ("yolov5s.wts", "yolov5s.engine", "yolov5s.engine.json", "yolov5s.svg", "infer/bus.jpg",
                 "infer/bus.json"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    print(f"make demo: {elapsed:.0f} s")
