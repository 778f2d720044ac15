"""The rtdetr netdef's command line; the netdef is the package netdefs/rtdetr/.

`python netdefs/rtdetr.py build --arch rtdetr-l ...` = `python -m netdefs rtdetr-l build ...`.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from netdefs.rtdetr import NETDEF
    from trtx.cli import main

    sys.exit(main(NETDEF))
