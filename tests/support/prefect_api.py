"""The test session's Prefect API: one SQLite server, started like the demo's.

It does what ``prefect.testing.utilities.prefect_test_harness`` does (a server in a
subprocess on a fresh SQLite database, ``PREFECT_API_URL`` pointed at it, the log and event
workers drained before it stops), but the server runs through
:mod:`deployments.prefect_server`, so the tests meet the SQLite behaviour users get from
the demo: write transactions that wait for the lock instead of answering 503.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from lab.process import free_port, python_module, spawn, stop, wait_until


@contextmanager
def _process_wide() -> Iterator[None]:
    """Make the current settings the process-wide ones too (as Prefect's harness does), so
    that threads started from a context copied earlier also use the test server."""
    import prefect.context

    with prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
        yield


@contextmanager
def local_api(home: Path, timeout: float = 120) -> Iterator[str]:
    """Run a Prefect server on ``home/prefect.db`` and point this process at it; yield its
    API URL."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_UI_ENABLED="0",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # what Prefect's own test server sets: an ephemeral, final app
        PREFECT__SERVER_EPHEMERAL="1",
        PREFECT__SERVER_FINAL="1",
    )
    log = home / "server.log"
    argv = python_module(
        "uvicorn",
        "--factory",
        "deployments.prefect_server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--lifespan",
        "on",
    )
    pid = spawn(argv, log, cwd=Path(__file__).resolve().parents[2], env=env)
    try:
        wait_until(
            lambda: requests.get(url + "/health", timeout=5).ok,
            timeout=timeout,
            what="the tests' Prefect server",
            pid=pid,
            log=log,
        )
        with temporary_settings({PREFECT_API_URL: url}), _process_wide():
            try:
                yield url
            finally:

                async def drain() -> None:
                    try:
                        result = APILogWorker.instance().drain()
                        if inspect.isawaitable(result):
                            await result
                    except RuntimeError:  # never started
                        pass
                    result = EventsWorker.drain_all()
                    if inspect.isawaitable(result):
                        await result

                run_coro_as_sync(drain())
    finally:
        stop(pid, timeout=10)
