"""A local Prefect server process (the demo's and the tests'): start, wait, stop.

The server runs through :mod:`deployments.prefect_server`, so that on SQLite its write
transactions take the write lock up front instead of answering 503 under load.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from lab.process import free_port, python_module, spawn, stop, wait_until


@dataclass
class LocalServer:
    """A running ``prefect server start``."""

    pid: int
    port: int
    home: Path
    log: Path

    @property
    def api_url(self) -> str:
        """The API URL clients use (``PREFECT_API_URL``)."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """The UI's address."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the server."""
        stop(self.pid, timeout=10)


def server_env(home: Path, database_url: str | None = None) -> dict[str, str]:
    """Return the environment of a local server process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="true",
    )
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    return env


def start_server(
    home: Path, port: int | None = None, database_url: str | None = None, timeout: float = 180
) -> LocalServer:
    """Start a Prefect server on 127.0.0.1 (SQLite in ``home`` unless ``database_url``);
    return once it answers. Its log is ``home/server.log``."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = home / "server.log"
    pid = spawn(
        python_module(
            "deployments.prefect_server",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ),
        log,
        env=server_env(home, database_url),
    )
    server = LocalServer(pid, port, home, log)
    try:
        wait_until(
            lambda: requests.get(server.api_url + "/health", timeout=5).ok,
            timeout=timeout,
            what="Prefect server",
            pid=pid,
            log=log,
        )
    except BaseException:
        server.stop()
        raise
    return server


def api_request(method: str, url: str, **kwargs: Any) -> requests.Response:
    """Call the Prefect REST API, retrying 429/503 as Prefect's own client does (a busy
    SQLite server answers them); return the last response."""
    for attempt in range(8):
        r = requests.request(method, url, timeout=30, **kwargs)
        if r.status_code not in (429, 503):
            return r
        time.sleep(min(2**attempt * 0.25, 5))
    return r
