"""The one base class of errors a user can cause and fix (bad flag, bad file, wrong weights, unsupported layer).

Every command line catches :class:`UserError` and prints its message as one line with exit status 2; any
other exception is a bug in trtx and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message is the whole story for the user: it names the file, flag, tensor or layer."""


class FileAccessError(UserError, OSError):
    """A file of the user's cannot be read or written (missing, a directory, permission denied, disk full)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
