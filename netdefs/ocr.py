"""The ocr netdef's command line; the netdef is the package netdefs/ocr/.

`python netdefs/ocr.py build ...` = `python -m netdefs ocr build ...`.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from netdefs.ocr import NETDEF
    from trtx.cli import main

    sys.exit(main(NETDEF))
