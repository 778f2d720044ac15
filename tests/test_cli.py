"""The shared netdef CLI on LeNet-5: build (fp32/fp16/int8), check, inspect, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import wts
from netdefs import lenet
from netdefs import sources as model_sources
from trtx import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "lenet.wts"
    wts.save(model_sources.state_dict_for_wts(model_sources.build_model("netdef:lenet", seed=1), "netdef:lenet"), path)
    return path


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_writes_engine_and_metadata(weights, tmp_path, precision):
    engine = tmp_path / "lenet.engine"
    assert (
        cli.main(
            lenet.NETDEF, ["build", "-w", str(weights), "-o", str(engine), "--precision", precision, "--batch", "1:2:4"]
        )
        == 0
    )
    meta = json.loads((tmp_path / "lenet.engine.json").read_text())
    assert engine.stat().st_size == meta["engine_bytes"] > 10_000
    assert meta["precision"] == precision and meta["netdef"] == "lenet" and meta["num_classes"] == 10
    assert meta["batch"] == {"min": 1, "opt": 2, "max": 4}
    assert meta["inputs"][0]["name"] == "data" and meta["outputs"][0]["name"] == "prob"
    assert meta["weights"]["sha256"] and meta["unused_weights"] == []


def test_int8_build_calibrates_from_images(weights, tmp_path, make_calibration_folder):
    calib = make_calibration_folder(tmp_path)
    cache = tmp_path / "calib.json"
    engine = tmp_path / "int8.engine"
    args = [
        "build",
        "-w",
        str(weights),
        "-o",
        str(engine),
        "--precision",
        "int8",
        "--calib",
        str(calib),
        "--calib-cache",
        str(cache),
    ]
    assert cli.main(lenet.NETDEF, args) == 0
    assert set(json.loads(cache.read_text())["amax"]) == {"data", "pool1", "flatten", "relu3", "relu4"}
    assert json.loads((tmp_path / "int8.engine.json").read_text())["precision"] == "int8"


def test_check_passes_and_reports_json(weights, capsys):
    assert cli.main(lenet.NETDEF, ["check", "-w", str(weights), "--json", "--batch", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and doc["first_divergent"] is None and len(doc["layers"]) >= 10


def _run(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "netdefs" / "lenet.py"), *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["build", "-w", "/nonexistent.wts"], "does not exist"),
        (["build", "-w", "{w}", "--batch", "4:2"], "--batch"),
        (["build", "-w", "{w}", "--precision", "int8"], "--calib"),
        (["build", "-w", "{missing}"], "fc2.weight"),  # a netdef reading a key the file lacks
        (["check", "-w", "{corrupt}"], "line 2"),  # a .wts defect: file, line and tensor
    ],
)
def test_user_errors_are_one_line(weights, tmp_path, args, message):
    missing, corrupt = tmp_path / "missing.wts", tmp_path / "corrupt.wts"
    wts.save({k: v for k, v in wts.load(weights).items() if k != "fc2.weight"}, missing)
    lines = weights.read_text().splitlines(keepends=True)
    corrupt.write_text(lines[0] + lines[1].replace(" 3", " x3", 1) + "".join(lines[2:]))
    r = _run(*[a.format(w=weights, missing=missing, corrupt=corrupt) for a in args])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:") or ": error: " in line]
    assert len(lines) == 1 and message in lines[0]


def test_help_explains_every_option():
    r = _run("build", "--help")
    assert r.returncode == 0
    for option in ("--weights", "--output", "--batch", "--precision", "--io-dtype", "--calib", "--calib-cache"):
        assert option in r.stdout
