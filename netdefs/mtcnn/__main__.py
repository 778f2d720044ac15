"""``python -m netdefs.mtcnn``: the shared CLI on the MTCNN netdef."""

import sys

from netdefs.mtcnn import NETDEF
from trtx.cli import main

sys.exit(main(NETDEF))
