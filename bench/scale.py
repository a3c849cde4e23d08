"""N VMs from one snapshot (ds-scale-01): wall time against the concurrency lower bound,
the slow steps counted from the lab's call logs, and the flow process's peak memory."""

from __future__ import annotations

from typing import Any

from bench import latencies
from bench.runner import Bench
from blocks.settings import settings


def measure(bench: Bench, sizes: list[int], single_s: float) -> list[dict[str, Any]]:
    """Restore the first N scale VMs for each N of ``sizes`` with the default limits;
    ``single_s`` is the single-VM iSCSI wall time the figures are compared with."""
    ds = next(d for d in bench.info["datastores"] if d["name"] == "ds-scale-01")
    s = settings()
    latencies.apply(bench.info, bench.http)
    out = []
    for n in sizes:
        if n > len(ds["vms"]):
            raise RuntimeError(f"ds-scale-01 holds {len(ds['vms'])} VMs, fewer than {n}")
        run = bench.run("restore", {"vms": ds["vms"][:n], "snapshot": ds["snapshots"][-1]})
        seconds = run.vm_seconds()
        if run.state != "COMPLETED" or len(seconds) != n:
            raise RuntimeError(f"restore of {n} scale VMs ended {run.state}: {run.message}")
        wall = max(seconds)
        bound = latencies.lower_bound_s("iscsi", n, s.max_parallel_vms, s.host_concurrency)
        methods = run.vcenter_methods()
        out.append(
            {
                "n": n,
                "wall_s": round(wall, 2),
                "lower_bound_s": round(bound, 2),
                "ratio_to_bound": round(wall / bound, 3),
                "ratio_to_single": round(wall / single_s, 3),
                "copies": run.copies(bench.info),
                "rescans_per_host": run.rescans_per_host(),
                "resignatures": methods["ResignatureUnresolvedVmfsVolume_Task"],
                "registrations": methods["RegisterVM_Task"],
                "power_ons": methods["PowerOnVM_Task"],
                "vcenter_calls": sum(methods.values()),
                "peak_rss_mb": run.peak_rss_mb,
                "process_s": run.process_s,
            }
        )
    return out
