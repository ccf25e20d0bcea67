"""The one exception type for a user's mistake: the console scripts print its message on one line and exit 2."""

from __future__ import annotations

__all__ = ["UserError", "ConfigError"]


class UserError(ValueError):
    """A mistake the user can fix: a missing file, a bad value, an incompatible checkpoint.

    The message names the thing and the fix, in one line.
    """


class ConfigError(UserError):
    """A model or datamodule argument that is invalid; raised at construction, never deep inside ``forward``."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
