"""The mtcnn netdef's command line; the netdef is the package netdefs/mtcnn/.

`python netdefs/mtcnn.py build ...` = `python -m netdefs mtcnn build ...`.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from netdefs.mtcnn import NETDEF
    from trtx.cli import main

    sys.exit(main(NETDEF))
