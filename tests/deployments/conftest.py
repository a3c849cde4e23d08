"""A real Prefect server on PostgreSQL, the deployments served from it, and a REST client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from deployments.server import LocalServer, start_server
from lab.process import python_module, spawn, stop, wait_until
from tests.support.postgres import Postgres, start_postgres

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = (
    "restore-from-snapshot/default",
    "restore-drill/nightly",
    "janitor/hourly",
    "snapshot-catalog/default",
)
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster on loopback for the whole session."""
    pg = start_postgres()
    try:
        yield pg
    finally:
        pg.stop()


def new_server(postgres: Postgres, tmp: Path) -> LocalServer:
    """Start a Prefect server on a fresh PostgreSQL database."""
    db = f"prefect_{uuid.uuid4().hex[:8]}"
    postgres.create_database(db)
    return start_server(tmp, database_url=postgres.url(db))


def client_env(api_url: str) -> dict[str, str]:
    """Environment of processes that talk to ``api_url`` (quick polling for tests)."""
    return {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        "PREFECT_LOGGING_TO_API_ENABLED": "true",
    }


class Api:
    """The Prefect REST API, with plain HTTP."""

    def __init__(self, url: str):
        self.url = url
        self.http = requests.Session()
        self.http.trust_env = False

    def get(self, path: str) -> Any:
        r = self.http.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.http.post(self.url + path, json=body, timeout=30)

    def deployment(self, name: str) -> dict[str, Any]:
        return self.get(f"/deployments/name/{name}")

    def create_run(self, name: str, parameters: dict[str, Any], **extra: Any) -> requests.Response:
        dep = self.deployment(name)
        return self.post(
            f"/deployments/{dep['id']}/create_flow_run", {"parameters": parameters, **extra}
        )

    def run(self, run_id: str) -> dict[str, Any]:
        return self.get(f"/flow_runs/{run_id}")

    def wait(
        self, run_id: str, states: set[str] = TERMINAL, timeout: float = 180
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            state = run["state"]["type"] if run.get("state") else None
            if state in states:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {run_id} still {state}")
            time.sleep(0.3)

    def artifacts(self, run_id: str) -> dict[str, Any]:
        r = self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        r.raise_for_status()
        return {a["key"]: a["data"] for a in r.json()}


def save_lab_blocks(lab: dict[str, Any], env: dict[str, str]) -> None:
    """Save the lab's blocks into the server ``env`` points at."""
    r = subprocess.run(
        [sys.executable, "-m", "lab", "blocks", "--dir", lab["dir"]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def served(lab, postgres, tmp_path_factory) -> Iterator[tuple[Api, dict[str, str]]]:
    """A Prefect server on PostgreSQL with every deployment served by ``deployments serve``."""
    tmp = tmp_path_factory.mktemp("served")
    server = new_server(postgres, tmp / "server")
    env = client_env(server.api_url)
    pid = None
    try:
        save_lab_blocks(lab, env)
        log = tmp / "serve.log"
        pid = spawn(python_module("deployments", "serve"), log, cwd=REPO, env=env)
        api = Api(server.api_url)

        def all_served() -> bool:
            return all(
                api.http.get(f"{api.url}/deployments/name/{d}", timeout=5).ok for d in DEPLOYMENTS
            )

        wait_until(all_served, 120, "served deployments", pid=pid, log=log)
        env["SERVE_LOG"] = str(log)
        env["SERVE_PID"] = str(pid)
        yield api, env
    finally:
        if pid:
            stop(pid, timeout=15)
        server.stop()


def flow_run_pid(run_id: str, timeout: float = 60) -> int:
    """Return the pid of the process executing flow run ``run_id``."""
    needle = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if needle in (proc / "environ").read_bytes():
                    return int(proc.name)
            except OSError:
                continue
        time.sleep(0.2)
    raise TimeoutError(f"no process runs flow run {run_id}")
