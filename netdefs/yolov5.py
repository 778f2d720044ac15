"""Runs the yolov5 netdef (the package netdefs/yolov5/) as a script: ``python netdefs/yolov5.py build ...``."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable, and let `import yolov5`
    _here = Path(__file__).resolve().parent  # find the yolov5 pip package, not the netdefs/yolov5/ folder
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from netdefs.yolov5 import NETDEF  # noqa: E402
from trtx.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(NETDEF))
