"""``python -m netdefs.ocr``: the shared CLI on the OCR netdef."""

import sys

from netdefs.ocr import NETDEF
from trtx.cli import main

sys.exit(main(NETDEF))
