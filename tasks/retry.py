"""Which failures are worth retrying, the options every step task shares, and one-line errors.

:func:`step` makes a function a Prefect task the way every snaprestore step is one: named for
the UI, retried on transient failures only, and failing with one line that says what failed,
on which object, vCenter's message and what to do (:class:`StepError`) instead of pyVmomi's
multi-line dump of a fault.
"""

from __future__ import annotations

import functools
import http.client
import inspect
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from pyVmomi import vim, vmodl

from blocks.errors import ArrayError, ArrayTransientError, brief
from blocks.settings import settings

F = TypeVar("F", bound=Callable[..., Any])

TRANSIENT_VIM_FAULTS: tuple[type, ...] = (
    vmodl.fault.HostCommunication,  # HostNotConnected, HostNotReachable
    vim.fault.Timedout,
    vim.fault.TaskInProgress,
    vim.fault.ConcurrentAccess,
)


def is_transient(exc: BaseException) -> bool:
    """Return True for failures a retry can cure: busy arrays, dropped connections, timeouts.

    Bad input, missing objects, refused credentials and certificate failures are not.
    """
    if isinstance(exc, StepError):
        return exc.transient
    if isinstance(exc, ArrayTransientError):
        return True
    if isinstance(exc, ArrayError):
        return False
    if isinstance(exc, TRANSIENT_VIM_FAULTS):
        return True
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    return isinstance(exc, ConnectionError | TimeoutError | http.client.HTTPException)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry the task only if it failed transiently."""
    try:
        state.result()
    except BaseException as exc:  # the task's own exception, re-raised by result()
        return is_transient(exc)
    return False


def backoff(retries: int) -> list[float]:
    """Delays before each retry: the configured first delay, doubling."""
    base = settings().retry_delay_s
    return [base * 2**i for i in range(retries)]


def step_options(name: str, *, retries: int | None = None) -> dict[str, Any]:
    """Task options for a restore step: run name, transient-only retries, no caching."""
    s = settings()
    return {
        "task_run_name": name,
        "cache_policy": NO_CACHE,
        "retries": s.retries if retries is None else retries,
        "retry_delay_seconds": backoff,
        "retry_jitter_factor": s.retry_jitter,
        "retry_condition_fn": retry_transient,
        "log_prints": True,
    }


class StepError(Exception):
    """A step failed; the message is one line: the step and its object, the fault and its
    message, and what to do. ``transient`` keeps the failure's retry classification."""

    def __init__(self, message: str, *, transient: bool = False, fault: str = ""):
        super().__init__(message)
        self.transient = transient
        self.fault = fault


# what to do about a fault, by type name (the first in the fault's class chain wins)
HINTS: dict[str, str] = {
    "PlatformConfigFault": "check the array's NFS export for this host's VMkernel address "
    "(read-write, root) and that the host reaches the NFS server",
    "NotAuthenticated": "check the vCenter block's user and password",
    "NoPermission": "give the vCenter account the privileges listed in the README",
    "InvalidLogin": "check the vCenter block's user and password",
    "DuplicateName": "an object of that name exists already: remove it or choose another "
    "name_suffix",
    "AlreadyExists": "it exists already: remove it, or run the janitor",
    "ResourceInUse": "something still uses it (see the message): stop or move it first",
    "FileNotFound": "check that the datastore is mounted on the host and holds the file",
    "InvalidDatastore": "check that the datastore is mounted and accessible on the host",
    "InvalidPowerState": "the VM is not in the power state this step needs",
    "ManagedObjectNotFound": "the object was removed meanwhile; check vCenter's inventory",
    "TaskInProgress": "another task runs on the object: wait for it, then retry",
    "HostCommunication": "vCenter cannot reach the host: check the host's connection",
    "Timedout": "vCenter timed out: check the host's and vCenter's load, then retry",
    "HostConfigFault": "the host refused the storage change: see its vmkernel log",
}
TRANSPORT_HINT = "vCenter could not be reached or dropped the connection: check that it is up"


def _hint(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        hint = HINTS.get(cls.__name__.rsplit(".", 1)[-1])
        if hint:
            return hint
    if isinstance(exc, ConnectionError | TimeoutError | http.client.HTTPException):
        return TRANSPORT_HINT
    return "see the task in vCenter's task list for details"


def is_transport(exc: BaseException) -> bool:
    """True for a failure of the connection itself (refused, reset, timed out, a broken
    HTTP reply), not of what was asked."""
    return isinstance(exc, ConnectionError | TimeoutError | http.client.HTTPException)


def _is_vsphere_fault(exc: BaseException) -> bool:
    return isinstance(exc, vmodl.MethodFault)


def _render(name: str, func: Callable[..., Any], args: tuple, kwargs: dict) -> str:
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
        return name.format(**bound.arguments)
    except Exception:  # a name that cannot be rendered still names the step
        return name


def one_line_errors(name: str) -> Callable[[F], F]:
    """Make ``func`` fail with a :class:`StepError` (one line: the step named ``name`` with
    its arguments, the fault and its message, what to do) when vCenter or the connection
    to it fails; snaprestore's own errors pass through unchanged."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except StepError:
                raise
            except ArrayError as exc:
                # the array's message names its HTTP call; say which step made it too. The
                # error keeps its type (callers and the retry rule tell errors apart by it),
                # and a step called inside another step is named once, the innermost.
                if not getattr(exc, "step_named", False):
                    exc.args = (f"{_render(name, func, args, kwargs)} failed: {exc}",)
                    exc.step_named = True  # type: ignore[attr-defined]
                raise
            except Exception as exc:
                if not (_is_vsphere_fault(exc) or is_transport(exc)):
                    raise
                what = _render(name, func, args, kwargs)
                raise StepError(
                    f"{what} failed: {brief(exc)} ({_hint(exc)})",
                    transient=is_transient(exc),
                    fault=type(exc).__name__.rsplit(".", 1)[-1],
                ) from exc

        return wrapped  # type: ignore[return-value]

    return decorate


def step(name: str, *, retries: int | None = None, **options: Any) -> Callable[[F], Any]:
    """Return the decorator that makes a function a snaprestore step task named ``name``
    (a template of its parameters): transient-only retries, no caching, one-line errors."""

    def decorate(func: F) -> Any:
        return task(**{**step_options(name, retries=retries), **options})(
            one_line_errors(name)(func)
        )

    return decorate
