"""The benchmark's world: a lab, a Prefect server, and flows run in processes of their own.

:class:`Bench` starts nothing by itself; :func:`started` starts a lab and a (patched
SQLite) Prefect server in a temporary directory, saves the lab's blocks and the default
concurrency limits, and stops everything on exit.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.latencies import ARRAY_OPERATIONS
from deployments.server import api_request, start_server
from lab import control
from tests.support.concurrency import call_log, esx_host, last_seq
from tests.support.labs import lab_http

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    """What one flow run did and cost."""

    state: str
    message: str | None
    result: dict[str, Any]
    flow_run_id: str
    peak_rss_mb: float
    process_s: float
    calls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # part → its calls

    def vm_seconds(self, key: str = "seconds_to_verified") -> list[float]:
        """Each VM's seconds from the flow's start to ``key`` (verified by default)."""
        return [v[key] for v in self.result.get("vms", []) if v.get(key) is not None]

    def vcenter_methods(self) -> collections.Counter[str]:
        """SOAP calls of the run, by method."""
        return collections.Counter(c["method"] for c in self.calls.get("vcenter", []))

    def copies(self, info: dict[str, Any]) -> int:
        """Copies the arrays were asked to make (answered 2xx), from their call logs."""
        n = 0
        for a in info["arrays"]:
            ops = set(ARRAY_OPERATIONS[a["vendor"]]["copy"])
            n += sum(
                1
                for c in self.calls.get(a["name"], [])
                if c["operation"] in ops and str(c.get("status", "")).startswith("2")
            )
        return n

    def rescans_per_host(self) -> dict[str, dict[str, int]]:
        """Adapter rescans per host, before the first VM is registered ("attach") and
        after ("teardown")."""
        calls = self.calls.get("vcenter", [])
        first = min((c["start"] for c in calls if c["method"] == "RegisterVM_Task"), default=None)
        out: dict[str, dict[str, int]] = {}
        for c in calls:
            if c["method"] not in ("RescanHba", "RescanAllHba"):
                continue
            phase = "attach" if first is None or c["start"] < first else "teardown"
            per = out.setdefault(esx_host(c) or "?", {"attach": 0, "teardown": 0})
            per[phase] += 1
        return out


class Bench:
    """A running lab and Prefect server, and the means to run flows against them."""

    def __init__(self, info: dict[str, Any], api_url: str, home: Path) -> None:
        self.info = info
        self.api_url = api_url
        self.http: requests.Session = lab_http(info)
        self.home = home
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        self.count = 0

    def parts(self) -> dict[str, str]:
        """Lab part name → its ``lab_url``."""
        return {"vcenter": self.info["vcenter"]["lab_url"]} | {
            a["name"]: a["lab_url"] for a in self.info["arrays"]
        }

    def cli(self, *module_args: str) -> None:
        """Run ``python -m <module_args>`` against this bench's server; fail loudly."""
        r = subprocess.run(
            [sys.executable, "-m", *module_args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if r.returncode:
            raise RuntimeError(f"python -m {' '.join(module_args)}: {r.stderr[-2000:]}")

    def run(self, kind: str, params: dict[str, Any], env: dict[str, str] | None = None) -> Run:
        """Run a flow (see bench/flow_run.py) in a new process; return what it did and cost."""
        seqs = {p: last_seq(self.http, url) for p, url in self.parts().items()}
        self.count += 1
        log = self.home / f"flow-{self.count:03d}.log"
        start = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.flow_run", kind, json.dumps(params)],
                cwd=REPO,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - start
        text = log.read_text()
        line = next((s for s in text.splitlines() if s.startswith("BENCH-RESULT ")), None)
        if line is None:
            raise RuntimeError(f"the {kind} flow process printed no result; see {log}")
        got = json.loads(line.removeprefix("BENCH-RESULT "))
        calls = {p: call_log(self.http, url, seqs[p]) for p, url in self.parts().items()}
        return Run(
            state=got["state"],
            message=got["message"],
            result=got["result"] if isinstance(got["result"], dict) else {},
            flow_run_id=got["flow_run_id"],
            peak_rss_mb=round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
            process_s=round(elapsed, 2),
            calls=calls,
        )

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        """The task runs of a flow run, from the Prefect API."""
        body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200}
        out: list[dict[str, Any]] = []
        while True:
            r = api_request("POST", f"{self.api_url}/task_runs/filter", json=body)
            r.raise_for_status()
            page = r.json()
            out += page
            if len(page) < 200:
                return out
            body["offset"] = len(out)


@contextmanager
def started(directory: Path, scale_vms: int) -> Iterator[Bench]:
    """Start a lab (with ``scale_vms`` VMs on ds-scale-01) and a Prefect server under
    ``directory``; yield the bench; stop both on exit."""
    info = control.up(directory / "lab", scale_vms=scale_vms)
    try:
        server = start_server(directory / "prefect")
        try:
            bench = Bench(info, server.api_url, directory / "home")
            bench.home.mkdir(parents=True, exist_ok=True)
            bench.cli("lab", "blocks", "--dir", info["dir"])
            bench.cli("deployments", "limits")
            yield bench
        finally:
            server.stop()
    finally:
        control.down(directory / "lab")
