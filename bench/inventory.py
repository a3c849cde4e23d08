"""The vSphere calls of a janitor survey and of a catalog listing, against inventory size."""

from __future__ import annotations

from typing import Any

from bench import latencies
from bench.runner import Bench


def measure(bench: Bench) -> dict[str, Any]:
    """Count the SOAP calls of a dry-run janitor (it surveys, removes nothing) and of a
    catalog listing of ds-iscsi-01's snapshots, on this lab's inventory."""
    latencies.apply(bench.info, bench.http, scale=0)
    state = bench.http.get(bench.info["vcenter"]["lab_url"] + "/state", timeout=30).json()
    out: dict[str, Any] = {
        "vms": len(state["vms"]),
        "datastores": len(state["datastores"]),
        "hosts": len(state["hosts"]),
    }
    for key, kind, params in (
        ("janitor_survey", "janitor", {"dry_run": True}),
        ("catalog_listing", "catalog", {"datastore": "ds-iscsi-01"}),
    ):
        run = bench.run(kind, params)
        if run.state != "COMPLETED":
            raise RuntimeError(f"the {kind} run ended {run.state}: {run.message}")
        methods = run.vcenter_methods()
        out[key] = {"vcenter_calls": sum(methods.values()), "by_method": dict(methods)}
    return out
