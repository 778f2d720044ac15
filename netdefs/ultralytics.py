"""Runs the ultralytics netdef (the package netdefs/ultralytics/) as a script: netdefs/ultralytics.py build ..."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable, and let `import ultralytics`
    _here = Path(__file__).resolve().parent  # find the pip package, not the netdefs/ultralytics/ folder
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from netdefs.ultralytics import NETDEF  # noqa: E402
from trtx.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(NETDEF))
