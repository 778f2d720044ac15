"""What every trtx command line shares: a user's mistake is one line on stderr and exit status 2.

* :class:`ArgumentParser` prints a bad flag as ``PROG: error: MESSAGE (PROG --help)``, one line, exit 2 (argparse
  prints its usage block first).
* :func:`run` calls a ``main``: a :class:`UserError` becomes ``error: MESSAGE``, exit 2 (so does an allocation
  that cannot be made: an absurd ``--batch``); Ctrl-C and SIGTERM end it with exit 130/143 after the ``finally``
  blocks ran (no temporary file is left behind); anything else is a bug in trtx and keeps its traceback.
* argument types that refuse what makes no sense (``--batch 0``, ``--workspace -5``, ``--batch 1,x``).

Exit status: 0 done (check: passed), 1 check failed (the network differs from PyTorch), 2 usage or input error.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable

from trtx_base.errors import UserError

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (subparsers made by it are of this class too)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} ({self.prog} --help)\n")


def run(main: Callable[[], int]) -> int:
    """``main()``'s exit status; user errors become one line (``error: ...``) and exit status 2."""
    previous = _terminate_as_exit()
    try:
        return main()
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError as exc:  # an absurd --batch or input size: numpy/torch refuse the allocation at once
        detail = f" ({one_line(exc)})" if str(exc) else ""
        print(f"error: out of memory{detail}: ask for a smaller batch or input size", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def one_line(exc: BaseException) -> str:
    """The message on one line: newlines (a file name can hold one) and runs of white space become one space."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _terminate_as_exit():
    """SIGTERM (``kill``, a CI timeout) raises SystemExit(143) so the atomic writes in progress remove their
    temporary files; returns the previous handler (None where no handler can be set: not the main thread)."""

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        return None


# ---- argument types ------------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    """An integer >= 1 (``--batch``, ``--iters``, ``--calib-images``)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (``--warmup``, ``--seed``, ``--int8-fallback``)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 0")
    return value


def non_negative_float(text: str) -> float:
    """A finite float >= 0 (``--atol``, ``--rtol``, thresholds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def unit_float(text: str) -> float:
    """A number in [0, 1] (``--conf``, ``--iou``)."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} must lie in [0, 1]")
    return value


def positive_int_list(text: str) -> tuple[int, ...]:
    """``"1,4,16"``: comma-separated integers >= 1 (``bench --batch``)."""
    items = [t.strip() for t in str(text).split(",")]
    return tuple(positive_int(t) for t in items)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
