"""The one exception a malformed weight file raises."""

from __future__ import annotations

import os

from trtx_base.errors import UserError


class WtsFormatError(UserError, ValueError):
    """A weight file is malformed; the message names the file, the 1-based line and the tensor."""

    def __init__(self, path: str | os.PathLike | None, line: int | None, tensor: str | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.tensor = tensor
        self.problem = problem
        where = [self.path or "<weights>"]
        if line is not None:
            where.append(f"line {line}")
        if tensor is not None:
            where.append(f"tensor {tensor!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


class WtsWriteError(UserError, ValueError):
    """A mapping that cannot be written as weights (a name with whitespace, values that are not numbers)."""
