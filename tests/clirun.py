"""Every trtx command line, called in-process (``main(argv)``), and what a user sees: exit status, stdout, stderr.

``python tests/clirun.py < calls.json`` runs a JSON list of ``[entry, argv]`` in one process and prints the
results as JSON: the tests that need a restricted process (no permission to read, a read-only or full disk) start
one interpreter for all their calls instead of one per call.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: how argparse and trtx_base.cli.run print an error: the only error line a command may print
ERROR_LINE = re.compile(r"^(error: |\S.*: error: )")


@dataclass
class Result:
    rc: int
    out: str
    err: str
    #: a Python exception that escaped main(): a traceback the user would have seen
    crash: str | None = None

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if ERROR_LINE.match(line)]

    def one_line_error(self) -> str:
        """The error line; asserts there is exactly one, it is the last line of stderr and nothing crashed."""
        assert self.crash is None, self.crash
        assert "Traceback" not in self.err, self.err
        lines = self.error_lines()
        assert len(lines) == 1 and self.err.rstrip("\n").splitlines()[-1] == lines[0], self.err
        return lines[0]


def entries() -> dict[str, Callable[[list[str]], int]]:
    """Entry name -> main(argv): gen_wts.py, python -m netdefs / plugins / trtx, and each netdef's own script."""
    import gen_wts
    import netdefs
    from netdefs.__main__ import main as netdefs_main
    from plugins.__main__ import main as plugins_main
    from trtx import cli
    from trtx.__main__ import main as trtx_main

    found: dict[str, Callable[[list[str]], int]] = {
        "gen_wts": gen_wts.main,
        "netdefs": netdefs_main,
        "plugins": plugins_main,
        "trtx": trtx_main,
    }
    for family in netdefs.FAMILIES:
        found[family] = lambda argv, family=family: cli.main(netdefs.load(family), argv)
    return found


def call(entry: str, argv: Sequence[str], cwd: str | os.PathLike | None = None) -> Result:
    """Run ``entry``'s main(argv) in this process, as a user would run it (stdin empty, cwd as given)."""
    out, err = io.StringIO(), io.StringIO()
    crash = None
    previous = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = entries()[entry]([str(a) for a in argv])
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # noqa: BLE001 - what the user would see as a traceback
                crash = traceback.format_exc()
                rc = 1
    finally:
        os.chdir(previous)
    return Result(int(rc if rc is not None else 0), out.getvalue(), err.getvalue(), crash)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    results = [call(entry, argv).__dict__ for entry, argv in json.load(sys.stdin)]
    print(json.dumps(results), flush=True)
