"""Errors that sharpstack raises for user mistakes.

Every mistake a user can make (a missing file, wrong axes, NaNs in a stack, an output that
already exists) raises :class:`SharpstackError` (or a subclass) with a message that names the
problem and the fix. The CLI prints such messages without a traceback and exits with code 2.
"""

from __future__ import annotations

__all__ = ["SharpstackError", "InputError", "OutputExistsError", "PackageError"]


class SharpstackError(ValueError):
    """A problem with what the user asked for; the message says what and how to fix it."""


class InputError(SharpstackError):
    """An input file or array cannot be used (missing, unreadable, wrong axes, NaNs, ...)."""


class OutputExistsError(SharpstackError):
    """The output path exists and overwriting was not asked for."""


class PackageError(SharpstackError):
    """A bioimage.io model package is invalid or failed its own test."""
