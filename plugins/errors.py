"""The error a plugin raises when it is used wrongly."""

from __future__ import annotations

from trtx_base.errors import UserError


class PluginError(UserError, ValueError):
    """A plugin used wrongly (bad field, dtype, shape, unknown plugin); the message names plugin and field."""
