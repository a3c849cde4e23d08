"""One VM, instant recovery, over iSCSI, FC and NFS: wall time against the critical path."""

from __future__ import annotations

import statistics
from typing import Any

from bench import latencies
from bench.runner import Bench, Run

CASES = {"iscsi": "ds-iscsi-01", "fc": "ds-fc-01", "nfs": "ds-nfs-01"}


def restore_one(bench: Bench, datastore: str) -> Run:
    """Restore the first VM of ``datastore`` from its newest snapshot (instant recovery,
    verified by VMware Tools, then torn down); fail loudly if the run did not complete."""
    ds = next(d for d in bench.info["datastores"] if d["name"] == datastore)
    run = bench.run("restore", {"vms": ds["vms"][:1], "snapshot": ds["snapshots"][-1]})
    if run.state != "COMPLETED" or not run.vm_seconds():
        raise RuntimeError(f"restore from {datastore} ended {run.state}: {run.message}")
    return run


def measure(bench: Bench, runs: int) -> dict[str, Any]:
    """Per protocol: the median wall time from the flow's start to the VM powered on with
    a Tools heartbeat, the critical path of the injected latencies, and their ratio."""
    latencies.apply(bench.info, bench.http)
    out: dict[str, Any] = {}
    for protocol, datastore in CASES.items():
        walls = [max(restore_one(bench, datastore).vm_seconds()) for _ in range(runs)]
        wall = statistics.median(walls)
        path = latencies.critical_path_s(protocol)
        out[protocol] = {
            "wall_s": round(wall, 2),
            "critical_path_s": path,
            "ratio": round(wall / path, 3),
            "runs_s": walls,
        }
    return out
