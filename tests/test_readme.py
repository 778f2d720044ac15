"""The README's quick start runs as written in a fresh clone (issue #17: it used a `python` that is not the venv's
and a `bus.jpg` the repository does not have)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- quick start: tests/test_readme.py runs this block, as written, in a fresh clone -->"


def quick_start() -> str:
    text = (REPO / "README.md").read_text()
    assert MARKER in text, "the README's quick start lost its marker"
    block = re.search(re.escape(MARKER) + r"\n```\n(.*?)\n```", text, re.S)
    assert block is not None
    return block.group(1)


@pytest.mark.slow  # yolov5s at 640: gen_wts, build, check of 200 layers, infer (~60 s on 2 cores)
def test_the_quick_start_runs_as_written_in_a_fresh_clone(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: there is nothing to clone")
    clone = tmp_path / "trtx"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    (clone / ".venv").symlink_to(Path(sys.prefix))  # what `make` creates: the environment these tests run in
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["YOLO_OFFLINE"] = "1"
    script = quick_start()
    assert not re.search(r"(^|[;&|(]\s*)python3?\s", script, re.M), "a bare `python` is not the venv's"
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=clone, env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert re.search(r"^PASSED: 3 outputs and \d+ layers", run.stdout, re.M), run.stdout[-3000:]
    for name in ("yolov5s.wts", "yolov5s.engine", "yolov5s.engine.json", "out/bus.jpg", "out/bus.json"):
        assert (clone / name).stat().st_size > 0, name
    assert (clone / "yolov5s.svg").exists() or (clone / "yolov5s.dot").exists()
    assert "yolov5s  " in run.stdout  # `python -m netdefs list`
    shutil.rmtree(clone)
