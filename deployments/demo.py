"""The demo: the lab, a Prefect server, the deployments served, a restore triggered by API.

``python -m deployments demo [--dir .lab] [--stop-at-end]`` starts what is not running,
restores the VMs of one datastore from its latest snapshot through the REST API, prints
a report and the UI's address, and leaves everything running (``--down`` stops it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from deployments.server import LocalServer, api_request, start_server
from lab import control
from lab.process import alive, python_module, spawn, stop, wait_until

REPO = Path(__file__).resolve().parent.parent
DEMO_DATASTORE = "ds-iscsi-01"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def _state_file(directory: Path) -> Path:
    return directory / "demo.json"


def _client_env(api_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        # the lab's nightly drill: its schedule is active with this selection
        "SNAPRESTORE_DRILL_DATASTORES": os.environ.get(
            "SNAPRESTORE_DRILL_DATASTORES", '["ds-fc-01", "ds-nfs-01"]'
        ),
    }


def _say(text: str) -> None:
    print(text, flush=True)


def demo(directory: Path, stop_at_end: bool = False) -> int:
    """Run the demo; return 0 when the restore completed and left nothing behind."""
    directory = directory.resolve()
    started: list[str] = []
    state = (
        json.loads(_state_file(directory).read_text()) if _state_file(directory).exists() else {}
    )
    try:
        info = _lab(directory, started)
        server = _server(directory, state, started)
        api = server.api_url
        env = _client_env(api)
        _say("saving the lab's vCenter and arrays as Prefect blocks")
        r = _run([sys.executable, "-m", "lab", "blocks", "--dir", str(directory)], env)
        if r != 0:
            raise RuntimeError("saving the blocks failed (see above)")
        serve_pid = state.get("serve_pid")
        if not serve_pid or not alive(serve_pid):
            _say("serving the deployments (python -m deployments serve)")
            serve_pid = spawn(
                python_module("deployments", "serve"),
                directory / "logs" / "serve.log",
                cwd=REPO,
                env=env,
            )
            started.append("serve")
        state = {"server_pid": server.pid, "port": server.port, "serve_pid": serve_pid}
        _state_file(directory).write_text(json.dumps(state))
        deployment = _wait_for_deployment(
            api, "restore-from-snapshot/default", serve_pid, directory
        )
        ok = _restore(api, server, deployment, info)
    except BaseException:
        if stop_at_end or started:
            demo_down(directory)
        raise
    if stop_at_end:
        demo_down(directory)
    else:
        _say(f"\nPrefect UI: {server.ui_url}")
        _say("The lab, the Prefect server and the deployments keep running. Stop them with:")
        _say("  ./run demo --down      (or: .venv/bin/python -m deployments demo --down)")
    return 0 if ok else 1


def _lab(directory: Path, started: list[str]) -> dict[str, Any]:
    if control.running_pids(directory) and (directory / "lab.json").exists():
        _say(f"the lab is running in {directory}")
        return control.load(directory)
    _say(f"starting the lab in {directory}")
    info = control.up(directory)
    started.append("lab")
    return info


def _server(directory: Path, state: dict[str, Any], started: list[str]) -> LocalServer:
    pid, port = state.get("server_pid"), state.get("port")
    home = directory / "prefect"
    if pid and port and alive(pid):
        server = LocalServer(pid, port, home, home / "server.log")
        _say(f"the Prefect server is running at {server.ui_url}")
        return server
    _say("starting a Prefect server (SQLite; the first start creates its database)")
    port = 4200 if _port_free(4200) else None
    server = start_server(home, port=port)
    started.append("server")
    _say(f"Prefect server ready at {server.ui_url}")
    return server


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _run(argv: list[str], env: dict[str, str]) -> int:
    import subprocess

    return subprocess.run(argv, cwd=REPO, env=env).returncode


def _wait_for_deployment(api: str, name: str, serve_pid: int, directory: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def ready() -> bool:
        r = api_request("GET", f"{api}/deployments/name/{name}")
        if r.ok:
            found.update(r.json())
        return r.ok

    wait_until(
        ready, 120, f"deployment {name}", pid=serve_pid, log=directory / "logs" / "serve.log"
    )
    return found


def _restore(
    api: str, server: LocalServer, deployment: dict[str, Any], info: dict[str, Any]
) -> bool:
    ds = next(d for d in info["datastores"] if d["name"] == DEMO_DATASTORE)
    params = {"vms": ds["vms"], "snapshot": "latest"}
    _say(
        f"\ntriggering restore-from-snapshot/default through the REST API: "
        f"{', '.join(ds['vms'])} from the latest snapshot of {ds['name']}"
    )
    r = api_request(
        "POST",
        f"{api}/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": params, "tags": ["demo", "api-triggered"]},
    )
    r.raise_for_status()
    run = r.json()
    _say(f"flow run {run['name']} ({run['id']}) scheduled; waiting for it")
    start = time.monotonic()
    while True:
        run = api_request("GET", f"{api}/flow_runs/{run['id']}").json()
        state = run["state"]["type"] if run.get("state") else "PENDING"
        if state in TERMINAL:
            break
        if time.monotonic() - start > 600:
            _say("the restore did not finish within 10 minutes")
            return False
        time.sleep(1)
    _report(api, server, run)
    return state == "COMPLETED"


def _artifacts(api: str, run_id: str) -> dict[str, Any]:
    r = api_request(
        "POST", f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    )
    r.raise_for_status()
    out = {}
    for a in r.json():
        data = a["data"]
        if isinstance(data, str) and a["type"] == "table":
            data = json.loads(data)
        out[a["key"]] = data
    return out


def _report(api: str, server: LocalServer, run: dict[str, Any]) -> None:
    arts = _artifacts(api, run["id"])
    took = run.get("total_run_time") or 0
    _say(f"\n=== restore {run['state']['type'].lower()} in {took:.1f}s: {run['state']['name']}")
    if run["state"]["type"] != "COMPLETED" and run["state"].get("message"):
        _say(run["state"]["message"])
    plan = arts.get("restore-plan", "")
    for line in plan.splitlines():
        if line.startswith("### "):
            _say("from " + line[4:])
    rows = arts.get("restore-vms") or []
    if rows:
        _say(f"{'VM':<10} {'restored as':<22} {'host':<8} {'state':<10} power-on after (s)")
        for row in rows:
            _say(
                f"{row['VM']:<10} {row['restored as']:<22} {row['host']:<8} "
                f"{row['state']:<10} {row['power-on after (s)']}"
            )
    effects = arts.get("restore-side-effects") or []
    undone = sum(1 for e in effects if e["undone"] in ("yes", "kept"))
    _say(f"cleaned up: {undone} of {len(effects)} side effects undone (or meant to stay):")
    for e in effects:
        _say(f"  [{e['undone']:>4}] {e['object']}")
    _say(f"run in the UI: {server.ui_url}/runs/flow-run/{run['id']}")


def demo_down(directory: Path) -> int:
    """Stop the demo's deployments, Prefect server and lab."""
    directory = directory.resolve()
    path = _state_file(directory)
    state = json.loads(path.read_text()) if path.exists() else {}
    for key in ("serve_pid", "server_pid"):
        if state.get(key):
            stop(state[key], timeout=15)
    path.unlink(missing_ok=True)
    stopped = control.down(directory)
    _say("stopped: deployments, Prefect server" + (", lab" if stopped else ""))
    return 0
