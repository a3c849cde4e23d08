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
    """One line about ``exc``: a vSphere fault's type and message (never pyVmomi's multi-line
    dump of the fault object), or the exception's own text with its line breaks folded."""
    name = type(exc).__name__.rsplit(".", 1)[-1]
    text = _fault_text(exc)
    if text is None:
        text = str(exc)
        if text.lstrip().startswith("(vim.") or text.lstrip().startswith("(vmodl."):
            text = ""  # a fault object without a message: its dump says nothing more
    text = " ".join(text.split())
    if not text:
        return name
    if getattr(exc, "msg", None) is not None or _is_fault(exc):
        return f"{name}: {text}"
    return text


def _is_fault(exc: BaseException) -> bool:
    return any(c.__name__ == "vmodl.MethodFault" for c in type(exc).__mro__)


def _fault_text(exc: BaseException) -> str | None:
    """The human part of a vSphere fault (its msg, else its fault messages), or None."""
    if not _is_fault(exc):
        return None
    parts: list[str] = []
    msg = getattr(exc, "msg", None)
    if msg:
        parts.append(str(msg))
    for m in getattr(exc, "faultMessage", None) or []:
        text = getattr(m, "message", None)
        if text and text not in " ".join(parts):
            parts.append(str(text))
    extra = getattr(exc, "text", None)  # PlatformConfigFault
    if isinstance(extra, str) and extra and extra not in " ".join(parts):
        parts.append(extra)
    return "; ".join(parts)
