"""The scale-out set-up: Prefect's server on PostgreSQL, the deployments on a work pool, a
process worker, and a restore triggered through the API."""

from __future__ import annotations

import subprocess
import sys

from lab.process import python_module, spawn, stop
from tests.deployments.conftest import REPO, Api, client_env, new_server, save_lab_blocks


def test_a_worker_on_a_work_pool_runs_an_api_triggered_restore(lab, postgres, tmp_path, world):
    server = new_server(postgres, tmp_path / "server")
    env = client_env(server.api_url)
    worker = None
    try:
        save_lab_blocks(lab, env)
        r = subprocess.run(
            [sys.executable, "-m", "deployments", "deploy", "--pool", "restore-pool"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("deployed ") == 4
        worker = spawn(
            python_module(
                "prefect", "worker", "start", "--pool", "restore-pool", "--type", "process"
            ),
            tmp_path / "worker.log",
            cwd=tmp_path,
            env=env,
        )
        api = Api(server.api_url)
        pool = api.get("/work_pools/restore-pool")
        assert pool["type"] == "process"
        dep = api.deployment("restore-from-snapshot/default")
        assert dep["work_pool_name"] == "restore-pool"
        before = world.snapshot()
        ds = next(d for d in lab["datastores"] if d["name"] == "ds-fc-01")
        run = api.create_run("restore-from-snapshot/default", {"vms": ds["vms"][:1]}).json()
        done = api.wait(run["id"], timeout=240)
        assert done["state"]["type"] == "COMPLETED", done["state"]
        assert "Nothing was left behind." in api.artifacts(run["id"])["restore-report"]
        after = world.snapshot()
        for key in ("arrays", "datastores", "vms", "devices"):
            assert after[key] == before[key], key
    finally:
        if worker:
            stop(worker, timeout=15)
        server.stop()
