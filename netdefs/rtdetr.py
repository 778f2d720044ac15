"""The rtdetr netdef's command line; the netdef is the package netdefs/rtdetr/.

`python netdefs/rtdetr.py build --arch rtdetr-l ...` = `python -m netdefs rtdetr-l build ...`.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    _here = Path(__file__).resolve().parent  # not on the path: `import ultralytics` must find the pip package,
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]  # not netdefs/ultralytics/
    sys.path.insert(0, str(_here.parent))
    from netdefs.rtdetr import NETDEF
    from trtx.cli import main

    sys.exit(main(NETDEF))
