"""A TensorRT logger that keeps what the builder said, so errors can be reported in one clear message."""

from __future__ import annotations

import sys

from trtx import backend


def _logger_base():
    return backend.trt.ILogger


class Logger(_logger_base()):  # type: ignore[misc]
    """Collects messages; prints warnings and errors to stderr (``verbose`` prints everything)."""

    def __init__(self, verbose: bool = False, quiet: bool = False) -> None:
        super().__init__()
        self.verbose = verbose
        self.quiet = quiet
        self.messages: list[tuple[str, str]] = []

    def log(self, severity, msg: str) -> None:  # noqa: D401 - TensorRT's callback
        sev = getattr(severity, "name", str(severity))
        self.messages.append((sev, msg))
        if self.verbose or (not self.quiet and sev in ("ERROR", "INTERNAL_ERROR")):
            print(f"[TensorRT {sev}] {msg}", file=sys.stderr)

    def errors(self) -> list[str]:
        return [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]

    def clear(self) -> None:
        self.messages.clear()
