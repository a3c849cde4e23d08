"""Which failures are worth retrying, and the retry options every step task shares."""

from __future__ import annotations

import http.client
import ssl
from typing import Any

from prefect.cache_policies import NO_CACHE
from pyVmomi import vim, vmodl

from blocks.errors import ArrayError, ArrayTransientError
from blocks.settings import settings

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
