"""How long an API-triggered restore takes, on a SQLite and on a PostgreSQL Prefect server.

``python -m bench.restore_timing [--runs 3]`` starts a lab, then for each backend a Prefect
server with the deployments served, triggers restores of the three VMs of ds-iscsi-01
(instant recovery, verify, tear down) through the REST API one after another, and writes
bench/results/restore_timing.json: per run, seconds from the API call to the end of the
run, from the flow's start to the VMs' power-on, and the flow's own run time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deployments.server import api_request, start_server
from lab import control
from lab.process import python_module, spawn, stop, wait_until

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


def _env(api: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }


def measure(info: dict[str, Any], tmp: Path, database_url: str | None, runs: int) -> list[dict]:
    """Serve the deployments on a fresh server and time ``runs`` restores."""
    server = start_server(tmp / "server", database_url=database_url)
    env = _env(server.api_url)
    serve = None
    try:
        subprocess.run(
            [sys.executable, "-m", "lab", "blocks", "--dir", info["dir"]],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        serve = spawn(python_module("deployments", "serve"), tmp / "serve.log", cwd=REPO, env=env)
        api = server.api_url
        name = "restore-from-snapshot/default"
        wait_until(
            lambda: api_request("GET", f"{api}/deployments/name/{name}").ok, 120, "serve", pid=serve
        )
        dep = api_request("GET", f"{api}/deployments/name/{name}").json()
        ds = next(d for d in info["datastores"] if d["name"] == "ds-iscsi-01")
        out = []
        for _ in range(runs):
            start = time.monotonic()
            run = api_request(
                "POST",
                f"{api}/deployments/{dep['id']}/create_flow_run",
                json={"parameters": {"vms": ds["vms"]}},
            ).json()
            while True:
                run = api_request("GET", f"{api}/flow_runs/{run['id']}").json()
                if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                time.sleep(0.2)
            total = time.monotonic() - start
            arts = api_request(
                "POST",
                f"{api}/artifacts/filter",
                json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}},
            ).json()
            table = next((json.loads(a["data"]) for a in arts if a["key"] == "restore-vms"), [])
            power_on = [r["power-on after (s)"] for r in table if r["power-on after (s)"] != ""]
            out.append(
                {
                    "state": run["state"]["type"],
                    "api_to_end_s": round(total, 2),
                    "flow_run_time_s": round(run.get("total_run_time") or 0, 2),
                    "flow_start_to_power_on_s": max(power_on) if power_on else None,
                    **(
                        {}
                        if run["state"]["type"] == "COMPLETED"
                        else {"message": run["state"]["message"]}
                    ),
                }
            )
        return out
    finally:
        if serve:
            stop(serve, timeout=15)
        server.stop()


def main() -> None:
    """Measure on both backends and write the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    from tests.support.postgres import start_postgres

    figures: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}
    }
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        info = control.up(tmp / "lab")
        pg = start_postgres()
        try:
            pg.create_database("bench")
            backends = (("sqlite", None), ("postgresql", pg.url("bench")))
            for backend, url in [b for b in backends if b[0] in args.backends]:
                runs = measure(info, tmp / backend, url, args.runs)
                figures[backend] = {
                    "runs": runs,
                    "median_api_to_end_s": statistics.median(r["api_to_end_s"] for r in runs),
                    "median_flow_start_to_power_on_s": statistics.median(
                        r["flow_start_to_power_on_s"] or 0 for r in runs
                    ),
                }
        finally:
            pg.stop()
            control.down(tmp / "lab")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "restore_timing.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
