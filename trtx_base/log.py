"""A TensorRT logger that keeps what the builder said, so errors can be reported in one clear message.

The class derives from the backend's ``ILogger``, so it is made on first use: importing this module (and
``trtx.net``, and the netdefs) does not import TensorRT.
"""

from __future__ import annotations

import sys
from functools import cache

from trtx_base import backend


@cache
def _logger_class() -> type:
    class _Logger(backend.trt.ILogger):  # type: ignore[misc, name-defined]
        """Collects messages; prints errors to stderr (``verbose`` prints everything)."""

        def __init__(self, verbose: bool = False, quiet: bool = False) -> None:
            super().__init__()
            self.verbose = verbose
            self.quiet = quiet
            self.messages: list[tuple[str, str]] = []

        def log(self, severity, msg: str) -> None:  # TensorRT's callback
            sev = getattr(severity, "name", str(severity))
            self.messages.append((sev, msg))
            if self.verbose or (not self.quiet and sev in ("ERROR", "INTERNAL_ERROR")):
                print(f"[TensorRT {sev}] {msg}", file=sys.stderr)

        def errors(self) -> list[str]:
            """The errors TensorRT reported, without the CUDA runtime errors its error path raises on a machine
            without a GPU (``cudaError 35: CUDA driver version is insufficient``) when a real error came first."""
            said = [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]
            real = [m for m in said if not _is_cuda_aftermath(m)]
            return real or said

        def clear(self) -> None:
            self.messages.clear()

    _Logger.__name__ = _Logger.__qualname__ = "Logger"
    return _Logger


def _is_cuda_aftermath(message: str) -> bool:
    return "catchCudaError" in message or "cudaError 35" in message


def Logger(verbose: bool = False, quiet: bool = False):  # noqa: N802 - used like the class it makes
    """A new collecting logger (an instance of the backend's ``ILogger``)."""
    return _logger_class()(verbose=verbose, quiet=quiet)
