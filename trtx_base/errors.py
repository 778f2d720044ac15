"""The one base class of errors a user can cause and fix (bad flag, bad file, wrong weights, unsupported layer).

Every command line catches :class:`UserError` and prints its message as one line with exit status 2; any
other exception is a bug in trtx and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message is the whole story for the user: it names the file, flag, tensor or layer."""
