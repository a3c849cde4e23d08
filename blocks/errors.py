"""Typed errors every array driver raises, whatever its vendor.

Tasks retry only :class:`ArrayTransientError`; everything else fails fast with a message
that says what to fix.
"""

from __future__ import annotations


class ArrayError(Exception):
    """An array refused or failed a call. ``status``/``code`` carry the vendor's details."""

    def __init__(
        self, message: str, *, array: str = "", status: int | None = None, code: str | None = None
    ):
        self.array = array
        self.status = status
        self.code = code
        prefix = f"{array}: " if array else ""
        super().__init__(prefix + message)


class ArrayNotFound(ArrayError):
    """The object does not exist on the array."""


class ArrayConflict(ArrayError):
    """The object exists, is in use, or the call conflicts with the array's state."""


class ArrayAuthError(ArrayError):
    """The array rejected the credentials or the session (check the block's user/password)."""


class ArrayTransientError(ArrayError):
    """A failure worth retrying: HTTP 408/429/502/503/504, a dropped connection, a busy array."""


class ArrayUnsupported(ArrayError):
    """The array cannot do what was asked (a protocol it does not serve, for example)."""


class NotOurs(ArrayError):
    """Refused: the object does not carry snaprestore's tag, so it is not ours to delete."""


def brief(exc: BaseException) -> str:
    """One line about ``exc``: a vSphere fault's message rather than its whole repr."""
    msg = getattr(exc, "msg", None)
    if msg:
        return f"{type(exc).__name__.rsplit('.', 1)[-1]}: {msg}"
    return str(exc) or type(exc).__name__
